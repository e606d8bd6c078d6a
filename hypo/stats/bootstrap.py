"""Bootstrap confidence intervals by resampling patients, seeded and failure-aware."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from .._util import rng_for
from .ordinal import fit_proportional_odds

__all__ = ["bootstrap_ci", "bootstrap_proportional_odds"]

#: Resamples by default; enough for percentile 95 % intervals of a few coefficients.
N_RESAMPLES = 200


def bootstrap_ci(
    data: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], pd.Series | dict],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    patient_col: str | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of every value ``statistic`` returns.

    Parameters
    ----------
    data : DataFrame
        Analysis table.
    statistic : callable
        ``statistic(df) -> Series or dict`` of named numbers (e.g. coefficients). A
        resample on which it raises ``ValueError`` (non-convergence, separation, a level
        missing) is counted as failed and left out; the count is reported.
    n_resamples : int
        Number of resamples (default 200).
    seed : int
        Resample ``b`` draws from ``rng_for(seed, "bootstrap", b)``: the same seed gives the
        same intervals regardless of anything else.
    patient_col : str, optional
        Resample whole patients (all their rows) when a patient has several rows;
        by default each row is a patient.
    alpha : float
        1 - coverage of the intervals.

    Returns
    -------
    DataFrame
        Indexed by statistic name: ``estimate`` (on the full data), ``boot_se``,
        ``ci_low``, ``ci_high``, ``n_ok``, ``n_failed``. ``failures`` lists the
        failure messages.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    full = pd.Series(statistic(data), dtype=float)
    if patient_col is None:
        units = np.arange(len(data))
        rows_of = None
    else:
        if patient_col not in data.columns:
            raise ValueError(f"patient column {patient_col!r} is not in the data")
        units = pd.unique(data[patient_col])
        rows_of = {u: np.flatnonzero(data[patient_col].to_numpy() == u) for u in units}
    draws, failures = [], Counter()
    for b in range(n_resamples):
        pick = rng_for(seed, "bootstrap", b).integers(0, len(units), size=len(units))
        if rows_of is None:
            rows = pick
        else:
            rows = np.concatenate([rows_of[units[i]] for i in pick])
        sample = data.iloc[rows].reset_index(drop=True)
        try:
            val = pd.Series(statistic(sample), dtype=float)
        except ValueError as e:
            failures[f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"] += 1
            continue
        draws.append(val.reindex(full.index))
    n_failed = n_resamples - len(draws)
    if draws:
        boot = pd.DataFrame(draws)
        lo = boot.quantile(alpha / 2)
        hi = boot.quantile(1 - alpha / 2)
        se = boot.std(ddof=1)
    else:
        lo = hi = se = pd.Series(np.nan, index=full.index)
    out = pd.DataFrame(
        {
            "estimate": full,
            "boot_se": se,
            "ci_low": lo,
            "ci_high": hi,
            "n_ok": len(draws),
            "n_failed": n_failed,
            "failures": "; ".join(f"{k} (x{v})" for k, v in sorted(failures.items())),
        }
    )
    return out


def bootstrap_proportional_odds(
    data: pd.DataFrame,
    formula: str,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    patient_col: str | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Bootstrap the coefficients of :func:`fit_proportional_odds`.

    Returns
    -------
    DataFrame
        As :func:`bootstrap_ci`, plus ``OR``, ``OR_low``, ``OR_high`` (OR > 1 = worse,
        higher outcome level).
    """

    def coefs(df: pd.DataFrame) -> pd.Series:
        return fit_proportional_odds(df, formula).coef["estimate"]

    out = bootstrap_ci(data, coefs, n_resamples, seed, patient_col, alpha)
    out["OR"] = np.exp(out["estimate"])
    out["OR_low"] = np.exp(out["ci_low"])
    out["OR_high"] = np.exp(out["ci_high"])
    return out
