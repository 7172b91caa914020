"""Test consumer of `vlmprep serve` (driven by tests/sidecar.rs): one SidecarLoader per socket
(socket i is rank i), stepped in lock-step like data-parallel ranks; records what each step
delivered (sample keys, skipped samples, a SHA-256 of every array) as JSON.

--checkpoint-at K: after K steps write every rank's state_dict() (--state-out) and keep going
for --extra more steps, recorded apart ("after": work a crash would lose); --die then exits
without saying goodbye, holding its last batches, like a trainer that crashed.
"""

import argparse
import hashlib
import json
import os
import sys

from vlmprep_client import SidecarLoader, load_job_state, save_job_state


def digest(batch):
    h = hashlib.sha256()
    for name in sorted(batch):
        a = batch[name]
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", nargs="+", required=True)
    ap.add_argument("--load-state")
    ap.add_argument("--checkpoint-at", type=int)
    ap.add_argument("--state-out")
    ap.add_argument("--extra", type=int, default=0)
    ap.add_argument("--die", action="store_true")
    ap.add_argument("--record", required=True)
    args = ap.parse_args()

    loaders = [SidecarLoader(s) for s in args.sockets]
    if args.load_state:
        states = {s["rank"]: s for s in load_job_state(args.load_state)}
        for rank, loader in enumerate(loaders):
            loader.load_state_dict(states[rank])
    iters = [iter(l) for l in loaders]
    live = [True] * len(iters)
    record = {"before": [], "after": [], "states": None}
    target = "before"
    step = 0
    while any(live):
        if args.checkpoint_at is not None and step == args.checkpoint_at:
            states = [l.state_dict() for l in loaders]
            save_job_state(args.state_out, states)
            record["states"] = states
            target = "after"
        if args.checkpoint_at is not None and step == args.checkpoint_at + args.extra:
            break
        for rank, it in enumerate(iters):
            if not live[rank]:
                continue
            try:
                batch = next(it)
            except StopIteration:
                live[rank] = False
                batch = None
            # Packs whose every sample failed were passed over: record them too (no arrays).
            for m in loaders[rank].empty_batches:
                record[target].append({
                    "rank": rank, "position": m["position"], "global": m["global"],
                    "epoch": m["epoch"], "pack": m["pack"], "samples": [],
                    "skipped": [f'{s["shard"]}#{s["key"]}' for s in m["skipped"]], "hash": None,
                })
            loaders[rank].empty_batches.clear()
            if batch is None:
                continue
            m = batch.meta
            # The arrays must describe the samples: one cu_seqlens entry per sample, spans
            # inside the tokens, tiles as many as the spans say.
            cu = batch["cu_seqlens"]
            assert len(cu) == len(m["samples"]) + 1, (len(cu), len(m["samples"]))
            assert cu[-1] == len(batch["input_ids"]) == len(batch["labels"])
            spans = batch["image_spans"]
            pixels = batch["pixel_values"]
            assert int(spans[:, 3].sum()) == pixels.shape[0]
            # Rows of pixel_values are each image's, in span order, back to back.
            starts = [int(x) for x in spans[:, 2]]
            ends = [int(x) for x in spans[:, 2] + spans[:, 3]]
            assert starts == [0] + ends[:-1], (starts, ends)
            if "image_grid_thw" in batch:
                # Qwen2-VL: one row per 14 px square (3 channels x 2 frames x 14 x 14), a grid
                # per image, and each image's context tokens (span minus its start and end
                # tokens) are its squares merged 2x2.
                grid = batch["image_grid_thw"]
                assert pixels.ndim == 2 and pixels.shape[1] == 3 * 2 * 14 * 14, pixels.shape
                assert grid.shape == (len(spans), 3), grid.shape
                rows = grid[:, 0] * grid[:, 1] * grid[:, 2]
                assert (rows == spans[:, 3]).all(), (rows, spans[:, 3])
                assert (spans[:, 1] - 2 == rows // 4).all(), (spans[:, 1], rows)
                record.setdefault("patch_rows", 0)
                record["patch_rows"] += int(rows.sum())
            record[target].append({
                "rank": rank,
                "position": m["position"],
                "global": m["global"],
                "epoch": m["epoch"],
                "pack": m["pack"],
                "samples": [f'{s["shard"]}#{s["key"]}' for s in m["samples"]],
                "skipped": [f'{s["shard"]}#{s["key"]}' for s in m["skipped"]],
                "hash": digest(batch),
            })
        step += 1
    with open(args.record, "w") as f:
        json.dump(record, f)
    if args.die:
        sys.stdout.flush()
        os._exit(0)
    for l in loaders:
        l.close()


if __name__ == "__main__":
    main()
