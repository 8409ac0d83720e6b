"""95% intervals for the comparison's numbers: a seeded percentile bootstrap (pure numpy).

The unit that is resampled is what is independent. The benchmark's queries of one image (one per
attribute and target value) share the image, and the edits of one synthetic scene share the
scene, so `groups` (the query id or scene of each value) resamples whole groups: a group drawn
twice counts all its values twice, a group not drawn counts none of them. Without `groups` every
value is its own group.

Every bootstrap draw picks as many groups as there are, with replacement, from a generator seeded
by `seed`, so the same inputs and seed give the same interval. The interval is the percentile one:
the (1 - level) / 2 and (1 + level) / 2 quantiles of the statistic over the draws; draws where the
statistic is undefined (NaN, e.g. no value of one attribute was drawn) are left out.

A classifier's accuracy over catalog images, each its own independent item, takes the closed-form
Wilson score interval instead (`wilson`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

Interval = tuple[float | None, float | None, float | None]
NONE: Interval = (None, None, None)
_CHUNK = 100  # draws whose group counts are held at once


def _group_index(n: int, groups: Sequence | None) -> tuple[np.ndarray, int]:
    """(the group number 0..G-1 of each of the n values, G)."""
    if groups is None:
        return np.arange(n), n
    groups = np.asarray([str(g) for g in groups])
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} values")
    _, index = np.unique(groups, return_inverse=True)
    return index.reshape(-1), int(index.max()) + 1


def _draws(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, G] group numbers: each draw picks G groups with replacement."""
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))


def _resampled_sums(draws: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """[n_boot, k]: each draw's total of the per-group sums [G, k] (a group drawn twice counts
    twice), in chunks of draws so the [draws, G] count matrix stays small."""
    n_groups, out = sums.shape[0], []
    for start in range(0, len(draws), _CHUNK):
        chunk = draws[start:start + _CHUNK]
        counts = np.zeros((len(chunk), n_groups))
        np.add.at(counts, (np.repeat(np.arange(len(chunk)), chunk.shape[1]), chunk.ravel()), 1)
        out.append(counts @ sums)
    return np.concatenate(out) if out else np.zeros((0, sums.shape[1]))


def _percentiles(boot: np.ndarray, estimate: float, level: float) -> Interval:
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return float(estimate), None, None
    low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(estimate), float(low), float(high)


def _group_sums(columns: Sequence[np.ndarray], index: np.ndarray, n_groups: int) -> np.ndarray:
    """[G, k]: the sum of each column over each group's values."""
    return np.stack([np.bincount(index, weights=c, minlength=n_groups) for c in columns], axis=1)


def interval(values, statistic: Callable = np.mean, groups: Sequence | None = None,
             n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """(estimate, low, high): `statistic` of `values` and its percentile bootstrap interval.

    `values` is [n] or [n, d] (rows are resampled, so a statistic may read several columns, e.g.
    the mean over attributes of per-attribute accuracies); `groups` [n] names the group of each
    row. (None, None, None) for no values.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return NONE
    index, n_groups = _group_index(n, groups)
    draws = _draws(n_groups, n_boot, seed)
    estimate = float(statistic(values))
    if statistic is np.mean and values.ndim == 1:
        # The mean of a draw is its groups' sums over their sizes: no draw is materialised.
        sums = _resampled_sums(draws, _group_sums([values, np.ones(n)], index, n_groups))
        return _percentiles(sums[:, 0] / sums[:, 1], estimate, level)
    members = [np.flatnonzero(index == g) for g in range(n_groups)]
    boot = np.array([_statistic(statistic, values[np.concatenate([members[g] for g in draw])])
                     for draw in draws])
    return _percentiles(boot, estimate, level)


def _statistic(statistic: Callable, values: np.ndarray) -> float:
    """The statistic of one draw; NaN, silently, where it is undefined for that draw."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "Mean of empty slice"
        return float(statistic(values))


def wilson(successes: int, n: int, level: float = 0.95) -> Interval:
    """(share, low, high): the Wilson score interval of a share of n independent items (an
    accuracy over catalog images, where no bootstrap is needed); NONE for no items."""
    if n == 0:
        return NONE
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def ratio_interval(num, den, groups: Sequence | None = None, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """(estimate, low, high) of sum(num) / sum(den), pairs resampled together (by `groups`).

    Fidelity reduction 1 - sum(l1_edit) / sum(l1_input) is this ratio with
    num = l1_input - l1_edit and den = l1_input. None for no values or a zero denominator.
    """
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if len(num) != len(den):
        raise ValueError(f"{len(num)} numerators for {len(den)} denominators")
    if len(num) == 0 or den.sum() == 0:
        return NONE
    index, n_groups = _group_index(len(num), groups)
    sums = _resampled_sums(_draws(n_groups, n_boot, seed), _group_sums([num, den], index, n_groups))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = sums[:, 0] / sums[:, 1]
    return _percentiles(boot, float(num.sum() / den.sum()), level)
