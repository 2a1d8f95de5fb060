"""Statistics over seeds: t-distribution confidence intervals and paired comparisons.

Every number in a table is a :class:`Summary` of one value per seed. With ``n`` seeds the 95% interval is
``mean ± t(0.975, n-1) · sd / sqrt(n)`` with the sample standard deviation (``ddof=1``); with one seed
there is no interval (``half`` is NaN) and tables say ``n=1`` instead of inventing one.
A paired comparison of two variants uses only the seeds both have: the per-seed differences ``a - b``
are summarised the same way, with a two-sided paired t-test p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

MIN_SEEDS = 3  # below this a table marks the cell: the interval is too wide to mean much


@dataclass(frozen=True)
class Summary:
    """Mean and t-interval of ``n`` per-seed values. NaN fields where they are undefined (n < 2)."""

    n: int
    mean: float
    sd: float
    half: float  # half-width of the interval: mean ± half
    conf: float = 0.95

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    @property
    def few(self) -> bool:
        """True where fewer than :data:`MIN_SEEDS` values exist (the table marks these)."""
        return self.n < MIN_SEEDS

    def scaled(self, k: float) -> Summary:
        """The same summary in other units (e.g. ``k=100`` for percent)."""
        return Summary(self.n, self.mean * k, self.sd * abs(k), self.half * abs(k), self.conf)


def t_critical(n: int, conf: float = 0.95) -> float:
    """Two-sided critical value of Student's t with ``n - 1`` degrees of freedom (NaN for n < 2)."""
    if n < 2:
        return float("nan")
    return float(_st.t.ppf(0.5 + conf / 2.0, n - 1))


def summarize(values: Iterable[float], conf: float = 0.95) -> Summary:
    """Mean ± t-interval of finite ``values`` (NaNs are dropped: a missing seed is not a zero)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Summary(0, float("nan"), float("nan"), float("nan"), conf)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, float("nan"), float("nan"), conf)
    sd = float(x.std(ddof=1))
    return Summary(n, mean, sd, t_critical(n, conf) * sd / math.sqrt(n), conf)


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both variants have: the difference's summary and a paired t-test."""

    diff: Summary
    p_value: float  # two-sided; NaN with fewer than 2 pairs or zero variance of the differences
    seeds: tuple[int, ...]  # the shared seeds the pairs come from, sorted
    only_a: tuple[int, ...]  # seeds with a value for a only (left out of the pairing)
    only_b: tuple[int, ...]


def paired(a: Mapping[int, float], b: Mapping[int, float], conf: float = 0.95) -> Paired:
    """Paired comparison of two variants given ``{seed: value}`` for each; unpaired seeds are reported."""
    fa = {s: v for s, v in a.items() if v is not None and math.isfinite(v)}
    fb = {s: v for s, v in b.items() if v is not None and math.isfinite(v)}
    shared = tuple(sorted(set(fa) & set(fb)))
    d = [fa[s] - fb[s] for s in shared]
    summ = summarize(d, conf)
    p = float("nan")
    if summ.n >= 2 and summ.sd > 0:
        tstat = summ.mean / (summ.sd / math.sqrt(summ.n))
        p = float(2.0 * _st.t.sf(abs(tstat), summ.n - 1))
    return Paired(summ, p, shared, tuple(sorted(set(fa) - set(fb))), tuple(sorted(set(fb) - set(fa))))
