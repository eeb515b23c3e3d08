"""Paired statistics: McNemar's exact test, a bootstrap interval, fold intervals."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.metrics.paired import mean_interval, paired_comparison


def test_identical_outcomes_show_no_difference():
    a = np.array([True] * 70 + [False] * 30)
    result = paired_comparison("caught", a, a.copy())
    assert result.p_value == 1.0 and result.verdict == "no difference shown"
    assert result.difference == 0 and result.low == result.high == 0


def test_a_clear_difference_is_shown_with_the_right_sign():
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.6
    b = a.copy()
    b[np.flatnonzero(~a)[:40]] = True  # B catches 40 more images, loses none
    result = paired_comparison("caught", a, b)
    assert (result.only_a, result.only_b) == (0, 40)
    assert result.p_value < 1e-6 and result.verdict == "B higher"
    assert result.low > 0 and result.difference == pytest.approx(40 / 400)


def test_a_few_discordant_images_either_way_are_noise():
    a = np.array([True, False] * 50)
    b = a.copy()
    b[:3] = ~b[:3]  # 2 gained, 1 lost
    result = paired_comparison("caught", a, b)
    assert result.verdict == "no difference shown" and result.low < 0 < result.high


def test_fold_interval_is_students_t():
    from scipy import stats

    values = [0.9, 0.92, 0.94, 0.91, 0.93]
    interval = mean_interval(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert interval.mean == pytest.approx(0.92) and interval.high - interval.mean == pytest.approx(half)
    assert mean_interval([0.5]).low == 0.5
