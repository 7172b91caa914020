#!/usr/bin/env python3
"""Packing efficiency, balance and speed: vlmprep's packers against Python baselines, in one run.

Generates two sample mixes with a fixed numpy seed (100k samples each), writes them as
`tokens tiles` text files, runs `examples/pack_lengths.rs` (Bfd, Online B=256/1024/4096,
Ordered) and three Python baselines written for this comparison, and prints a markdown table.

    python benches/pack_baselines.py [--bin target/release/examples/pack_lengths] [--out DIR]
        [--lp GRID]

`--lp GRID` adds the configuration-LP lower bound of benches/pack_lp_bound.py (tokens rounded
down to multiples of GRID; needs scipy and `cargo build --release --example pack_lp_price`;
minutes per two-limit row).

Mixes (tokens = 256·tiles + 2·images + text tokens):
  mixed:  60% single-image, 15% multi-image (2-6 images), 25% text-only.
  single: single-image only.
Tiles per image follow InternVL's dynamic tiling at 448 px with the thumbnail: a grid of k
tiles (k = 1..12) gives 1 tile for k = 1 and k + 1 otherwise. Multi-image samples get at most
12 // n grid tiles per image (as InternVL divides max_dynamic_patch among images).

Baselines (all pure Python, all respect BOTH limits so that pack counts compare):
  trl_bfd:  TRL's pack_dataset(strategy="bfd") idea: sort by length descending, best fit over
            remaining token capacity with a segment tree indexed by capacity. TRL knows only
            tokens; here a bin is skipped when it has no room for the sample's tiles.
  ffd:      first-fit decreasing (sort by tokens descending, leftmost bin with room in both
            dimensions, via a segment tree over bins).
  internvl: a greedy in the spirit of InternVL's PackedDataset (as implemented here, not its
            code): a list of at most 20 open packs; a sample joins the fullest open pack where
            it fits (tokens <= L and tiles <= T, InternVL's max_packed_tokens and
            num_images_expected), else opens one; a pack that reaches either limit is emitted;
            when the list is over 20, its fullest pack is emitted.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

N = 100_000
LIMITS = [(8192, 16), (8192, 24), (16384, 32), (16384, 48), (8192, None)]
ALGOS = "bfd,online:256,online:1024,online:4096,ordered"

GRID = np.array([1, 2, 3, 4, 5, 6, 8, 9, 10, 12])
GRID_P = np.array([0.10, 0.10, 0.05, 0.10, 0.02, 0.25, 0.10, 0.08, 0.03, 0.17])


def tiles_for(k):
    return np.where(k == 1, 1, k + 1)


def make_mix(kind, rng):
    tokens = np.zeros(N, dtype=np.int64)
    tiles = np.zeros(N, dtype=np.int64)
    if kind == "single":
        kinds = np.zeros(N, dtype=np.int64)
    else:
        kinds = rng.choice(3, size=N, p=[0.60, 0.15, 0.25])  # single, multi, text-only
    single = kinds == 0
    ns = int(single.sum())
    t = tiles_for(rng.choice(GRID, size=ns, p=GRID_P))
    text = np.clip(rng.lognormal(5.5, 1.0, size=ns), 8, 6000).astype(np.int64)
    tiles[single] = t
    tokens[single] = 256 * t + 2 + text
    for i in np.flatnonzero(kinds == 1):
        n_img = int(rng.integers(2, 7))
        k = rng.integers(1, 12 // n_img + 1, size=n_img)
        t = int(tiles_for(k).sum())
        tiles[i] = t
        tokens[i] = 256 * t + 2 * n_img + int(np.clip(rng.lognormal(5.0, 1.0), 8, 4000))
    txt = kinds == 2
    tokens[txt] = np.clip(rng.lognormal(6.5, 1.0, size=int(txt.sum())), 16, 12000).astype(np.int64)
    return tokens, tiles


# ---- baselines --------------------------------------------------------------------------------


def trl_bfd(tok, til, L, T):
    """Best-fit decreasing on tokens (TRL-style capacity segment tree), skipping bins without
    tile room. Returns the number of packs."""
    order = sorted(range(len(tok)), key=lambda i: -tok[i])
    size = 1
    while size < L + 1:
        size *= 2
    # Node value: largest tile room of any bin whose token room falls in the node's range.
    tree = [-1] * (2 * size)
    leaves = [[] for _ in range(size)]  # per token room: [tile_room, bin] pairs
    rooms = []

    def refresh(cap):
        v = max((b[0] for b in leaves[cap]), default=-1)
        i = cap + size
        tree[i] = v
        i //= 2
        while i:
            tree[i] = max(tree[2 * i], tree[2 * i + 1])
            i //= 2

    def find(lo, need):
        i = lo + size
        while True:
            if tree[i] >= need:
                while i < size:
                    i *= 2
                    if tree[i] < need:
                        i += 1
                return i - size
            while i & 1:
                i >>= 1
            if i == 0:
                return None
            i += 1

    for i in order:
        t, g = tok[i], til[i]
        cap = find(t, g)
        if cap is None:
            rooms.append([L - t, T - g])
            b = len(rooms) - 1
        else:
            lst = leaves[cap]
            k = next(j for j, e in enumerate(lst) if e[0] >= g)
            b = lst.pop(k)[1]
            refresh(cap)
            rooms[b][0] -= t
            rooms[b][1] -= g
        r = rooms[b]
        leaves[r[0]].append([r[1], b])
        refresh(r[0])
    return len(rooms)


def ffd(tok, til, L, T):
    """First-fit decreasing over both limits: segment tree over bins holding (max token room,
    max tile room) per node; a descent with backtracking finds the leftmost bin fitting both."""
    n = len(tok)
    order = sorted(range(n), key=lambda i: -tok[i])
    size = 1
    while size < n:
        size *= 2
    mt = [L] * (2 * size)
    mg = [T] * (2 * size)
    used = 0

    def find(t, g, node=1):
        if mt[node] < t or mg[node] < g:
            return None
        if node >= size:
            return node - size
        r = find(t, g, 2 * node)
        return r if r is not None else find(t, g, 2 * node + 1)

    for i in order:
        b = find(tok[i], til[i])
        used = max(used, b + 1)
        j = b + size
        mt[j] -= tok[i]
        mg[j] -= til[i]
        j //= 2
        while j:
            mt[j] = max(mt[2 * j], mt[2 * j + 1])
            mg[j] = max(mg[2 * j], mg[2 * j + 1])
            j //= 2
    return used


def internvl_greedy(tok, til, L, T, max_buffers=20):
    """InternVL-PackedDataset-like greedy (see the module docs). Returns the number of packs."""
    open_packs = []  # [tokens, tiles]
    emitted = 0
    for t, g in zip(tok, til):
        best = None
        for j, p in enumerate(open_packs):
            if p[0] + t <= L and p[1] + g <= T and (best is None or p[0] > open_packs[best][0]):
                best = j
        if best is None:
            open_packs.append([t, g])
            best = len(open_packs) - 1
        else:
            open_packs[best][0] += t
            open_packs[best][1] += g
        p = open_packs[best]
        if p[0] >= L or p[1] >= T:
            open_packs.pop(best)
            emitted += 1
        elif len(open_packs) > max_buffers:
            j = max(range(len(open_packs)), key=lambda k: open_packs[k][0])
            open_packs.pop(j)
            emitted += 1
    return emitted + len(open_packs)


BASELINES = [("trl_bfd (py)", trl_bfd), ("ffd (py)", ffd), ("internvl greedy (py)", internvl_greedy)]


def l2_bound(sizes, cap):
    """Martello–Toth L2 bound for one dimension (sizes <= cap): for each threshold k <= cap/2,
    items over cap - k need a bin each, items over cap/2 too, and the items of size k..cap/2
    need whatever the room left in the second group's bins does not hold."""
    s = np.sort(np.asarray(sizes, dtype=np.int64))
    if len(s) == 0:
        return 0
    pre = np.concatenate([[0], np.cumsum(s)])
    n = len(s)
    half = cap // 2
    ks = np.unique(np.concatenate([[0], s[s <= half]]))
    i_half = np.searchsorted(s, half, side="right")       # s <= cap/2 below i_half
    i_k = np.searchsorted(s, ks, side="left")              # s >= k from i_k
    i_hi = np.searchsorted(s, cap - ks, side="right")      # s <= cap - k below i_hi
    n1 = n - i_hi
    n2 = i_hi - i_half
    sum2 = pre[i_hi] - pre[i_half]
    sum3 = pre[i_half] - pre[i_k]
    extra = np.maximum(0, -(-(sum3 - (n2 * cap - sum2)) // cap))
    return int((n1 + n2 + extra).max())


def main():
    ap = argparse.ArgumentParser()
    # VLMPREP_PACK_LENGTHS: the example binary when CARGO_TARGET_DIR is not ./target.
    ap.add_argument("--bin", default=os.environ.get("VLMPREP_PACK_LENGTHS",
                                                    "target/release/examples/pack_lengths"))
    ap.add_argument("--out", default="target/pack_mixes")
    ap.add_argument("--lp", type=int, default=0, metavar="GRID",
                    help="also compute the configuration-LP bound, tokens rounded to GRID")
    args = ap.parse_args()
    if args.lp:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from pack_lp_bound import lp_bound
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261122)
    limits_arg = ",".join(f"{l}x{t if t else '-'}" for l, t in LIMITS)
    rows = []
    strong = {}  # (mix, L, T) -> Martello–Toth L2 bound, max over the two dimensions
    lp = {}  # (mix, L, T) -> configuration-LP bound (with --lp)
    for mix in ["mixed", "single"]:
        tok, til = make_mix(mix, rng)
        path = os.path.join(args.out, f"{mix}.txt")
        np.savetxt(path, np.stack([tok, til], 1), fmt="%d")
        out = subprocess.run(
            [args.bin, path, "--limits", limits_arg, "--algos", ALGOS, "--world", "8"],
            check=True, capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            r = json.loads(line)
            r["mix"] = mix
            rows.append(r)
        for L, T in LIMITS:
            Tn = T if T else 2**32 - 1
            keep = (tok <= L) & (til <= Tn)
            kt, kg = tok[keep].tolist(), til[keep].tolist()
            bound = max(-(-sum(kt) // L), -(-sum(kg) // Tn))
            strong[(mix, L, T)] = max(bound, l2_bound(kt, L),
                                      l2_bound(kg, Tn) if T else 0)
            if args.lp and T:
                lp[(mix, L, T)] = lp_bound(tok[keep], til[keep], L, T, args.lp)
                print(f"{mix} {L}x{T}: LP bound {lp[(mix, L, T)]}", file=sys.stderr)
            for name, fn in BASELINES:
                t0 = time.perf_counter()
                packs = fn(kt, kg, L, Tn)
                dt = time.perf_counter() - t0
                rows.append({
                    "mix": mix, "limits": {"tokens": L, "tiles": T}, "algo": name, "packs": packs,
                    "lower_bound": bound, "ratio": packs / bound,
                    "oversize_packs": int((~keep).sum()), "samples_per_s": len(kt) / dt,
                })
            print(f"{mix} {L}x{T}: baselines done", file=sys.stderr)

    lp_head = (" LP bound | packs / LP |", "---:|---:|") if args.lp else ("", "")
    print("| mix | L × T | algo | packs | lower bound | packs / bound | token eff. | tile fill "
          "| spread W=8 emitted → balanced (mean / worst) | samples/s | L2 bound | packs / L2 |"
          + lp_head[0])
    print("|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|" + lp_head[1])
    for r in rows:
        lim = r["limits"]
        lt = f"{lim['tokens']} × {lim['tiles'] if lim['tiles'] else '∞'}"
        eff = f"{r['token_efficiency']:.3f}" if "token_efficiency" in r else ""
        fill = f"{r['tile_fill']:.3f}" if r.get("tile_fill") is not None else ""
        if "spread_emitted" in r:
            e, b = r["spread_emitted"], r["spread_balanced"]
            spread = f"{e['mean']:.3f} / {e['worst']:.2f} → {b['mean']:.4f} / {b['worst']:.3f}"
        else:
            spread = ""
        l2 = strong[(r["mix"], lim["tokens"], lim["tiles"])]
        print(f"| {r['mix']} | {lt} | {r['algo']} | {r['packs']} | {r['lower_bound']} | "
              f"{r['ratio']:.4f} | {eff} | {fill} | {spread} | {r['samples_per_s']:,.0f} | "
              f"{l2} | {r['packs'] / l2:.4f} |", end="")
        key = (r["mix"], lim["tokens"], lim["tiles"])
        if args.lp:
            b = max(lp.get(key, 0), l2)
            print(f" {b} | {r['packs'] / b:.4f} |" if key in lp else "  |  |", end="")
        print()
    over = {(r["mix"], r["limits"]["tokens"], r["limits"]["tiles"]): r["oversize_packs"] for r in rows}
    print()
    for (mix, l, t), n in over.items():
        if n:
            print(f"- {mix} {l} × {t if t else '∞'}: {n} oversize samples packed alone, "
                  "not counted in packs or bound")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
