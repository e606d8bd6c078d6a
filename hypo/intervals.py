"""Confidence intervals for proportions: the one home of the Wilson interval.

A foundation module (like :mod:`hypo._util`): every layer may import it, from the model
evaluation tables (``hypo.nets``) to the Monte-Carlo error of a rejection rate
(``hypo.stats.calibration``). Interval ends are named ``<x>_low`` / ``<x>_high`` in every
table hypo writes.
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.proportion import proportion_confint

__all__ = ["wilson_ci"]


def wilson_ci(count, n, level: float = 0.95):
    """Wilson score interval of ``count`` successes in ``n`` trials (statsmodels).

    Scalars give a pair of floats (NaN, NaN when ``n`` is 0); arrays give a pair of float
    arrays, NaN where ``n`` is 0.
    """
    count_a = np.asarray(count, float)
    n_a = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = proportion_confint(
            count_a, np.where(n_a > 0, n_a, 1), alpha=1 - level, method="wilson"
        )
    lo = np.where(n_a > 0, lo, np.nan)
    hi = np.where(n_a > 0, hi, np.nan)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return np.asarray(lo, float), np.asarray(hi, float)
