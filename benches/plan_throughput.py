#!/usr/bin/env python3
"""Whole-`plan` throughput: vlmprep against the same work in Python, on one pool, one run.

The pool (made by `make`): WebDataset shards of img2dataset-like samples, each a JPEG (200
distinct images re-encoded at random sizes and aspect ratios from the photos under --photos,
default bench-data/web as scripts/fetch-photos.sh makes it, reused across samples: probing
reads headers only), a .txt caption of lognormal length and a .json.

The Python baseline does what a user would write: tarfile to read the shards, Pillow's lazy
Image.open for size and EXIF orientation (no decode), InternVL's tile rule (the reference in
tests/fixtures/tiling/make_golden.py), the `tokenizers` library for the caption, and a plain
BFD over both limits (benches/pack_baselines.py). Same tokenizer (the demo tokenizer.json),
same limits. vlmprep runs `vlmprep plan` (headers + tokenization + BFD + plan.parquet).

    python benches/plan_throughput.py make --samples 100000
    python benches/plan_throughput.py run --vlmprep target/release/vlmprep
"""

import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/fixtures/tiling"))
sys.path.insert(0, str(ROOT / "benches"))
POOL = ROOT / "bench-data/plan-pool"
TOKENIZER = ROOT / "src/model/demo_tokenizer.json"
WORDS = (
    "a photo of the red blue small large old new cat dog house tree car street city beach "
    "mountain river sky people man woman child at night in winter on a table with flowers "
    "view from above close-up portrait landscape painting drawing sign text logo food plate"
).split()
L, T = 8192, 24


def make(samples, per_shard, seed, photo_dir):
    from PIL import Image

    rng = random.Random(seed)
    photos = sorted(Path(photo_dir).glob("*.jpg"))
    if not photos:
        sys.exit(f"no .jpg under {photo_dir}: run scripts/fetch-photos.sh first")
    jpegs = []
    for i in range(200):
        src = Image.open(photos[i % len(photos)]).convert("RGB")
        long_side = int(math.exp(rng.uniform(math.log(200), math.log(1600))))
        aspect = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
        w, h = (long_side, max(16, int(long_side / aspect))) if aspect >= 1 else (
            max(16, int(long_side * aspect)), long_side)
        buf = io.BytesIO()
        src.resize((w, h)).save(buf, "JPEG", quality=80)
        jpegs.append(buf.getvalue())
    POOL.mkdir(parents=True, exist_ok=True)
    for old in POOL.glob("*.tar"):
        old.unlink()
    shards = math.ceil(samples / per_shard)
    for s in range(shards):
        with tarfile.open(POOL / f"pool-{s:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for k in range(s * per_shard, min(samples, (s + 1) * per_shard)):
                key = f"{k:09d}"
                n_words = max(1, int(rng.lognormvariate(2.5, 0.7)))
                caption = " ".join(rng.choice(WORDS) for _ in range(n_words))
                meta = {"url": f"https://example.com/{key}.jpg", "caption": caption,
                        "key": key, "status": "success"}
                for ext, data in (("jpg", jpegs[rng.randrange(len(jpegs))]),
                                  ("txt", caption.encode()),
                                  ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    print(f"{samples} samples in {shards} shards under {POOL}")


def python_plan(shards):
    from PIL import Image
    from tokenizers import Tokenizer
    from make_golden import internvl_plan
    from pack_baselines import trl_bfd

    tok = Tokenizer.from_file(str(TOKENIZER))
    settings = (448, 1, 12, True)
    tokens, tiles = [], []
    for shard in shards:
        samples = {}
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
        for key, members in samples.items():
            img = Image.open(io.BytesIO(members["jpg"]))
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            plan = internvl_plan(settings, w, h)
            n_tiles = plan[2] * plan[3] + (1 if plan[6] else 0)
            text = len(tok.encode(members["txt"].decode(), add_special_tokens=False).ids)
            tokens.append(256 * n_tiles + 2 + text)
            tiles.append(n_tiles)
    packs = trl_bfd(tokens, tiles, L, T)
    return len(tokens), packs


def run(vlmprep, threads):
    shards = sorted(POOL.glob("*.tar"))
    if not shards:
        sys.exit("no pool: run `make` first")
    # Warm the page cache: both sides read from memory.
    for s in shards:
        s.read_bytes()
    out = Path("/tmp/vlmprep-plan-bench")
    cmd = [vlmprep, "--threads", str(threads), "plan", "--input", str(POOL / "*.tar"),
           "--tokenizer", str(TOKENIZER), "--tokens-per-pack", str(L),
           "--tiles-per-pack", str(T), "--out", str(out)]
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        best = wall if best is None else min(best, wall)
    summary = json.loads((out / "plan.json").read_text())["summary"]
    t0 = time.perf_counter()
    n, py_packs = python_plan(shards)
    py = time.perf_counter() - t0
    images = summary["images"]
    print(f"| pool | {images} images, {len(shards)} shards |")
    print(f"| vlmprep plan, {threads} threads (wall, best of 3) | {best:.2f} s, "
          f"{images / best:,.0f} images/s, {summary['packs']} packs |")
    print(f"| Python (tarfile + Pillow + tokenizers + BFD), 1 process | {py:.2f} s, "
          f"{n / py:,.0f} images/s, {py_packs} packs |")
    print(f"| ratio | {py / best:.1f}x ({py / best / threads:.1f}x per core) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--samples", type=int, default=100_000)
    m.add_argument("--per-shard", type=int, default=10_000)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--photos", default=str(ROOT / "bench-data/web"),
                   help="folder of source .jpg photos (scripts/fetch-photos.sh fills bench-data/web)")
    r = sub.add_parser("run")
    r.add_argument("--vlmprep", default=str(ROOT / "target/release/vlmprep"))
    r.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.samples, a.per_shard, a.seed, a.photos)
    else:
        run(a.vlmprep, a.threads)


if __name__ == "__main__":
    main()
