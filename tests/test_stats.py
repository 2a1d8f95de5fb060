"""harness.report.stats against textbook values computed without scipy."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from harness.report.stats import MIN_SEEDS, paired, summarize, t_critical

# Two-sided 95% Student t critical values (tables) by degrees of freedom.
T975 = {1: 12.706204736174705, 2: 4.302652729749464, 4: 2.7764451051977987, 9: 2.2621571627409915}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_critical_matches_tables(df):
    assert t_critical(df + 1) == pytest.approx(T975[df], rel=1e-9)
    assert math.isnan(t_critical(1)) and math.isnan(t_critical(0))


def test_summarize_ci_by_hand():
    x = [0.61, 0.64, 0.70]
    s = summarize(x)
    half = T975[2] * statistics.stdev(x) / math.sqrt(3)
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(statistics.fmean(x)), pytest.approx(statistics.stdev(x)))
    assert s.half == pytest.approx(half) and s.lo == pytest.approx(s.mean - half) and not s.few
    p = s.scaled(100)
    assert p.mean == pytest.approx(100 * s.mean) and p.half == pytest.approx(100 * half) and p.n == 3


def test_ci_coverage_is_nominal():
    """Over many normal samples of 3 the 95% t-interval covers the true mean about 95% of the time."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        s = summarize(rng.normal(0.5, 0.1, 3))
        hits += s.lo <= 0.5 <= s.hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_few_seeds_and_missing_values():
    one = summarize([0.7])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.half) and math.isnan(one.sd) and one.few
    none = summarize([])
    assert none.n == 0 and math.isnan(none.mean)
    two = summarize([0.5, float("nan"), 0.7, None])  # NaN/None = a missing seed, not a zero
    assert two.n == 2 and two.mean == pytest.approx(0.6) and two.few
    assert MIN_SEEDS == 3


def test_paired_difference_uses_shared_seeds():
    a = {0: 0.70, 1: 0.74, 2: 0.69, 3: 0.80}
    b = {0: 0.60, 1: 0.66, 2: 0.62, 5: 0.10}
    pr = paired(a, b)
    d = [0.10, 0.08, 0.07]
    assert pr.seeds == (0, 1, 2) and pr.only_a == (3,) and pr.only_b == (5,)
    assert pr.diff.mean == pytest.approx(statistics.fmean(d))
    assert pr.diff.half == pytest.approx(T975[2] * statistics.stdev(d) / math.sqrt(3))
    tstat = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(3))
    # Student t with 2 degrees of freedom has a closed form: two-sided p = 1 - t / sqrt(2 + t^2)
    assert pr.p_value == pytest.approx(1 - tstat / math.sqrt(2 + tstat**2), rel=1e-9)
    # pairing removes the shared per-seed offset: unpaired intervals would overlap, the paired one is tight
    assert pr.diff.half < summarize([a[s] for s in pr.seeds]).half


def test_paired_degenerate_cases():
    same = paired({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same.diff.mean == 0 and math.isnan(same.p_value)
    single = paired({0: 0.5}, {0: 0.4, 1: 0.3})
    assert single.diff.n == 1 and math.isnan(single.diff.half) and math.isnan(single.p_value)
    assert paired({}, {1: 0.3}).diff.n == 0
