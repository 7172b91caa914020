#!/usr/bin/env python3
"""Decode + tile throughput: vlmprep against Pillow and OpenCV, side by side, same cores.

What each tool does per image (the work a VLM data loader does):
  Pillow  Image.open(bytes).convert("RGB"), then the tiling rule with Image.resize(BICUBIC) and
          crop, each tile materialized as a numpy array (what InternVL / transformers do);
  OpenCV  cv2.imdecode + cvtColor(BGR2RGB) + cv2.resize(INTER_CUBIC) + slicing into contiguous
          tiles (what img2dataset uses);
  vlmprep `vlmprep tile --no-write` over the same folder (decode, plan, resize, cut; tiles are
          made in memory and dropped, as above).
Files are read into memory before timing for Pillow/OpenCV; vlmprep maps them (page cache warm).

Usage: benches/compare_decode_tile.py DIR [--mode internvl|qwen2vl|fixed] [--threads 1]
       [--repeat N] [--vlmprep target/release/vlmprep]
Needs: Pillow, numpy, opencv-python-headless. Prints one markdown table row per tool.
"""
import argparse
import io
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time


def internvl_grid(w, h, size=448, lo=1, hi=12):
    ratios = sorted({(i, j) for n in range(lo, hi + 1) for i in range(1, n + 1)
                     for j in range(1, n + 1) if lo <= i * j <= hi}, key=lambda r: r[0] * r[1])
    aspect, best, best_diff = w / h, (1, 1), float("inf")
    for i, j in ratios:
        diff = abs(aspect - i / j)
        if diff < best_diff:
            best, best_diff = (i, j), diff
        elif diff == best_diff and w * h > 0.5 * size * size * i * j:
            best = (i, j)
    return best


def qwen_size(w, h, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280):
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return max(wb, factor), max(hb, factor)


def plan(mode, w, h):
    """(resize_w, resize_h, cols, rows, thumbnail_side or 0)."""
    if mode == "internvl":
        c, r = internvl_grid(w, h)
        return 448 * c, 448 * r, c, r, (448 if c * r > 1 else 0)
    if mode == "qwen2vl":
        rw, rh = qwen_size(w, h)
        return rw, rh, 1, 1, 0
    return 384, 384, 1, 1, 0


def pillow_one(data, mode):
    import numpy as np
    from PIL import Image
    im = Image.open(io.BytesIO(data)).convert("RGB")
    rw, rh, c, r, thumb = plan(mode, *im.size)
    big = im.resize((rw, rh), Image.BICUBIC)
    tw, th = rw // c, rh // r
    tiles = [np.asarray(big.crop((x * tw, y * th, (x + 1) * tw, (y + 1) * th)))
             for y in range(r) for x in range(c)]
    if thumb:
        tiles.append(np.asarray(im.resize((thumb, thumb), Image.BICUBIC)))
    return len(tiles)


def opencv_one(data, mode):
    import cv2
    import numpy as np
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    im = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = im.shape[:2]
    rw, rh, c, r, thumb = plan(mode, w, h)
    big = cv2.resize(im, (rw, rh), interpolation=cv2.INTER_CUBIC)
    tw, th = rw // c, rh // r
    tiles = [np.ascontiguousarray(big[y * th:(y + 1) * th, x * tw:(x + 1) * tw])
             for y in range(r) for x in range(c)]
    if thumb:
        tiles.append(cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_CUBIC))
    return len(tiles)


def time_python(fn, blobs, mode, repeat):
    start = time.perf_counter()
    for _ in range(repeat):
        for data in blobs:
            fn(data, mode)
    return len(blobs) * repeat / (time.perf_counter() - start)


def time_vlmprep(binary, folder, mode, threads, repeat, extra):
    best = 0.0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            cmd = [binary, "--threads", str(threads), "tile", "--input", str(folder),
                   "--mode", mode, "--out", out, "--no-write"] + extra
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            summary = json.loads(pathlib.Path(out, "summary.json").read_text())
            best = max(best, summary["images_per_second"])
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--mode", default="internvl", choices=["internvl", "qwen2vl", "fixed"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--vlmprep", default="target/release/vlmprep")
    args = ap.parse_args()
    if args.threads != 1:
        sys.exit("Pillow and OpenCV are timed on one core here; use --threads 1 for per-core ratios")
    import cv2
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    files = sorted(p for p in args.folder.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    blobs = [p.read_bytes() for p in files]
    mp = 0.0
    from PIL import Image
    for b in blobs:
        w, h = Image.open(io.BytesIO(b)).size
        mp += w * h / 1e6
    rates = {
        "Pillow": time_python(pillow_one, blobs, args.mode, args.repeat),
        "OpenCV": time_python(opencv_one, blobs, args.mode, args.repeat),
        "vlmprep": time_vlmprep(args.vlmprep, args.folder, args.mode, 1, args.repeat, []),
        "vlmprep --dct-scaling": time_vlmprep(args.vlmprep, args.folder, args.mode, 1, args.repeat,
                                              ["--dct-scaling"]),
    }
    print(f"{len(blobs)} images, {mp / len(blobs):.2f} MP average, mode {args.mode}, 1 thread each")
    print("| tool | images/s | vs Pillow | vs OpenCV |")
    print("|---|---:|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['Pillow']:.2f}x | {rate / rates['OpenCV']:.2f}x |")


if __name__ == "__main__":
    main()
