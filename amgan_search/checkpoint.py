"""One checkpoint format: model directories, weights, training state and run checkpoints.

A model directory holds `config.json` (what the model is: kind, schema, architecture, size, how it
was trained), `model.safetensors` (the weights), `SHA256SUMS` (their digests, checked on every
load) and the marker of a model folder (`outputs.MARKER`). A training run directory holds the
same, plus `checkpoints/step-NNNNNNN/` each with `model.safetensors`, `state.pt` (optimiser, RNG
and iteration state) and their `SHA256SUMS`, and `checkpoints/latest` naming the newest one for
people: readers take the newest complete `step-N` folder itself (`latest_checkpoint`), so a kill
between a checkpoint's rename and the pointer's loses nothing. Every file is written under a
temporary name and renamed into place (`amgan_search.io`), so a killed run never leaves a
half-written file where a reader looks. Nothing is ever unpickled: weights are safetensors, state
is loaded with `torch.load(weights_only=True)`.

Every safetensors file records the sha256 of its tensor data in its own metadata (`data_sha256`),
a record that travels with the file. No load without a check: a folder with SHA256SUMS is checked
against it; a folder marked as the tool's (`outputs.MARKER`) without one is refused (its sums were
lost, or it was tampered with; `amgan-search model checksum` says what vouches for its weights);
an unmarked folder without one (written before digests were recorded) loads when its weights'
own record holds, and unchecked only when they carry none, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from amgan_search.errors import UserError
from amgan_search.integrity import SUMS, file_sha256, read_sums, verify, write_sums
from amgan_search.io import atomic_dir, atomic_path, read_json, remove_stale, write_json, write_text
from amgan_search.outputs import MARKER, carry_over, mark

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
MODEL_FILES = (WEIGHTS, CONFIG)       # what a model folder's SHA256SUMS covers
CHECKPOINT_FILES = (WEIGHTS, STATE)   # and a checkpoint's
DATA_SHA256 = "data_sha256"           # the safetensors metadata key of the tensor data's digest
_STEP = re.compile(r"^step-(\d+)$")


def save_weights(path: str | os.PathLike, tensors: Mapping[str, Any], half: bool = False,
                 metadata: Mapping[str, str] | None = None) -> None:
    """Tensors -> safetensors, atomically; `half` stores floating tensors as fp16 (shipped models).
    The sha256 of the tensor data goes into the file's metadata (`DATA_SHA256`): serialised once
    to take it (the data's layout does not depend on the metadata), then written with it."""
    from safetensors.torch import save, save_file

    out = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if half and t.is_floating_point():
            t = t.half()
        out[name] = t
    blob = save(out)
    digest = hashlib.sha256(memoryview(blob)[8 + int.from_bytes(blob[:8], "little"):]).hexdigest()
    del blob
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata={**dict(metadata or {}), DATA_SHA256: digest})


def data_digests(path: str | os.PathLike) -> tuple[str | None, str]:
    """(the tensor data's sha256 a safetensors file records in its metadata, or None when it
    records none; the sha256 of its data as it is now)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100 * 2**20:
                raise ValueError("no safetensors header")
            header = json.loads(f.read(n))
            recorded = (header.get("__metadata__") or {}).get(DATA_SHA256)
            digest = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: corrupt or unreadable weights ({exc})") from None
    return (recorded if isinstance(recorded, str) else None), digest.hexdigest()


def check_data_digest(path: str | os.PathLike) -> bool:
    """Check a safetensors file against the data digest its metadata records (a one-line
    UserError when they differ); False when it records none."""
    recorded, actual = data_digests(path)
    if recorded is None:
        return False
    if recorded != actual:
        raise UserError(f"{path}: damaged (the sha256 of its tensor data differs from the one its "
                        "metadata records)")
    return True


def load_weights(path: str | os.PathLike, device: str = "cpu") -> dict:
    """safetensors -> tensors, floating ones as float32 (fp16 is a storage format only).

    Reads the file alone: the folder's digests are checked by `load_model_dir` / `load_checkpoint`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: corrupt or unreadable weights ({exc})") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Optimiser, RNG and counters: only tensors and plain Python values, so weights_only loads them."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_state(path: str | os.PathLike) -> dict:
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such state file") from None
    except Exception as exc:  # torch raises several types for a corrupt or unsafe file
        raise UserError(f"{path}: corrupt or unsafe training state ({exc})") from None


# -- digests ------------------------------------------------------------------------------------

# Files this process has checked against their SHA256SUMS, by (path, the sums' and the file's
# inode, size and modification time): a query loads the CAM classifier twice (editor and
# embedder), and 20 MB of sha256 costs about 30 ms. A file changed in place gets a new mtime.
_VERIFIED: set[tuple] = set()


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class Unsummed(UserError):
    """A folder marked as the tool's without its SHA256SUMS: its files cannot be checked."""

    def __init__(self, folder: Path):
        super().__init__(f"{folder / SUMS}: missing, though {folder} is marked as written by "
                         f"amgan-search, so its files cannot be checked; `amgan-search model "
                         f"checksum {folder}` says what vouches for them")


def verify_dir(folder: str | os.PathLike, names: Iterable[str]) -> bool:
    """`integrity.verify` of `names` in `folder`, each file checked once per process while it stays
    unchanged. Without SHA256SUMS: a folder marked as the tool's is refused (`Unsummed`); an
    unmarked one (written before sums were recorded) has its weights checked against the digest
    their metadata records, where they record one. False: the folder has no SHA256SUMS."""
    folder = Path(folder)
    names = list(names)
    if not (folder / SUMS).is_file():
        if (folder / MARKER).is_file():
            raise Unsummed(folder)
        if WEIGHTS in names and (folder / WEIGHTS).is_file():
            check_data_digest(folder / WEIGHTS)
        return False
    for name in names:
        try:
            key = (str((folder / name).resolve()), _stamp(folder / SUMS), _stamp(folder / name))
        except OSError:
            key = None  # missing: verify names it
        if key not in _VERIFIED:
            verify(folder, [name])
            if key is not None:
                _VERIFIED.add(key)
    return True


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 of a model folder's model.safetensors: the one its SHA256SUMS records once checked
    (so no second read), else computed (the caller compares it with a record of its own)."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder / WEIGHTS}: no such weights file")
    if (folder / SUMS).is_file() and verify_dir(folder, [WEIGHTS]):
        return read_sums(folder)[WEIGHTS]
    return file_sha256(folder / WEIGHTS)


def record_sums(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """SHA256SUMS of `names` for a folder already in place."""
    write_sums(folder, names)


# -- model directories -----------------------------------------------------------------------------

def save_model_dir(path: str | os.PathLike, config: Mapping[str, Any],
                   tensors: Mapping[str, Any], half: bool = False) -> None:
    """Write a model folder (config.json, model.safetensors, SHA256SUMS, marker) that appears
    complete or not at all. Files of an existing folder that a model folder does not hold (its
    MODEL_CARD.md) are carried over: callers claim the folder first (`outputs.claim_dir`)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        save_weights(tmp / WEIGHTS, tensors, half=half)
        write_json(tmp / CONFIG, dict(config))
        write_sums(tmp, MODEL_FILES)
        mark(tmp, "model")
        carry_over(path, tmp, lambda rel: rel in (*MODEL_FILES, SUMS, MARKER))


def save_model_files(folder: str | os.PathLike, config: Mapping[str, Any],
                     tensors: Mapping[str, Any], half: bool = False) -> None:
    """config.json, model.safetensors and SHA256SUMS of a model inside a folder that holds more (a
    training run's final or best model). All three are written complete under temporary names
    first and then renamed into place one right after another; a kill between two renames leaves
    files the sums disagree with, which every loader refuses naming the file, never a mix it uses.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder / WEIGHTS)
    # io's temporary name for model.safetensors, so a killed writer's is removed the next time
    tmp = Path(tempfile.mkdtemp(prefix=f".{WEIGHTS}.{os.getpid()}.", suffix=".tmp", dir=folder))
    try:
        save_weights(tmp / WEIGHTS, tensors, half=half)
        write_json(tmp / CONFIG, dict(config))
        write_sums(tmp, MODEL_FILES)
        for name in (WEIGHTS, CONFIG, SUMS):
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_dir(path: str | os.PathLike, kind: str | None = None,
                   vouched: bool = False) -> tuple[dict, dict]:
    """A model directory -> (config, float32 tensors), its files checked against its SHA256SUMS;
    `kind` checks what the directory holds. `vouched`: the caller checked the weights against a
    record of its own (`registry.checksum_model`, about to write the sums)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such model directory")
    if not vouched:
        verify_dir(path, MODEL_FILES)
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise UserError(f"{path / CONFIG}: not a JSON object")
    if kind is not None and config.get("kind") != kind:
        raise UserError(f"{path}: holds a {config.get('kind', 'unknown')!r} model, not a {kind!r} model")
    return config, load_weights(path / WEIGHTS)


# -- run checkpoints -------------------------------------------------------------------------------

def save_checkpoint(run_dir: str | os.PathLike, step: int, tensors: Mapping[str, Any],
                    state: Mapping[str, Any], keep: int = 2) -> Path:
    """Write run_dir/checkpoints/step-N atomically, point `latest` at it, keep the newest `keep`
    (0: all). The checkpoint `latest` names is never removed, whatever the others' steps."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:07d}"
    with atomic_dir(final) as tmp:
        save_weights(tmp / WEIGHTS, tensors)
        save_state(tmp / STATE, {**state, "step": step})
        write_sums(tmp, CHECKPOINT_FILES)
    write_text(root / "latest", final.name + "\n")
    if keep > 0:
        # Only those before this step: one after it is left from before a resume, and the
        # training that goes on from here writes it again.
        older = sorted((s, p) for s, p in checkpoint_steps(root) if s < step)
        for _, old in older[:max(0, len(older) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_steps(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder under `root` (names of other files ignored)."""
    found = []
    for entry in root.iterdir() if root.is_dir() else ():
        m = _STEP.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), entry))
    return found


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None when the run has none: the step-N folder
    of the highest N holding its weights and state, whatever `latest` says. Each folder appears
    whole (one rename) and `latest` is written after it, so a kill between the two leaves a
    checkpoint the pointer does not name yet; taking the folders themselves loses none."""
    root = Path(run_dir) / "checkpoints"
    complete = [(step, path) for step, path in checkpoint_steps(root)
                if (path / WEIGHTS).is_file() and (path / STATE).is_file()]
    return max(complete)[1] if complete else None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """A checkpoint directory -> (tensors, state), its files checked against its SHA256SUMS."""
    path = Path(path)
    verify_dir(path, CHECKPOINT_FILES)
    return load_weights(path / WEIGHTS), load_state(path / STATE)
