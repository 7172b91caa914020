"""`vlmprep curate` (no model: exact + perceptual tiers) against the Python a user would write
instead, side by side in one run on the same cores (BENCHMARKS.md, "Curation: whole pool").

Both read the same WebDataset shards and, per sample, hash the image bytes with xxh3-128, decode
the image (EXIF-transposed) and compute its DCT perceptual hash; then both find the exact and
perceptual (Hamming <= K) duplicate groups over the whole pool. Python: tarfile + xxhash +
Pillow + ImageHash (`imagehash.phash`, the same hash vlmprep computes bit for bit) in a
multiprocessing pool of one process per core, then exact groups with a dict and near pairs
with a numpy all-pairs popcount (exact, O(n^2); fine at this size). vlmprep additionally hashes
every image's mirror image and writes per-shard signal files, a parquet manifest and a
reference folder; the Python side writes nothing. The check: both find the same exact groups
and the same number of near pairs.

Usage: python benches/curate_compare.py VLMPREP_BIN PHOTO_DIR WORK_DIR [SAMPLES] [K]
  PHOTO_DIR: JPEGs (scripts/fetch-photos.sh puts real photos in bench-data/web and
  bench-data/wallpapers); they are cycled, each copy re-encoded at a seeded quality so most
  samples are distinct files, into shards of 256 samples under WORK_DIR/pool.
"""

import glob
import io
import os
import subprocess
import sys
import tarfile
import time
from multiprocessing import Pool

import imagehash
import numpy as np
import xxhash
from PIL import Image, ImageOps


def build_pool(photo_dir, work, samples):
    pool = os.path.join(work, "pool")
    os.makedirs(pool, exist_ok=True)
    photos = sorted(glob.glob(os.path.join(photo_dir, "*.jpg")))
    if not photos:
        sys.exit(f"no .jpg under {photo_dir}")
    rng = np.random.default_rng(0)
    shards, per_shard = [], 256
    for s in range(0, samples, per_shard):
        path = os.path.join(pool, f"pool-{s // per_shard:06d}.tar")
        shards.append(path)
        if os.path.exists(path):
            continue
        with tarfile.open(path, "w") as tar:
            for i in range(s, min(s + per_shard, samples)):
                src = photos[i % len(photos)]
                if i < len(photos) or i % 5 == 0:
                    data = open(src, "rb").read()  # byte copies: the exact tier's work
                else:
                    img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
                    buf = io.BytesIO()
                    img.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
                    data = buf.getvalue()
                for name, payload in ((f"{i:08d}.jpg", data), (f"{i:08d}.txt", b"a photo")):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return shards


def shard_signals(path):
    out = []
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.name.endswith(".jpg"):
                continue
            data = tar.extractfile(member).read()
            digest = xxhash.xxh3_128_hexdigest(data)
            img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
            out.append((member.name, digest, int(str(imagehash.phash(img)), 16)))
    return out


def python_curate(shards, k, procs):
    with Pool(procs) as pool:
        rows = [r for shard in pool.map(shard_signals, shards, chunksize=1) for r in shard]
    first, exact_dups = {}, 0
    for name, digest, _ in rows:
        if digest in first:
            exact_dups += 1
        else:
            first[digest] = name
    hashes = np.array([h for _, _, h in rows], dtype=np.uint64)
    near = 0
    for i in range(len(hashes) - 1):
        x = np.bitwise_xor(hashes[i + 1 :], hashes[i])
        bits = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        near += int((bits <= k).sum())
    return len(rows), exact_dups, near


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    vlmprep, photo_dir, work = sys.argv[1:4]
    samples = int(sys.argv[4]) if len(sys.argv) > 4 else 2048
    k = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    procs = len(os.sched_getaffinity(0))
    shards = build_pool(photo_dir, work, samples)
    print(f"{samples} samples in {len(shards)} shards, {procs} cores, k={k}")

    out = os.path.join(work, "vlmprep-out")
    subprocess.run(["rm", "-rf", out], check=True)
    t = time.perf_counter()
    subprocess.run(
        [vlmprep, "curate", "--input", *shards, "--out", out, "--phash-distance", str(k)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rust_s = time.perf_counter() - t
    import json

    summary = json.load(open(os.path.join(out, "summary.json")))

    t = time.perf_counter()
    n, exact_dups, near_pairs = python_curate(shards, k, procs)
    py_s = time.perf_counter() - t

    print(f"python (Pillow + ImageHash + xxhash, {procs} procs): {py_s:.2f} s, {n / py_s:.0f} samples/s")
    print(f"vlmprep curate:                       {rust_s:.2f} s, {samples / rust_s:.0f} samples/s")
    print(f"ratio: {py_s / rust_s:.2f}x")
    dropped = summary["dropped_by_reason"]
    print(
        f"exact duplicates: python {exact_dups}, vlmprep {dropped.get('exact-duplicate', 0)}; "
        f"near pairs (python, not flip-aware) {near_pairs}; "
        f"vlmprep perceptual drops {dropped.get('perceptual-duplicate', 0)}"
    )


if __name__ == "__main__":
    main()
