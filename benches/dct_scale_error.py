#!/usr/bin/env python3
"""Error that reduced-scale (DCT-scaled) JPEG decoding adds to `--mode fixed` tiles.

Reference: Pillow's tile, Image.open(f).convert("RGB") (+ exif_transpose) at full size, then
Image.resize((384, 384), BICUBIC) — what a Python loader does. Each OUT folder is the output of
`vlmprep --threads 1 tile --input DIR --mode fixed --out OUT --dtype u8 [--dct-scaling]`; the
script prints, per folder, the mean absolute difference against Pillow over all images, the
worst image's mean, and the largest single-sample difference.

Usage: benches/dct_scale_error.py DIR OUT [OUT ...]
Needs: Pillow, numpy.
"""
import pathlib
import sys

import numpy as np
from PIL import Image, ImageOps


def pillow_tile(path, size=384):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im.convert("RGB"))
        return np.asarray(im.resize((size, size), Image.BICUBIC))


def main():
    src = pathlib.Path(sys.argv[1])
    outs = [pathlib.Path(p) for p in sys.argv[2:]]
    refs = {p.stem: pillow_tile(p) for p in sorted(src.iterdir()) if p.is_file()}
    print(f"{'output':<40} {'images':>6} {'MAD':>7} {'worst':>7} {'max':>4}")
    for out in outs:
        mads, maxes = [], []
        for key, ref in refs.items():
            tiles = np.load(out / f"{key}.npy")
            got = tiles[0] if tiles.ndim == 4 else tiles
            d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
            mads.append(d.mean())
            maxes.append(int(d.max()))
        print(f"{str(out):<40} {len(mads):>6} {np.mean(mads):>7.3f} {max(mads):>7.3f} "
              f"{max(maxes):>4}")


if __name__ == "__main__":
    main()
