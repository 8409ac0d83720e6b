"""What both training loops share: the run folder, resume, RNG state, the JSONL log and samples.

A run folder holds train_config.json (the run's configuration, so it can be repeated), log.jsonl
(one JSON record a line), checkpoints/ (`amgan_search.checkpoint`: weights, optimiser, RNG and
position in the data), for the GANs samples/, and the marker of a run folder. Under torchrun only
rank 0 writes: the other ranks hold a RunFolder whose writes do nothing.

A training claims its folder and holds its writer lock while it runs (`open_run`): a fresh run
never writes into a folder that holds anything else, an existing run is continued only when asked,
and a second training of the same run fails at once instead of interleaving with the first.
Resume is resume: a run goes on only with the values it was started with in every field that
changes what it computes (`check_resume`), or refuses naming the fields that differ.
"""

from __future__ import annotations

import json
import random
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from amgan_search import checkpoint as ckpt
from amgan_search.errors import UserError
from amgan_search.images import preview_values, save_image, tile_rows
from amgan_search.io import (JsonlWriter, as_named, read_json, read_jsonl, remove_stale,
                             write_json, write_text, writer_lock)
from amgan_search.outputs import MARKER, claim_dir, mark

RUN_CONFIG = "train_config.json"
LOG = "log.jsonl"


def due(step: int, every: int, end: int | None = None) -> bool:
    """Whether a periodic action (log, samples, checkpoint) falls on `step`; always at the end."""
    return step % every == 0 or step == end


# -- random state -----------------------------------------------------------------------------

def rng_state(np_rng: np.random.Generator | None = None) -> dict:
    """torch's, CUDA's, Python's and numpy's random state: `np_rng`'s where the run draws from its
    own generator, else numpy's global one (what DataLoader augmentation uses)."""
    state = {"torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "python": random.getstate()}
    if np_rng is not None:
        state["numpy"] = np_rng.bit_generator.state
    else:
        # MT19937's key as a tensor: torch.load(weights_only=True) takes no numpy arrays.
        _, key, pos = np.random.get_state()[:3]
        state["numpy"], state["numpy_pos"] = torch.from_numpy(key.astype(np.int64)), int(pos)
    return state


def set_rng_state(state: dict, np_rng: np.random.Generator | None = None) -> None:
    """Put back what `rng_state` saved, so a resumed run draws what the uninterrupted one would."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if np_rng is not None:
        np_rng.bit_generator.state = state["numpy"]
    else:
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                             state["numpy_pos"]))


def from_every_rank(obj, world: int) -> list:
    """`obj` of every rank, in rank order (each rank's RNG state goes into rank 0's checkpoint)."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    gathered = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


# -- claiming the run folder ---------------------------------------------------------------------

class RunExists(UserError):
    """The output folder holds a run with checkpoints, and the caller did not ask to resume it."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: holds a training run already; resume it or choose another "
                         "output folder")
        self.path = path


@contextmanager
def open_run(out: str | Path, resume: bool, inputs: Iterable[str | Path | None] = (),
             writes: bool = True) -> Iterator[None]:
    """Claim `out` for a training run and hold its writer lock while the run writes it.

    A fresh run takes a new or empty folder, or a run folder without a checkpoint (a kill before
    the first one left nothing to continue); a run with one is continued only when `resume`.
    Anything else (the current folder, a folder holding the catalog or the classifier, another
    kind of folder, files this tool did not write) is refused. Ranks that do not write (`writes`
    False) claim nothing.
    """
    if not writes:
        yield
        return
    where = claim_dir(out, "run", force=True, inputs=inputs)
    with writer_lock(where, timeout=0):
        claim_dir(out, "run", force=True, inputs=inputs)  # again, now that no one else writes
        if not resume and (ckpt.latest_checkpoint(where) is not None
                           or (where / ckpt.WEIGHTS).is_file()):
            raise RunExists(Path(out))
        where.mkdir(parents=True, exist_ok=True)
        if not (where / MARKER).is_file():
            mark(where, "run")
        remove_leftovers(where)
        yield


def check_resume(folder: "RunFolder", config: dict[str, Any], fields: Iterable[str],
                 paths: Iterable[str] = ()) -> None:
    """Refuse to resume the run in `folder` with values of `fields` other than its
    train_config.json records, naming each (`paths`: fields compared as the files they name, so
    `data/x.db` and its absolute path are the same). Fields the record lacks (a run begun before
    they existed) are not compared."""
    saved = folder.saved_config()
    if not isinstance(saved, dict):
        raise UserError(f"{folder.out / RUN_CONFIG}: not a JSON object")
    paths = set(paths)
    changed = [k for k in fields if k in saved
               and _as_saved(config.get(k), k in paths) != _as_saved(saved[k], k in paths)]
    if changed:
        raise UserError(f"{folder.out}: cannot resume with another "
                        + ", ".join(f"{k} ({saved[k]!r} -> {config.get(k)!r})" for k in changed)
                        + f"; the run was started with the values in {RUN_CONFIG}")


def _as_saved(value, is_path: bool):
    """A value as train_config.json holds it (tuples are lists), a path as what it names
    (`io.as_named`)."""
    return as_named(value) if is_path else json.loads(json.dumps(value))


# `.NAME.PID.XXXX.tmp` / `.NAME.PID.old`: io's temporary names (see amgan_search.io)
_TEMPORARY = re.compile(r"^\.(.+)\.\d+\.(?:[^/]*\.tmp|old)$")


def remove_leftovers(run: Path) -> None:
    """Remove what killed writers of this run left (temporary files and folders of processes that
    are gone), in the run folder, its checkpoints/ and samples/."""
    for folder in (run, run / "checkpoints", run / "samples"):
        names = {m.group(1) for entry in (folder.iterdir() if folder.is_dir() else ())
                 if (m := _TEMPORARY.match(entry.name))}
        for name in names:
            remove_stale(folder / name)


# -- the run folder ---------------------------------------------------------------------------

class RunFolder:
    """The files of one training run; `writes=False` (ranks other than 0) reads but never writes."""

    def __init__(self, out: str | Path, writes: bool = True):
        self.out, self.writes = Path(out), writes
        self.log_path = self.out / LOG
        self._log: JsonlWriter | None = None

    def latest(self) -> Path | None:
        return ckpt.latest_checkpoint(self.out)

    def resume(self) -> tuple[dict, dict]:
        """(tensors, state) of the latest checkpoint; a UserError when there is none."""
        latest = self.latest()
        if latest is None:
            raise UserError(f"{self.out}: no checkpoint to resume from")
        return ckpt.load_checkpoint(latest)

    def saved_config(self) -> dict:
        """The train_config.json of the run so far ({} when it has none)."""
        path = self.out / RUN_CONFIG
        return read_json(path) if path.is_file() else {}

    def write_config(self, config: dict) -> None:
        if self.writes:
            write_json(self.out / RUN_CONFIG, config)

    def trim_log(self, upto: int, key: str = "iter") -> None:
        """On resume, drop log records written after the checkpoint (they will be written again)."""
        if not self.writes or not self.log_path.is_file():
            return
        keep = [r for r in read_jsonl(self.log_path) if r.get(key, 0) <= upto]
        write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in keep))

    def open_log(self) -> None:
        """Open log.jsonl for appending (after any trim_log: trimming replaces the file)."""
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            self._log = JsonlWriter(self.log_path)

    def log(self, record: dict) -> None:
        """Append one record to log.jsonl, flushed at once."""
        if self._log is not None:
            self._log.write([record])

    def save_samples(self, step: int, grid: np.ndarray) -> None:
        if self.writes:
            save_image(self.out / "samples" / f"iter-{step:07d}.png", grid)

    def checkpoint(self, step: int, tensors: dict, state: dict, keep: int = 2) -> None:
        """checkpoints/step-N; the newest `keep` are kept (0: all)."""
        if self.writes:
            ckpt.save_checkpoint(self.out, step, tensors, state, keep=keep)

    def training_seconds(self, upto: int) -> float:
        return training_seconds(self.log_path, upto)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def training_seconds(log: Path, upto: int) -> float:
    """Training time up to iteration `upto`, summed over the invocations (a run and its resumes)
    from the log; logs without `since` (older runs) count as a single invocation."""
    last: dict[int, dict] = {}  # since -> the invocation's last record up to `upto`
    for record in read_jsonl(log):
        if "s_per_iter" in record and record.get("iter", 0) <= upto:
            last[record.get("since", 0)] = record
    return sum(r["s_per_iter"] * (r["iter"] - since) for since, r in last.items())


# -- what a person watches ----------------------------------------------------------------------

def sample_grid(trainer, x: torch.Tensor, labels: torch.Tensor,
                values_per_attribute: int = 4) -> np.ndarray:
    """Rows: the inputs, then for a few values of each attribute the edit and its mask."""
    rows = [x]
    for j, attr in enumerate(trainer.schema.attributes):
        for v in preview_values(len(attr.values), values_per_attribute):
            x_star, alpha = trainer.translate(x, labels, j, torch.full((len(x),), v))
            rows += [x_star, alpha.expand(-1, 3, -1, -1)]
    return tile_rows(rows)


def tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the JSONL log is always written
        return None
    return SummaryWriter(str(out / "tensorboard"))


def progress_bar(**kw):
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, **kw)
