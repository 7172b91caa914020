#!/usr/bin/env python3
"""How fast could any decode + tile pipeline built on libjpeg-turbo be, against OpenCV's?

Issue 2 asks vlmprep for >= 1.5x OpenCV's decode + tile rate per core. OpenCV decodes with
libjpeg-turbo, as Pillow and vlmprep's turbojpeg build do. This times, on one core, side by side
and interleaved over several rounds:
  decode only      cv2.imdecode (libjpeg-turbo, BGR out), the floor of every pipeline on it;
  decode + RGB     cv2.imdecode + cvtColor, OpenCV's pipeline before the resize;
  OpenCV rule X    the whole OpenCV pipeline of benches/compare_decode_tile.py for each rule;
and prints, per rule, 1.5x OpenCV's rate (the goal) next to the decode-only rate. Where the goal is
above decode alone, reaching it needs a JPEG decoder faster than libjpeg-turbo by that ratio, with
the resize and tiling free.

Usage: benches/decode_ceiling.py DIR [--rounds 3] [--repeat 5]
Needs: numpy, opencv-python-headless (and Pillow for compare_decode_tile's reference rules).
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare_decode_tile import opencv_one, time_python  # noqa: E402 (the table's pipeline and timer)


def decode_only(data, _mode):
    import cv2
    import numpy as np
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def decode_rgb(data, _mode):
    import cv2
    import numpy as np
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import cv2
    cv2.setNumThreads(1)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        sys.exit(f"{args.folder}: no JPEG files")
    blobs = [p.read_bytes() for p in files]
    cases = [("decode only", decode_only, None), ("decode + RGB", decode_rgb, None)]
    cases += [(f"OpenCV {m}", opencv_one, m) for m in ("internvl", "qwen2vl", "fixed")]
    runs = {name: [] for name, _, _ in cases}
    for _, fn, mode in cases:  # warm-up: the first pass of a process runs slower
        time_python(fn, blobs, mode, 1)
    for _ in range(args.rounds):
        for name, fn, mode in cases:
            runs[name].append(time_python(fn, blobs, mode, args.repeat))
    print(f"{len(blobs)} JPEGs from {args.folder}, one core, {args.rounds} rounds of {args.repeat}")
    print("| pipeline | images/s, median (min-max) |")
    print("|---|---:|")
    med = {}
    for name, rs in runs.items():
        rs = sorted(rs)
        med[name] = rs[len(rs) // 2]
        print(f"| {name} | {med[name]:.1f} ({rs[0]:.1f}-{rs[-1]:.1f}) |")
    print()
    print("| rule | goal: 1.5x OpenCV | decode only | goal / decode only |")
    print("|---|---:|---:|---:|")
    for m in ("internvl", "qwen2vl", "fixed"):
        goal = 1.5 * med[f"OpenCV {m}"]
        print(f"| {m} | {goal:.1f} | {med['decode only']:.1f} | {goal / med['decode only']:.2f}x |")


if __name__ == "__main__":
    main()
