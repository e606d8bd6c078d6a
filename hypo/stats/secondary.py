"""Secondary analyses with pingouin, returned with hypo's column names (``p``, ``q``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pingouin as pg

from .multiplicity import bh_qvalues
from .outcomes import code_outcome

__all__ = ["compare_outcome_groups", "partial_spearman"]


def _need(data: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise ValueError(
            f"{what}: column(s) {missing} not in the data; available: {list(data.columns)}"
        )


def partial_spearman(data: pd.DataFrame, x: str, y: str, covar: str | list[str]) -> pd.DataFrame:
    """Spearman partial correlation of ``x`` and ``y`` adjusted for ``covar``.

    Wraps ``pingouin.partial_corr(method="spearman")`` (rows with a missing value in any
    of the columns are dropped).

    Returns
    -------
    DataFrame
        One row: ``x, y, covar, n, r, ci_low, ci_high, p``.
    """
    covar = [covar] if isinstance(covar, str) else list(covar)
    _need(data, [x, y, *covar], "partial_spearman")
    sub = data[[x, y, *covar]].dropna()
    need = len(covar) + 4  # pingouin's t-based p and Fisher-z CI need n - k - 3 > 0
    if len(sub) < need:
        raise ValueError(f"partial_spearman: {len(sub)} patients with every value, fewer "
                         f"than the {need} a partial correlation adjusted for {len(covar)} "
                         "covariate(s) needs")  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = pg.partial_corr(data=sub, x=x, y=y, covar=covar, method="spearman")
    if any("rank-deficient" in str(w.message) for w in caught):
        raise ValueError(f"partial_spearman: the covariates {covar} are collinear in these "
                         f"{len(sub)} patients (rank-deficient); no partial correlation")  # fmt: skip
    for w in caught:  # anything else stays a warning, raised from here
        warnings.warn(str(w.message), w.category, stacklevel=2)
    ci = np.asarray(res["CI95"].iloc[0] if "CI95" in res else res["CI95%"].iloc[0], dtype=float)
    return pd.DataFrame(
        {
            "x": [x],
            "y": [y],
            "covar": [", ".join(covar)],
            "n": [int(res["n"].iloc[0])],
            "r": [float(res["r"].iloc[0])],
            "ci_low": [ci[0]],
            "ci_high": [ci[1]],
            "p": [float(res["p_val"].iloc[0] if "p_val" in res else res["p-val"].iloc[0])],
        }
    )


def compare_outcome_groups(
    data: pd.DataFrame, features: list[str], outcome_col: str = "mrs_3months"
) -> pd.DataFrame:
    """Mann-Whitney U comparison of features between mRS 0-2 and mRS 3-6, BH over features.

    Returns
    -------
    DataFrame
        One row per feature: ``feature, n_good, n_poor, median_good, median_poor, U, RBC,
        CLES, p, q``. ``good`` = mRS 0-2 (functional independence); pingouin's ``RBC``
        (rank-biserial) and ``CLES`` are for good vs poor, so CLES > 0.5 means larger
        values in the good-outcome group.
    """
    if isinstance(features, str):
        features = [features]
    _need(data, [outcome_col, *features], "compare_outcome_groups")
    poor = code_outcome(data[outcome_col], "mrs_0_2_vs_3_6")
    rows = []
    for f in features:
        v = pd.to_numeric(data[f], errors="coerce")
        ok = v.notna() & poor.notna()
        good_v, poor_v = v[ok & (poor == 0)].to_numpy(), v[ok & (poor == 1)].to_numpy()
        if len(good_v) == 0 or len(poor_v) == 0:
            raise ValueError(
                f"feature {f!r}: one outcome group is empty after dropping missing values"
            )
        res = pg.mwu(good_v, poor_v, alternative="two-sided")
        pcol = "p_val" if "p_val" in res else "p-val"
        ucol = "U_val" if "U_val" in res else "U-val"
        rows.append(
            {
                "feature": f,
                "n_good": len(good_v),
                "n_poor": len(poor_v),
                "median_good": float(np.median(good_v)),
                "median_poor": float(np.median(poor_v)),
                "U": float(res[ucol].iloc[0]),
                "RBC": float(res["RBC"].iloc[0]),
                "CLES": float(res["CLES"].iloc[0]),
                "p": float(res[pcol].iloc[0]),
            }
        )
    out = pd.DataFrame(rows)
    out["q"] = bh_qvalues(out["p"].to_numpy())
    return out
