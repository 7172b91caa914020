"""The semantic dedup tier (SemDeDup) in numpy: the same algorithm as src/curate/semantic, run on
the files `examples/semdedup_synthetic` wrote, timed per phase and checked against Rust.

Same algorithm: the same fit sample and initial centroids (splitmix64 from the same seed,
reimplemented below), the same Lloyd steps (argmax of dot products over tiles of rows, centroid =
normalized sum of members, empty clusters re-seeded with the worst-served rows, stop when no
assignment changes), assignment of all rows in the same tiles, and pairs within clusters in the
same row tiles as Rust's pair strips (`pair_tile` in rust.json; upper triangle of tile pairs),
GEMM candidates re-checked in f64.
numpy's matmul is OpenBLAS (multithreaded, AVX-512 here), what a numpy user gets.

The pairs phase runs on the Rust assignment so that both find pairs over identical clusters and
their pair lists can be compared exactly; the fit and assign phases are numpy's own, and their
agreement with Rust is reported.

    /work/venv/bin/python benches/semdedup_numpy.py /tmp/semdedup
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

try:  # imported here so the groups phase times the work, not the import
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
except ImportError:
    connected_components = None

MASK = (1 << 64) - 1
TILE_FLOATS = 1 << 21
PAIR_TILE = 512  # when rust.json does not say


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound):
        return (self.next_u64() * bound) >> 64


def sample_indices(n, count, seed):
    count = min(count, n)
    idx = np.arange(n, dtype=np.int64)
    rng = SplitMix64(seed)
    for i in range(count):
        j = i + rng.below(n - i)
        idx[i], idx[j] = idx[j], idx[i]
    return np.sort(idx[:count])


def vm_hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def nearest(x, cent):
    k = cent.shape[0]
    tile = min(max(TILE_FLOATS // k, 16), 1024)
    labels = np.empty(x.shape[0], dtype=np.uint32)
    best = np.empty(x.shape[0], dtype=np.float32)
    for s in range(0, x.shape[0], tile):
        sims = x[s : s + tile] @ cent.T
        lab = sims.argmax(axis=1)
        labels[s : s + tile] = lab
        best[s : s + tile] = sims[np.arange(sims.shape[0]), lab]
    return labels, best


def update(sample, k, labels, best):
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.zeros((k, sample.shape[1]), dtype=np.float32)
    nonempty = counts > 0
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(sample[order], starts[nonempty], axis=0)
    norms = np.sqrt((sums.astype(np.float64) ** 2).sum(axis=1))
    empty = norms <= 1e-12
    sums[~empty] /= norms[~empty, None].astype(np.float32)
    if empty.any():
        worst = np.lexsort((np.arange(len(best)), best))
        for c, row in zip(np.nonzero(empty)[0], worst):
            sums[c] = sample[row]
    return sums


def fit(emb, k, fit_sample, iterations, seed):
    n = emb.shape[0]
    if fit_sample == 0 or n <= fit_sample:
        sample = emb
    else:
        sample = emb[sample_indices(n, fit_sample, seed)]
    init = sample_indices(sample.shape[0], k, seed ^ 0xC3A5C85C97CB3127)
    cent = sample[init].copy()
    prev = None
    for _ in range(iterations):
        labels, best = nearest(sample, cent)
        if prev is not None and np.array_equal(prev, labels):
            break
        cent = update(sample, k, labels, best)
        prev = labels
    return cent


def pairs_within(emb, cluster, min_cos, pair_tile):
    dim = emb.shape[1]
    slack = np.float32(dim * np.finfo(np.float32).eps + 1e-6)
    thr = np.float32(min_cos)
    order = np.argsort(cluster, kind="stable")
    counts = np.bincount(cluster)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    out_i, out_j = [], []
    for c in range(len(counts)):
        rows = order[bounds[c] : bounds[c + 1]]
        if len(rows) < 2:
            continue
        tiles = [rows[s : s + pair_tile] for s in range(0, len(rows), pair_tile)]
        gathered = [emb[t] for t in tiles]
        for ti in range(len(tiles)):
            for tj in range(ti, len(tiles)):
                sims = gathered[ti] @ gathered[tj].T
                if ti == tj:
                    sims = np.triu(sims, 1)
                a, b = np.nonzero(sims >= thr - slack)
                out_i.append(tiles[ti][a])
                out_j.append(tiles[tj][b])
    ci = np.concatenate(out_i) if out_i else np.zeros(0, dtype=np.int64)
    cj = np.concatenate(out_j) if out_j else np.zeros(0, dtype=np.int64)
    # Exact re-check of the candidates in f64, in chunks to bound memory.
    cos = np.empty(len(ci), dtype=np.float32)
    for s in range(0, len(ci), 65536):
        a = emb[ci[s : s + 65536]].astype(np.float64)
        b = emb[cj[s : s + 65536]].astype(np.float64)
        cos[s : s + 65536] = np.einsum("ij,ij->i", a, b).astype(np.float32)
    keep = cos >= thr
    ci, cj, cos = ci[keep], cj[keep], cos[keep]
    lo, hi = np.minimum(ci, cj), np.maximum(ci, cj)
    o = np.lexsort((hi, lo))
    return lo[o], hi[o], cos[o]


def groups_and_kept(n, i, j, cos, eps_list):
    # Union-find over the pairs, the way a numpy user would do it: scipy's connected components
    # if present, else a Python loop.
    out = []
    for e in eps_list:
        m = cos >= np.float32(1 - e)
        if connected_components is not None:
            g = coo_matrix((np.ones(m.sum()), (i[m], j[m])), shape=(n, n))
            ncomp, _ = connected_components(g, directed=False)
        else:
            parent = np.arange(n)

            def find(x):
                while parent[x] != x:
                    parent[x] = parent[parent[x]]
                    x = parent[x]
                return x

            ncomp = n
            for a, b in zip(i[m], j[m]):
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[ra] = rb
                    ncomp -= 1
        out.append((e, ncomp / n))
    return out


def main():
    d = Path(sys.argv[1])
    meta = json.loads((d / "rust.json").read_text())
    emb = np.load(d / "emb.npy")
    n, dim = emb.shape
    k = meta["clusters"]
    min_cos = np.float32(1 - np.float32(meta["eps"]))
    hwm_data = vm_hwm_mib()

    # Wall and CPU time (all threads) per phase: on a shared machine the CPU time is firmer.
    t, c = time.perf_counter(), time.process_time()
    cent = fit(emb, k, meta["fit_sample"], meta["iterations"], meta["seed"])
    fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    labels, _ = nearest(emb, cent)
    assign_s, assign_cpu = time.perf_counter() - t, time.process_time() - c
    rust_cluster = np.load(d / "cluster.npy")
    t, c = time.perf_counter(), time.process_time()
    pi, pj, pc = pairs_within(emb, rust_cluster, min_cos, meta.get("pair_tile", PAIR_TILE))
    pairs_s, pairs_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    kept = groups_and_kept(n, pi, pj, pc, [0.001, 0.005, 0.01, 0.02, 0.05])
    groups_s, groups_cpu = time.perf_counter() - t, time.process_time() - c
    hwm = vm_hwm_mib()

    rust_cent = np.load(d / "centroids.npy")
    rij = np.load(d / "pairs_ij.npy").astype(np.int64)
    rcos = np.load(d / "pairs_cos.npy")
    same_pairs = len(rij) == len(pi) and np.array_equal(rij[:, 0], pi) and np.array_equal(rij[:, 1], pj)
    max_cos_diff = float(np.abs(rcos - pc).max()) if same_pairs and len(pc) else float("nan")
    planted = np.load(d / "planted.npy").astype(np.int64)
    found = set(zip(pi.tolist(), pj.tolist()))
    recall = sum((a, b) in found for a, b in planted.tolist()) / max(len(planted), 1)

    print(f"numpy: fit {fit_s:.2f} s | assign {assign_s:.2f} s | pairs {pairs_s:.2f} s | groups {groups_s:.3f} s")
    print(f"numpy: pairs {len(pi)}, recall {recall:.4f}, VmHWM {hwm:.0f} MiB (after loading {hwm_data:.0f} MiB)")
    print(f"numpy centroids vs Rust: max |diff| {np.abs(cent - rust_cent).max():.2e}; "
          f"assignment agreement {np.mean(labels == rust_cluster):.6f}")
    print(f"same pairs as Rust: {same_pairs} ({len(rij)} vs {len(pi)}), max |cos diff| {max_cos_diff:.2e}")
    for e, f in kept:
        print(f"numpy eps {e}: kept {f:.4f}")
    print()
    print("| phase | numpy (s) | Rust (s) | speedup |")
    print("|---|---:|---:|---:|")
    for name, npv, rv in [
        ("fit", fit_s, meta["fit_s"]),
        ("assign", assign_s, meta["assign_s"]),
        ("pairs", pairs_s, meta["pairs_s"]),
        ("groups + kept by eps", groups_s, meta["groups_s"]),
    ]:
        print(f"| {name} | {npv:.2f} | {rv:.2f} | {npv / rv:.2f}x |")
    tn = fit_s + assign_s + pairs_s + groups_s
    tr = meta["fit_s"] + meta["assign_s"] + meta["pairs_s"] + meta["groups_s"]
    print(f"| total | {tn:.2f} | {tr:.2f} | {tn / tr:.2f}x |")
    if "fit_cpu_s" in meta:
        print()
        print("| phase, CPU time (s) | numpy | Rust | ratio |")
        print("|---|---:|---:|---:|")
        rows = [
            ("fit", fit_cpu, meta["fit_cpu_s"]),
            ("assign", assign_cpu, meta["assign_cpu_s"]),
            ("pairs", pairs_cpu, meta["pairs_cpu_s"]),
            ("groups + kept by eps", groups_cpu, meta["groups_cpu_s"]),
        ]
        for name, npv, rv in rows:
            print(f"| {name} | {npv:.2f} | {rv:.2f} | {npv / max(rv, 1e-9):.2f}x |")
        cn, cr = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"| total | {cn:.2f} | {cr:.2f} | {cn / cr:.2f}x |")
    print(f"| peak RSS (VmHWM, MiB) | {hwm:.0f} | {meta['vm_hwm_mib']:.0f} | |")
    if not same_pairs:
        sys.exit("pair lists differ")


if __name__ == "__main__":
    main()
