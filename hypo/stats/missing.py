"""Missing data: complete-case analysis (default) and multiple imputation (sensitivity).

Multiple imputation uses statsmodels' chained equations (``MICEData``, predictive mean
matching, so an imputed mRS is always an observed mRS value); the proportional-odds fits
on the imputed data sets are pooled here with Rubin's rules, because statsmodels' ``MICE``
class only pools its own model types.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.imputation.mice import MICEData

from ._design import formula_columns, split_formula
from .ordinal import fit_proportional_odds

__all__ = ["complete_case", "mice_proportional_odds", "rubin_pool"]


def complete_case(data: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows with no missing value in ``columns``, and a report of what was dropped.

    Returns
    -------
    kept : DataFrame
    report : DataFrame
        One row per column: ``column, n_missing``, then a row ``column = "any"`` with the
        number of rows dropped in total (a row missing several columns counts once).
    """
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the data; available: {list(data.columns)}")
    na = data[columns].isna()
    keep = ~na.any(axis=1)
    report = pd.DataFrame(
        {
            "column": [*columns, "any"],
            "n_missing": [*na.sum().to_numpy().astype(int), int((~keep).sum())],
        }
    )
    return data.loc[keep], report


def rubin_pool(estimates, variances, df_complete: float | None = None) -> pd.DataFrame:
    """Pool m sets of estimates with Rubin's rules (Barnard-Rubin degrees of freedom).

    Parameters
    ----------
    estimates, variances : DataFrame, shape (m, k)
        Per-imputation estimates and their squared standard errors; columns = terms.
    df_complete : float, optional
        Complete-data degrees of freedom (n - parameters) for the small-sample correction;
        None = large sample.

    Returns
    -------
    DataFrame
        Indexed by term: ``estimate, se, df, p, ci_low, ci_high, fmi`` (t-based interval).
    """
    Q = pd.DataFrame(estimates)
    U = pd.DataFrame(variances)
    m = len(Q)
    if m < 2:
        raise ValueError(f"Rubin's rules need at least 2 imputations, got {m}")
    qbar = Q.mean()
    ubar = U.mean()
    b = Q.var(ddof=1)
    t = ubar + (1 + 1 / m) * b
    lam = ((1 + 1 / m) * b / t).clip(lower=1e-12)
    df_old = (m - 1) / lam**2
    if df_complete is not None:
        df_obs = (df_complete + 1) / (df_complete + 3) * df_complete * (1 - lam)
        df = 1 / (1 / df_old + 1 / df_obs)
    else:
        df = df_old
    se = np.sqrt(t)
    tq = stats.t.ppf(0.975, df)
    r = (1 + 1 / m) * b / ubar
    fmi = (r + 2 / (df + 3)) / (r + 1)
    return pd.DataFrame(
        {
            "estimate": qbar,
            "se": se,
            "df": df,
            "p": 2 * stats.t.sf(np.abs(qbar / se), df),
            "ci_low": qbar - tq * se,
            "ci_high": qbar + tq * se,
            "fmi": fmi,
        }
    )


def mice_proportional_odds(
    data: pd.DataFrame,
    formula: str,
    m: int = 20,
    seed: int = 0,
    auxiliary: list[str] | None = None,
    n_burnin: int = 10,
    n_between: int = 5,
) -> pd.DataFrame:
    """Proportional-odds fit pooled over ``m`` MICE imputations (a sensitivity analysis).

    Parameters
    ----------
    data : DataFrame
        Analysis table; the formula's variables (and ``auxiliary`` ones) must be numeric
        (code categorical covariates as 0/1 first), the outcome integer or ordered
        categorical.
    formula : str
        As in :func:`fit_proportional_odds`.
    m : int
        Number of imputed data sets.
    seed : int
        Seeds the imputation (same seed, same result).
    auxiliary : list of str, optional
        Extra columns that inform the imputation but are not in the model.
    n_burnin, n_between : int
        Chained-equation cycles before the first and between successive data sets.

    Returns
    -------
    DataFrame
        Indexed by term: Rubin-pooled ``estimate, se, df, p, ci_low, ci_high, fmi`` plus
        ``OR, OR_low, OR_high`` (OR > 1 = worse, higher outcome level), and on every row
        ``m`` (imputations), ``n`` (rows) and ``n_imputed`` (rows with something imputed).
    """
    lhs, rhs = split_formula(formula)
    cols = list(dict.fromkeys([lhs, *formula_columns(rhs), *(auxiliary or [])]))
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the data; available: {list(data.columns)}")
    frame = data[cols].copy()
    y = frame[lhs]
    categories = None
    if isinstance(y.dtype, pd.CategoricalDtype):
        if not y.dtype.ordered:
            raise ValueError(f"outcome {lhs!r} is an unordered categorical")
        categories = list(y.cat.categories)
        frame[lhs] = y.cat.codes.where(y.notna()).astype(float)
    non_numeric = [c for c in cols if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise ValueError(
            f"MICE needs numeric columns; {non_numeric} are not (code them as 0/1 or integers)"
        )
    if m < 2:
        raise ValueError(f"m must be >= 2 imputations, got {m}")
    frame = frame.reset_index(drop=True).astype(float)
    n_incomplete = int(frame.isna().any(axis=1).sum())
    imp = MICEData(frame, rng=np.random.default_rng(seed))
    imp.update_all(n_burnin)
    est, var = [], []
    for i in range(m):
        if i:
            imp.update_all(n_between)
        done = imp.data.copy()
        if categories is not None:
            done[lhs] = pd.Categorical.from_codes(
                done[lhs].round().astype(int), categories=categories, ordered=True
            )
        res = fit_proportional_odds(done, formula)
        est.append(res.coef["estimate"])
        var.append(res.coef["se"] ** 2)
    k = len(est[0]) + len(res.thresholds)
    pooled = rubin_pool(pd.DataFrame(est), pd.DataFrame(var), df_complete=len(frame) - k)
    pooled["OR"] = np.exp(pooled["estimate"])
    pooled["OR_low"] = np.exp(pooled["ci_low"])
    pooled["OR_high"] = np.exp(pooled["ci_high"])
    pooled.index.name = "term"
    pooled["m"] = m
    pooled["n"] = len(frame)
    pooled["n_imputed"] = n_incomplete
    return pooled
