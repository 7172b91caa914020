"""Throughput of `vlmprep serve` + the Python client against a PyTorch DataLoader doing the same
work with Pillow (decode, InternVL dynamic tiling + thumbnail, normalize to float32 CHW, token
fields of the same packs), with the same number of worker processes as vlmprep has threads.

    python benches/sidecar_compare.py --vlmprep target/release/vlmprep --workers 2 \
        [--photos bench-data/wallpapers] [--repeat 3]

Builds a pool (tar shards) in a temporary folder: with --photos, real photographs (the files of
that folder in turn, each scaled so its longer side is 500-1600 px, JPEG quality 90); without,
generated photo-like patterns. Runs vlmprep serve on it (recording the packs it delivered),
then the DataLoader over the same packs, alternating --repeat times; reports the best run of
each. Both consumers only touch the arrays (read one element of each). Prints one JSON line.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from vlmprep_client import SidecarLoader  # noqa: E402

TILE = 448
MAX_TILES = 6
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def pattern(rng, i):
    w, h = int(rng.integers(500, 1600)), int(rng.integers(400, 1200))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        (xx / w * 255), (yy / h * 255),
        (np.sin(xx / (7 + i % 5)) * np.cos(yy / 9) * 100 + 128),
    ], -1)
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def photo(rng, photos, i):
    im = Image.open(photos[i % len(photos)]).convert("RGB")
    side = int(rng.integers(500, 1600))
    scale = side / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                     Image.LANCZOS)


def make_pool(dir, shards, per_shard, photos_dir=None, seed=0):
    rng = np.random.default_rng(seed)
    photos = sorted(os.path.join(photos_dir, f) for f in os.listdir(photos_dir)) \
        if photos_dir else None
    paths = []
    for s in range(shards):
        path = os.path.join(dir, f"pool-{s:06d}.tar")
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(per_shard):
                if photos:
                    im = photo(rng, photos, s * per_shard + i)
                else:
                    im = pattern(rng, i)
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=90)
                key = f"s{s}-{i:05d}"
                for name, data in ((f"{key}.jpg", buf.getvalue()),
                                   (f"{key}.txt", f"a picture number {i} of shard {s}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


# ---- the Pillow baseline: InternVL's dynamic_preprocess (github.com/OpenGVLab/InternVL) ----

def closest_ratio(aspect, ratios, w, h, size):
    best, best_diff = (1, 1), float("inf")
    for r in ratios:
        diff = abs(aspect - r[0] / r[1])
        if diff < best_diff:
            best, best_diff = r, diff
        elif diff == best_diff and w * h > 0.5 * size * size * r[0] * r[1]:
            best = r
    return best


def dynamic_tiles(im, size=TILE, max_num=MAX_TILES):
    w, h = im.size
    ratios = sorted({(i, j) for n in range(1, max_num + 1) for i in range(1, n + 1)
                     for j in range(1, n + 1) if 1 <= i * j <= max_num}, key=lambda r: r[0] * r[1])
    gx, gy = closest_ratio(w / h, ratios, w, h, size)
    resized = im.resize((size * gx, size * gy), Image.BICUBIC)
    tiles = [resized.crop(((k % gx) * size, (k // gx) * size, (k % gx + 1) * size, (k // gx + 1) * size))
             for k in range(gx * gy)]
    if len(tiles) != 1:
        tiles.append(im.resize((size, size), Image.BICUBIC))
    return tiles


class PackDataset:
    """One item per pack: the same samples vlmprep put in it."""

    def __init__(self, packs, shards):
        self.packs = packs
        self.shards = shards
        self.index = None

    def _open(self):
        self.index = {}
        self.tars = {}
        for path in self.shards:
            tar = tarfile.open(path)
            self.tars[path] = tar
            for m in tar.getmembers():
                self.index[(path, m.name)] = m

    def __len__(self):
        return len(self.packs)

    def __getitem__(self, i):
        if self.index is None:
            self._open()
        ids, labels, pos, cu, pixels = [], [], [], [0], []
        for shard, key in self.packs[i]:
            tar = self.tars[shard]
            jpg = tar.extractfile(self.index[(shard, key + ".jpg")]).read()
            text = tar.extractfile(self.index[(shard, key + ".txt")]).read()
            im = Image.open(io.BytesIO(jpg)).convert("RGB")
            tiles = dynamic_tiles(im)
            for t in tiles:
                a = (np.asarray(t, np.float32) / 255.0 - MEAN) / STD
                pixels.append(a.transpose(2, 0, 1))
            seq = [256] + [257] * (256 * len(tiles)) + [258] + list(text)
            ids.extend(seq)
            labels.extend([-100] * (len(seq) - len(text)) + list(text))
            pos.extend(range(len(seq)))
            cu.append(len(ids))
        return {
            "input_ids": np.asarray(ids, np.int32),
            "labels": np.asarray(labels, np.int32),
            "position_ids": np.asarray(pos, np.int32),
            "cu_seqlens": np.asarray(cu, np.int32),
            "pixel_values": np.stack(pixels),
        }


def touch(batch):
    s = 0.0
    for a in batch.values():
        s += float(a.reshape(-1)[0]) if a.size else 0.0
    return s


def run_vlmprep(args, shards, work):
    sock = os.path.join(work, "bench.sock")
    cmd = [args.vlmprep, "--threads", str(args.workers), "serve", "--input", *shards,
           "--out", os.path.join(work, "plan"), "--socket", sock, "--prefetch", str(args.prefetch),
           "--mode", "internvl", "--tile-size", str(TILE), "--max-tiles", str(MAX_TILES),
           "--tokens-per-pack", str(args.tokens_per_pack), "--dtype", "f32", "--device", "cpu"]
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loader = SidecarLoader(sock)
    packs, tiles, images = [], 0, 0
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter()
        touch(batch)
        tiles += batch["pixel_values"].shape[0]
        images += len(batch.meta["samples"])
        packs.append([(s["shard"], s["key"]) for s in batch.meta["samples"]])
    t1 = time.perf_counter()
    loader.close()
    server.wait()
    return packs, {"seconds": t1 - t0, "batches": len(packs), "images": images, "tiles": tiles}


def run_torch(args, packs, shards):
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    ds = PackDataset(packs, shards)
    t0 = time.perf_counter()
    dl = DataLoader(ds, batch_size=None, num_workers=args.workers, shuffle=False)
    n, images, tiles = 0, 0, 0
    for i, batch in enumerate(dl):
        touch({k: v.numpy() for k, v in batch.items()})
        n += 1
        images += len(packs[i])
        tiles += batch["pixel_values"].shape[0]
    t1 = time.perf_counter()
    return {"seconds": t1 - t0, "batches": n, "images": images, "tiles": tiles}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vlmprep", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--per-shard", type=int, default=96)
    ap.add_argument("--tokens-per-pack", type=int, default=8192)
    ap.add_argument("--photos", help="folder of photos to build the pool from")
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs; best of each")
    args = ap.parse_args()
    vs, ts = [], []
    with tempfile.TemporaryDirectory() as work:
        shards = make_pool(work, args.shards, args.per_shard, args.photos)
        for _ in range(args.repeat):
            packs, v = run_vlmprep(args, shards, work)
            t = run_torch(args, packs, shards)
            assert v["images"] == t["images"] and v["tiles"] == t["tiles"], (v, t)
            vs.append(v)
            ts.append(t)
    v = min(vs, key=lambda r: r["seconds"])
    t = min(ts, key=lambda r: r["seconds"])
    v["all_seconds"] = [r["seconds"] for r in vs]
    t["all_seconds"] = [r["seconds"] for r in ts]
    out = {"workers": args.workers, "photos": args.photos, "loadavg_after":
           open("/proc/loadavg").read().split()[:3], "vlmprep": v, "torch_dataloader": t}
    for name, r in (("vlmprep", v), ("torch_dataloader", t)):
        r["batches_per_s"] = r["batches"] / r["seconds"]
        r["images_per_s"] = r["images"] / r["seconds"]
    out["speedup"] = t["seconds"] / v["seconds"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
