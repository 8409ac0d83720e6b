"""Where and how a command runs: the torch device, the torchrun process group when there is one,
the thread count, and the precision and compilation of the query path's networks.

One place decides "cuda if torch sees it, else cpu" and joins or leaves a torchrun process group,
so training, the sharded index build and the query path agree on both; one place chooses how many
threads torch uses (`set_torch_threads`) and whether a network runs in bf16 (`resolve_precision`,
`FastPath`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from amgan_search.errors import UserError

if TYPE_CHECKING:  # annotations only: importing torch here would slow every command's start
    import torch


def pick_device(device: str | None = None) -> str:
    """None or 'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; anything else checked: a name
    torch does not know, or a GPU this machine does not have, is a one-line error."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (chosen.index is not None and chosen.index >= count):
            raise UserError(f"device {device!r}: this machine has {count} CUDA device(s)")
    elif chosen.type in ("mps", "xpu"):
        backend = getattr(torch.backends, "mps", None) if chosen.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise UserError(f"device {device!r}: this machine has no {chosen.type} device")
    elif chosen.type != "cpu":  # meta and the rest hold no data: nothing could run there
        raise UserError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
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


# ---------------------------------------------------------------- threads

# Torch's default is one thread per core, chosen for one process alone on a machine. Ours:
# - query (the CLI, one image): its operations are small (64x64 images, batch 1) and OpenMP threads
#   wait for each other at every one, so a thread whose core another process takes stalls them
#   all. Measured on a 2-core machine, warm query p50 (perf/query_latency.py): under load,
#   136 ms with 1 thread against 501 ms with 2 (the issue saw 129 against 662-5466); near idle,
#   128 ms with 1 against 76 ms with 2. The CLI runs on shared machines and its inference is a
#   small part of a cold query (about 3 s), so it takes the robust choice: half the cores, at most
#   4 (our assumption, not measured on more cores: batch-1 operations this small gain little more).
# - serve: a long-running process meant to have the machine to itself, whose batches grow with
#   the clients: every core but one, which stays free for receiving and decoding requests.
# - build: images are decoded in DataLoader worker processes while the model runs; threads plus
#   workers above the core count made it slower (45 img/s with 2 threads and 2 workers on 2
#   cores, 82-96 with 1), so it takes the cores its workers (and other torchrun ranks) leave.
# OMP_NUM_THREADS set by the user, or --threads, wins over all three.
THREAD_ROLES = ("query", "serve", "build")


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    from pathlib import Path

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads(role: str = "query", workers: int = 0) -> int:
    """The thread count the policy above gives `role` ("query", "serve" or "build")."""
    if role not in THREAD_ROLES:
        raise ValueError(f"role must be one of {THREAD_ROLES}, not {role!r}")
    cores = available_cores()
    if role == "build":
        return max(1, cores // launched_world() - max(0, int(workers)))
    if role == "serve":
        return max(1, cores - 1)
    return max(1, min(4, cores // 2))


def set_torch_threads(threads: int | None = None, role: str = "query", workers: int = 0) -> int:
    """Set torch's intra-op threads: `threads` if given, else OMP_NUM_THREADS if the user set it,
    else the policy's default for `role`. Returns the count in force."""
    import torch

    if threads is not None and int(threads) < 1:
        raise UserError(f"threads must be at least 1, not {threads}")
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"]) or None
    torch.set_num_threads(int(threads or default_threads(role, workers)))
    return torch.get_num_threads()


# ---------------------------------------------------------------- precision

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` has bf16 arithmetic in hardware (not emulated)."""
    import platform

    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no emulation to rule out
            return bool(torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    if platform.machine().lower() in ("x86_64", "amd64"):
        # oneDNN reports bf16 support on every AVX-512 CPU and emulates it where the CPU lacks
        # AVX512_BF16 and AMX: measured there, bf16 convolutions ran 3-7x slower than fp32. So the
        # instructions themselves decide.
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    # Elsewhere (aarch64) oneDNN claims bf16 only where the CPU has the BF16 extension.
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str | None, device: str = "cpu") -> str:
    """"auto" (or None) -> "bf16" where `device` has native bf16, else "fp32"; the others as given."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def prepare_module(module, precision: str):
    """Weights in the memory layout the precision runs fastest in: channels_last for bf16 (oneDNN's
    bf16 convolutions are written for it), the default layout for fp32 (so fp32 results stay
    bit for bit those of an untouched model). In place; returns the module."""
    import torch

    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format
    if not isinstance(module, torch.nn.Module):
        return module
    if any(p.dim() == 4 and not p.is_contiguous(memory_format=layout) for p in module.parameters()):
        module.to(memory_format=layout)
    return module


class FastPath:
    """One network call of the query path in the chosen precision, eager or compiled.

    fp32, not compiled: `fn` itself, untouched (results bit for bit as without the wrapper). bf16:
    4-D inputs in channels_last, autocast, floating outputs returned in fp32. `compile()` swaps in
    torch.compile (inductor, with freezing: the weights become constants, so convolutions get
    pre-packed weights and fused epilogues) of the same call; it compiles on the first calls, which
    the caller makes on purpose (warm-up). Afterwards an input that would need a new compilation
    (another batch size) runs eagerly instead of stalling a request for the length of a compile.
    """

    # After the warm-up; "fail_on_recompile" makes a call that misses the compiled code raise
    # (what the benchmark and the tests use to show that the compiled code is what runs).
    stance = "eager_on_recompile"

    def __init__(self, fn, precision: str = "fp32", device: str = "cpu"):
        import torch

        self.fn, self.precision, self.device = fn, precision, torch.device(device)
        self.compiled = None
        self.warming = False

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args) if self.precision == "fp32" else self._run(*args)
        import torch

        args = tuple(_canonical(a) for a in args)
        if self.warming:
            # Freezing set for the compilations of the warm-up: passed to torch.compile as an
            # option it was not applied (measured: no pre-packed convolutions, 3x slower).
            from torch._inductor import config

            with config.patch(freezing=True):
                return self.compiled(*args)
        if not hasattr(torch.compiler, "set_stance"):  # torch < 2.6: a new shape compiles
            return self.compiled(*args)
        with torch.compiler.set_stance(self.stance):
            return self.compiled(*args)

    def _run(self, *args):
        import torch

        args = tuple(a.contiguous(memory_format=torch.channels_last)
                     if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            return _float32(self.fn(*args))

    def compile(self) -> None:
        """Compile on the next calls, until `warmed()`: each new input shape gets compiled."""
        import torch

        self.compiled = torch.compile(self._run)
        self.warming = True

    def warmed(self) -> None:
        self.warming = False

    def uncompile(self) -> None:
        self.compiled, self.warming = None, False


def _canonical(a):
    """A tensor copied into the standard strides of its layout (channels_last for images): compiled
    code is specialised on strides, and a size-1 batch dimension can carry any stride."""
    import torch

    if not isinstance(a, torch.Tensor):
        return a
    return a.clone(memory_format=torch.channels_last if a.dim() == 4 else torch.contiguous_format)


def _float32(out):
    """Floating tensors (also inside tuples and lists) back in fp32."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (tuple, list)):
        return type(out)(_float32(o) for o in out)
    return out


def compile_paths(steps, progress=None) -> bool:
    """Compile and warm up networks: `steps` = [(name, FastPath, [warm-up calls])], in order.

    One progress line per network. If any compilation fails (no C++ compiler, an operation
    inductor cannot lower), every network runs uncompiled and one warning line says why (through
    `progress`, else on stderr). Returns whether the networks are compiled.
    """
    import sys
    import time

    say = progress or (lambda line: None)
    for i, (name, path, calls) in enumerate(steps, 1):
        start = time.perf_counter()
        say(f"compiling {name} ({i}/{len(steps)}) ...")
        try:
            path.compile()
            for call in calls:
                call()
        except Exception as exc:  # inductor and the C++ compiler raise many types
            for _, other, _ in steps:
                other.uncompile()
            reason = (str(exc).strip().splitlines() or [""])[0][:160]
            line = (f"warning: torch.compile failed on {name} ({type(exc).__name__}: {reason}); "
                    "running uncompiled")
            (progress or (lambda text: print(text, file=sys.stderr)))(line)
            return False
        say(f"compiled {name} in {time.perf_counter() - start:.1f} s")
    for _, path, _ in steps:
        path.warmed()
    return True
