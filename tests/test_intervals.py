"""The comparison's bootstrap intervals on hand-made samples with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from amgan_search.metrics.intervals import interval, ratio_interval, wilson


def test_a_constant_has_a_zero_width_interval():
    assert interval(np.full(50, 0.25)) == (0.25, 0.25, 0.25)
    assert interval(np.full(6, 3.0), groups=[0, 0, 1, 1, 2, 2]) == (3.0, 3.0, 3.0)


def test_no_values_give_no_interval():
    assert interval([]) == (None, None, None)
    assert ratio_interval([], []) == (None, None, None)
    assert ratio_interval([1.0], [0.0]) == (None, None, None)


def test_a_bernoulli_sample_covers_its_mean_with_the_normal_width():
    # 300 ones in 1000: the 95% interval is about mean +- 1.96 * sqrt(p (1 - p) / n).
    values = np.zeros(1000)
    values[np.random.default_rng(5).permutation(1000)[:300]] = 1
    est, low, high = interval(values, n_boot=2000)
    assert est == pytest.approx(0.3)
    assert low < 0.3 < high
    expected = 2 * 1.96 * np.sqrt(0.3 * 0.7 / 1000)  # 0.0568
    assert high - low == pytest.approx(expected, rel=0.12)
    assert (0.3 - low) == pytest.approx(high - 0.3, rel=0.25)  # about symmetric


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    values = np.random.default_rng(1).normal(size=200)
    assert interval(values, seed=3) == interval(values, seed=3)
    assert interval(values, seed=3) != interval(values, seed=4)
    assert ratio_interval(values + 5, values + 6, seed=2) == ratio_interval(values + 5, values + 6,
                                                                            seed=2)


def test_the_fast_mean_and_a_statistic_given_as_a_function_agree():
    values = np.random.default_rng(2).random(120)
    groups = np.arange(120) // 4
    fast = interval(values, groups=groups, n_boot=300, seed=9)
    slow = interval(values, statistic=lambda v: float(np.mean(v)), groups=groups, n_boot=300,
                    seed=9)
    assert fast == pytest.approx(slow)


def test_groups_are_resampled_whole():
    # Two groups of five: group a holds 0s, group b 1s. Whole groups drawn give a mean of 0, 1/2
    # or 1 only; single values drawn would give every multiple of 1/10.
    values = np.array([0.0] * 5 + [1.0] * 5)
    groups = ["a"] * 5 + ["b"] * 5
    seen = []
    interval(values, statistic=lambda v: seen.append(np.mean(v)) or np.mean(v), groups=groups,
             n_boot=200)
    assert set(np.round(seen, 6)) <= {0.0, 0.5, 1.0} and len(set(np.round(seen, 6))) == 3
    # ... and every draw holds each group's values all together: counts are multiples of 5.
    sizes = []
    interval(np.arange(10), statistic=lambda v: sizes.append(np.bincount(v.astype(int) // 5,
                                                                          minlength=2)) or 0.0,
             groups=groups, n_boot=100)
    assert all(len(v) == 2 and v[0] % 5 == 0 and v[1] % 5 == 0 and v.sum() == 10 for v in sizes)
    # Without groups the same values resample one by one, and the interval is narrower.
    _, low_g, high_g = interval(values, groups=groups)
    _, low, high = interval(values)
    assert high_g - low_g > high - low


def test_grouped_means_weigh_each_group_by_its_size():
    # Group x: one value 1.0; group y: three values 0.0. The mean over values is 0.25; draws of
    # both groups give 0.25, two x's 1.0 and two y's 0.0.
    est, low, high = interval([1.0, 0.0, 0.0, 0.0], groups=["x", "y", "y", "y"], n_boot=500)
    assert est == 0.25 and low == 0.0 and high == 1.0


def test_ratio_of_sums_is_fidelity_reduction():
    l1_edit = np.array([0.1, 0.2, 0.3, 0.0])
    l1_input = np.array([0.4, 0.4, 0.6, 0.2])
    est, low, high = ratio_interval(l1_input - l1_edit, l1_input, groups=[0, 0, 1, 1])
    assert est == pytest.approx(1 - 0.6 / 1.6)
    assert low <= est <= high
    # Scene 0 alone: 1 - 0.3/0.8; scene 1 alone: 1 - 0.3/0.8 as well: the draws never move.
    assert (low, high) == pytest.approx((1 - 0.3 / 0.8, 1 - 0.3 / 0.8))


def test_multi_column_statistic_mean_of_per_attribute_accuracies():
    # Column 0: correct, column 1: attribute. Color 2/4 right, sleeve 2/2: the mean is 0.75,
    # not the pooled 4/6.
    rows = np.array([[1, 0], [0, 0], [1, 0], [0, 0], [1, 1], [1, 1]], dtype=float)

    def mean_of_attributes(v):
        return np.mean([v[v[:, 1] == a, 0].mean() for a in (0, 1)])

    est, low, high = interval(rows, statistic=mean_of_attributes, groups=[0, 0, 1, 1, 2, 3])
    assert est == pytest.approx(0.75)
    assert low <= est <= high <= 1.0


def test_wilson_matches_the_textbook_values():
    # z = 1.96: 50 of 100, and the two ends, where the normal (Wald) interval would collapse
    # to a point and the Wilson interval keeps a width.
    assert wilson(50, 100) == pytest.approx((0.5, 0.4038, 0.5962), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((1.0, 0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) == (None, None, None)


def test_wilson_narrows_with_more_items():
    small, large = wilson(97, 100), wilson(9700, 10000)
    assert small[1] < large[1] < 0.97 < large[2] < small[2]
