"""Where a command runs: the torch device, and the torchrun process group when there is one.

One place decides "cuda if torch sees it, else cpu" and joins or leaves a torchrun process group,
so training, the sharded index build and the query path agree on both.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing torch here would slow every command's start
    import torch


def pick_device(device: str | None = None) -> str:
    """None or 'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; anything else as given."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def launched_world() -> int:
    """Processes torchrun started (1 outside torchrun), read from its environment."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group; (0, 1) when there is none."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch builds without distributed support
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str | None = None) -> tuple[int, int, "torch.device", bool]:
    """Join torchrun's process group when launched under it (nccl on GPUs, gloo on CPUs).

    Returns (rank, world, this process's device, whether this call started the group): under
    torchrun each process takes the GPU of its LOCAL_RANK unless `device` names one.
    """
    import torch
    import torch.distributed as dist

    world = launched_world()
    chosen = torch.device(pick_device(device))
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        started = True
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    rank, world = rank_and_world()
    return rank, world, chosen, started


def teardown_distributed(started: bool = True) -> None:
    """Leave the process group if this process started it."""
    if not started:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
