"""A data-parallel training loop fed by `vlmprep serve`, checkpointing the data state with the
model. Run one process per rank (e.g. torchrun), each with its server started as

    vlmprep serve --input 'pool-*.tar' --out plan-rR/ --rank R --world-size W \
        --socket /tmp/vlmprep-rR.sock --dtype bf16 [--resume job_state.json]
"""

import os

import numpy as np

from vlmprep_client import SidecarLoader, save_job_state

try:
    import torch
except ImportError:  # the loop runs without torch too, on numpy
    torch = None


def main():
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    loader = SidecarLoader(os.environ.get("VLMPREP_SOCKET", f"/tmp/vlmprep-r{rank}.sock"))
    for step, batch in enumerate(loader):
        if torch is not None:
            ids = torch.from_numpy(batch["input_ids"])  # shares the ring's memory
            pixels = torch.from_numpy(batch["pixel_values"])
            if pixels.dtype == torch.int16 or batch["pixel_values"].dtype == np.uint16:
                pixels = pixels.view(torch.bfloat16)  # bf16 travels as its bit pattern
            # model(ids.cuda(non_blocking=True), pixels.cuda(), cu_seqlens=...) goes here
            tokens = int(ids.numel())
        else:
            tokens = int(batch["input_ids"].size)
        if step % 100 == 0:
            print(f"rank {rank} step {step}: {tokens} tokens, "
                  f"{batch['pixel_values'].shape[0]} tiles, {len(batch.meta['samples'])} samples")
            state = loader.state_dict()
            if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
                states = [None] * world
                torch.distributed.all_gather_object(states, state)
            else:
                states = [state]
            if rank == 0:
                save_job_state("job_state.json", states)  # with the model's checkpoint
    loader.close()


if __name__ == "__main__":
    main()
