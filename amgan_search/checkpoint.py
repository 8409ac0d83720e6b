"""One checkpoint format: model directories, weights, training state and run checkpoints.

A model directory holds `config.json` (what the model is: kind, schema, architecture, size, how it
was trained) and `model.safetensors` (the weights). A training run directory holds the same, plus
`checkpoints/step-NNNNNNN/` each with `model.safetensors` and `state.pt` (optimiser, RNG and
iteration state) and `checkpoints/latest` naming the newest complete one. Every file is written
under a temporary name and renamed into place (`amgan_search.io`), so a killed run never leaves a
half-written file where a reader looks. Nothing is ever unpickled: weights are safetensors, state
is loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from amgan_search.errors import UserError
from amgan_search.io import atomic_dir, atomic_path, read_json, write_json, write_text

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"


def save_weights(path: str | os.PathLike, tensors: Mapping[str, Any], half: bool = False,
                 metadata: Mapping[str, str] | None = None) -> None:
    """Tensors -> safetensors, atomically; `half` stores floating tensors as fp16 (shipped models)."""
    from safetensors.torch import save_file

    out = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if half and t.is_floating_point():
            t = t.half()
        out[name] = t
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=dict(metadata or {}))


def load_weights(path: str | os.PathLike, device: str = "cpu") -> dict:
    """safetensors -> tensors, floating ones as float32 (fp16 is a storage format only)."""
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


def save_model_dir(path: str | os.PathLike, config: Mapping[str, Any],
                   tensors: Mapping[str, Any], half: bool = False) -> None:
    """Write config.json and model.safetensors into a directory that appears complete or not at all."""
    with atomic_dir(path) as tmp:
        save_weights(tmp / WEIGHTS, tensors, half=half)
        write_json(tmp / CONFIG, dict(config))


def load_model_dir(path: str | os.PathLike, kind: str | None = None) -> tuple[dict, dict]:
    """A model directory -> (config, float32 tensors); `kind` checks what the directory holds."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such model directory")
    config = read_json(path / CONFIG)
    if kind is not None and config.get("kind") != kind:
        raise UserError(f"{path}: holds a {config.get('kind', 'unknown')!r} model, not a {kind!r} model")
    return config, load_weights(path / WEIGHTS)


def save_checkpoint(run_dir: str | os.PathLike, step: int, tensors: Mapping[str, Any],
                    state: Mapping[str, Any], keep: int = 2) -> Path:
    """Write run_dir/checkpoints/step-N atomically, point `latest` at it, keep the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:07d}"
    with atomic_dir(final) as tmp:
        save_weights(tmp / WEIGHTS, tensors)
        save_state(tmp / STATE, {**state, "step": step})
    write_text(root / "latest", final.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None when the run has none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / WEIGHTS).is_file() and (path / STATE).is_file() else None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """A checkpoint directory -> (tensors, state)."""
    path = Path(path)
    return load_weights(path / WEIGHTS), load_state(path / STATE)
