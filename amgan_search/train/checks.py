"""Field checks the training configurations share, so a library caller's bad value gets the same
one-line error as the command line's (whose click ranges say the same)."""

from __future__ import annotations

import math
from typing import Any

from amgan_search.errors import UserError

SEED_MAX = 2 ** 32 - 1   # numpy's seeds; torch and random take these too
# Image sides a run may train at: below 16 px the networks have nothing left to see, above
# 1024 px one batch no longer fits the memory these networks are sized for.
TRAIN_SIZES = (16, 1024)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole(config: Any, names: tuple[str, ...], lo: int, hi: int | None = None,
          optional: bool = False) -> None:
    """Each of `names` is an int in [lo, hi] (None allowed when `optional`)."""
    for name in names:
        value = getattr(config, name)
        if value is None and optional:
            continue
        if not _is_whole(value):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            raise UserError(f"{name} must be {span}, got {value!r}")


def number(config: Any, names: tuple[str, ...], lo: float, hi: float | None = None,
           above: bool = False, below: bool = False, optional: bool = False) -> None:
    """Each of `names` is a finite number >= lo (> lo when `above`), <= hi (< hi when `below`)."""
    for name in names:
        value = getattr(config, name)
        if value is None and optional:
            continue
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and (value > lo if above else value >= lo)
              and (hi is None or (value < hi if below else value <= hi)))
        if not ok:
            span = f"{'above' if above else 'at least'} {lo}"
            if hi is not None:
                span += f" and {'below' if below else 'at most'} {hi}"
            raise UserError(f"{name} must be a number {span}, got {value!r}")


def choice(config: Any, name: str, choices: tuple, what: str | None = None) -> None:
    value = getattr(config, name)
    if value not in choices or isinstance(value, bool):
        raise UserError(f"unknown {what or name} {value!r}; valid: {', '.join(map(str, choices))}")
