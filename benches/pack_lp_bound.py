#!/usr/bin/env python3
"""A lower bound on the packs any packer needs under two limits (tokens L, tiles T): the
configuration LP, solved by column generation.

The issue's bound max(Σtokens/L, Σtiles/T) assumes every pack can be filled to both limits at
once; with real mixes it cannot, and no packer can come within 0.5% of it. The LP counts that:
its columns are the possible contents of one pack, and it covers every sample at least once
with the fewest (fractional) packs. Any real plan is an integer solution of it, so the LP value
is a valid lower bound; so is Farley's bound, LP value / best column price, at every iteration
(used when the column generation is cut short).

To keep the pricing small, tokens are rounded DOWN to multiples of `grid` (samples only get
smaller, so the bound stays valid, and gets weaker as the grid grows: too coarse a grid can
fall below the simple bound, which is then reported instead). Tiles stay exact. The pricing
(an unbounded 2-D knapsack over the dual prices) is `examples/pack_lp_price.rs`; the LP is
solved by HiGHS through scipy.

    cargo build --release --example pack_lp_price
    python benches/pack_lp_bound.py target/pack_mixes/mixed.txt --limits 8192x24 --grid 16

Needs numpy and scipy. One core: 8192 x 24 at grid 16 took 62 s here, 16384 x 48 several minutes.
"""

import argparse
import math
import os
import subprocess
import sys
import time

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csc_matrix

PRICER = os.environ.get("VLMPREP_LP_PRICE", "target/release/examples/pack_lp_price")


def _solve(cols, demand):
    rows, idx, vals = [], [], []
    for j, col in enumerate(cols):
        for i, m in col.items():
            rows.append(i)
            idx.append(j)
            vals.append(m)
    a = csc_matrix((vals, (rows, idx)), shape=(len(demand), len(cols)))
    r = linprog(np.ones(len(cols)), A_ub=-a, b_ub=-demand, bounds=(0, None), method="highs")
    if r.status != 0:
        raise RuntimeError(f"HiGHS: {r.message}")
    return r.fun, -r.ineqlin.marginals


def _price(pricer, c, t, w, tt, y, k):
    lines = [f"{c} {t} {len(w)} {k}"] + [f"{w[i]} {tt[i]} {y[i]:.12g}" for i in range(len(w))]
    out = subprocess.run([pricer], input="\n".join(lines), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    value = float(out[0].split()[1])
    cols = [{int(a): int(b) for a, b in (p.split(":") for p in line.split())}
            for line in out[1:] if line.strip()]
    return value, cols


def lp_bound(tokens, tiles, L, T, grid, pricer=PRICER, per_round=40, max_rounds=5000,
             log=None):
    """Lower bound on the packs for samples (tokens[i], tiles[i]), all within (L, T):
    max(simple bound, ceil(best Farley bound of the configuration LP))."""
    tokens, tiles = np.asarray(tokens, np.int64), np.asarray(tiles, np.int64)
    simple = max(-(-int(tokens.sum()) // L), -(-int(tiles.sum()) // T))
    cap = L // grid
    # Samples that round to nothing in both limits drop out (fewer samples: still a bound).
    some = (tokens >= grid) | (tiles > 0)
    key = (tokens[some] // grid) * (T + 1) + tiles[some]
    types, demand = np.unique(key, return_counts=True)
    w, tt = types // (T + 1), types % (T + 1)
    # Start: each type alone, as many as fit (at most its demand).
    cols = []
    for i in range(len(types)):
        m = min(cap // w[i] if w[i] else demand[i], T // tt[i] if tt[i] else demand[i], demand[i])
        cols.append({i: int(m)})
    best, t0 = 0.0, time.time()
    for rnd in range(max_rounds):
        z, y = _solve(cols, demand.astype(float))
        value, new = _price(pricer, cap, T, w, tt, y, per_round)
        best = max(best, z / max(1.0, value))
        if log:
            log(f"round {rnd}: LP {z:.1f}, best price {value:.4f}, bound {best:.1f}, "
                f"{len(cols)} columns, {time.time() - t0:.0f} s")
        if value <= 1 + 1e-7 or not new:
            break
        cols.extend(new)
    return max(simple, math.ceil(best - 1e-6))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mix", help="file of `tokens tiles` lines (pack_baselines.py writes them)")
    ap.add_argument("--limits", required=True, help="LxT, e.g. 8192x24")
    ap.add_argument("--grid", type=int, default=0,
                    help="token rounding (default L/512: 16 at L = 8192)")
    ap.add_argument("--pricer", default=PRICER)
    args = ap.parse_args()
    L, T = (int(x) for x in args.limits.split("x"))
    a = np.loadtxt(args.mix, dtype=np.int64, ndmin=2)
    keep = (a[:, 0] <= L) & (a[:, 1] <= T)
    grid = args.grid or max(1, L // 512)
    bound = lp_bound(a[keep, 0], a[keep, 1], L, T, grid, args.pricer,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    print(bound)


if __name__ == "__main__":
    main()
