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
       [--repeat N] [--vlmprep LABEL=BIN ...]
Needs: Pillow, numpy, opencv-python-headless. Prints one markdown table row per tool.
"""
import argparse
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests/fixtures/tiling"))
from make_golden import fixed_plan, internvl_plan, qwen2vl_plan  # noqa: E402 (the reference rules)


def plan(mode, w, h):
    """(resize_w, resize_h, cols, rows, thumbnail_side or None) with each rule's defaults."""
    if mode == "internvl":
        p = internvl_plan((448, 1, 12, True), w, h)
    elif mode == "qwen2vl":
        p = qwen2vl_plan((28, 56 * 56, 28 * 28 * 1280), w, h)
    else:
        p = fixed_plan(384, w, h)
    return p[0], p[1], p[2], p[3], p[6]


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
    ap.add_argument("--vlmprep", action="append", metavar="LABEL=BIN",
                    help="a vlmprep binary to time, as LABEL=PATH (repeatable); "
                         "default: vlmprep=target/release/vlmprep")
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
    }
    for entry in args.vlmprep or ["vlmprep=target/release/vlmprep"]:
        label, _, binary = entry.partition("=")
        rates[label] = time_vlmprep(binary, args.folder, args.mode, 1, args.repeat, [])
        rates[label + " --dct-scaling"] = time_vlmprep(binary, args.folder, args.mode, 1,
                                                       args.repeat, ["--dct-scaling"])
    print(f"{len(blobs)} images, {mp / len(blobs):.2f} MP average, mode {args.mode}, 1 thread each")
    print("| tool | images/s | vs Pillow | vs OpenCV |")
    print("|---|---:|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['Pillow']:.2f}x | {rate / rates['OpenCV']:.2f}x |")


if __name__ == "__main__":
    main()
