"""Codings of the modified Rankin Scale and one entry point that fits the matching model.

=====================  ===================================  ==================  ============
coding                 values                               model               higher is
=====================  ===================================  ==================  ============
``mrs``                0-6 (ordered)                        proportional odds   worse
``mrs_5_6_merged``     0-5, death (6) merged into 5         proportional odds   worse
``mrs_0_2_vs_3_6``     1 = mRS 3-6 (dependent or dead)      logistic            worse
``mrs_0_1_vs_2_6``     1 = mRS 2-6                          logistic            worse
``utility``            DEFUSE 3 utility weights (0-1)       linear              better
=====================  ===================================  ==================  ============

The dichotomies are coded so that, as in the proportional-odds model, OR > 1 means a
worse outcome. Utility-weighted mRS runs the other way: a positive slope is better.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from ._design import build_design
from .ordinal import (
    Z95,
    ConvergenceError,
    SeparationError,
    fit_proportional_odds,
)
from .separation import find_separation

__all__ = ["CODINGS", "UTILITY_WEIGHTS_DEFUSE3", "OutcomeCoding", "code_outcome", "fit_outcome"]

#: Utility weights for mRS 0..6 (Chaisinanunkul et al., Stroke 2015;46:2238-43; used by DAWN
#: and DEFUSE 3). 1 = no symptoms, 0 = dead; mRS 5 is valued as death.
UTILITY_WEIGHTS_DEFUSE3 = (1.0, 0.91, 0.76, 0.65, 0.33, 0.0, 0.0)


@dataclass(frozen=True)
class OutcomeCoding:
    """How an mRS coding is analysed and which way it points."""

    name: str
    model: str  # "proportional_odds" | "logistic" | "linear"
    higher_is: str  # "worse" | "better"
    description: str


CODINGS = {
    c.name: c
    for c in (
        OutcomeCoding("mrs", "proportional_odds", "worse", "mRS 0-6, shift analysis"),
        OutcomeCoding(
            "mrs_5_6_merged", "proportional_odds", "worse", "mRS 0-5 with death (6) merged into 5"
        ),
        OutcomeCoding("mrs_0_2_vs_3_6", "logistic", "worse", "1 = mRS 3-6 (not independent)"),
        OutcomeCoding("mrs_0_1_vs_2_6", "logistic", "worse", "1 = mRS 2-6"),
        OutcomeCoding(
            "utility", "linear", "better", "utility-weighted mRS (DEFUSE 3 weights, 1 = best)"
        ),
    )
}


def _check_mrs(mrs, name: str) -> pd.Series:
    s = pd.Series(mrs) if not isinstance(mrs, pd.Series) else mrs
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = pd.Series(np.asarray(s.astype(object), dtype=float), index=s.index, name=s.name)
    v = pd.to_numeric(s, errors="coerce")
    bad = s.notna() & (v.isna() | ~v.isin(range(7)))
    if bad.any():
        raise ValueError(
            f"{name}: mRS must be a whole number 0-6 (or missing); found "
            f"{s[bad].unique()[:5].tolist()} at rows {list(s.index[bad][:5])}"
        )
    return v.astype(float)


def code_outcome(mrs, coding: str = "mrs") -> pd.Series:
    """Recode mRS (0-6) for one analysis; missing values stay missing.

    Parameters
    ----------
    mrs : array-like or Series
        Modified Rankin Scale scores, whole numbers 0-6.
    coding : str
        One of :data:`CODINGS` (see the module table).

    Returns
    -------
    Series
        Ordered categorical for ``mrs`` / ``mrs_5_6_merged``; float 0/1 for the
        dichotomies; float utility for ``utility``.
    """
    if coding not in CODINGS:
        raise ValueError(f"coding {coding!r}: expected one of {list(CODINGS)}")
    name = getattr(mrs, "name", None) or "mrs"
    v = _check_mrs(mrs, str(name))
    if coding == "mrs":
        out = pd.Categorical(v, categories=list(range(7)), ordered=True)
    elif coding == "mrs_5_6_merged":
        out = pd.Categorical(v.clip(upper=5), categories=list(range(6)), ordered=True)
    elif coding == "mrs_0_2_vs_3_6":
        out = np.where(v.isna(), np.nan, (v >= 3).astype(float))
    elif coding == "mrs_0_1_vs_2_6":
        out = np.where(v.isna(), np.nan, (v >= 2).astype(float))
    else:
        out = v.map(dict(enumerate(UTILITY_WEIGHTS_DEFUSE3)))
    return pd.Series(out, index=v.index, name=f"{name}_{coding}")


def _direction(coding: OutcomeCoding, term: str, estimate: float) -> str:
    if not np.isfinite(estimate):
        return "not estimable"
    worse = (estimate > 0) == (coding.higher_is == "worse")
    if estimate == 0:
        return f"no association of {term} with outcome"
    scale = (
        "OR > 1 means worse outcome (higher mRS)"
        if coding.model != "linear"
        else "slope > 0 means better outcome (higher utility)"
    )
    return f"higher {term} -> {'worse' if worse else 'better'} outcome; {scale}"


def _fit_glm(data, formula, model, weights, cov_type, groups):
    design = build_design(data, formula, weights=weights, groups=groups)
    X = sm.add_constant(design.X, has_constant="add")
    y = design.y.to_numpy(dtype=float)
    kw = {}
    if cov_type == "cluster":
        if design.groups is None:
            raise ValueError("cov_type='cluster' needs groups=")
        kw = {"cov_type": "cluster", "cov_kwds": {"groups": pd.factorize(design.groups)[0]}}
    elif cov_type != "nonrobust":
        kw = {"cov_type": cov_type}
    family = sm.families.Binomial() if model == "logistic" else sm.families.Gaussian()
    if model == "logistic" and len(np.unique(y)) < 2:
        raise ValueError(f"{formula!r}: the binary outcome has a single observed value")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = sm.GLM(y, X, family=family, freq_weights=design.weights).fit(**kw)
    if model == "logistic":
        # Exact check (a linear programme on the data), not a threshold on the effect size.
        sep = find_separation(y.astype(int), design.X)
        if any("separation" in str(w.message).lower() for w in caught) or sep is not None:
            raise SeparationError(
                f"{formula!r}: (quasi-)complete separation in the logistic fit"
                + (f": {sep.describe()}" if sep is not None else "")
            )
        if not fit.converged:
            raise ConvergenceError(f"{formula!r}: logistic IRLS did not converge")
    n = float(design.weights.sum()) if design.weights is not None else float(len(y))
    return fit, design, n


#: Columns of :func:`fit_outcome`'s table, in order.
OUTCOME_FIT_COLUMNS = ("term", "estimate", "se", "p", "OR", "OR_low", "OR_high", "ci_low",
                       "ci_high", "n", "model", "coding", "outcome", "direction", "ci_method",
                       "fit_warnings")  # fmt: skip


def fit_outcome(
    data: pd.DataFrame,
    formula_rhs: str,
    outcome_col: str = "mrs_3months",
    coding: str = "mrs",
    weights=None,
    cov_type: str = "nonrobust",
    groups=None,
    ci: str = "wald",
) -> pd.DataFrame:
    """Code the outcome, fit the model that coding calls for and return a tidy table.

    Parameters
    ----------
    data : DataFrame
        One row per patient, with ``outcome_col`` holding mRS 0-6.
    formula_rhs : str
        Right-hand side, e.g. ``"asymmetry_index + lesion_volume_ml + C(side)"``.
    outcome_col, coding : str
        mRS column and one of :data:`CODINGS`.
    weights, cov_type, groups
        As in :func:`hypo.stats.fit_proportional_odds`.
    ci : {"wald", "profile"}
        Interval of a proportional-odds fit (profile likelihood: ``ci="profile"`` of
        :func:`hypo.stats.fit_proportional_odds`); the other models use Wald (t for linear).

    Returns
    -------
    DataFrame
        One row per design column: ``term, estimate, se, p, OR, OR_low, OR_high, ci_low,
        ci_high, n, model, coding, outcome, direction, ci_method, fit_warnings``. ``OR*``
        are NaN for the linear (utility) model; ``ci_*`` is the 95 % interval of
        ``estimate`` (``ci_method``); ``fit_warnings`` joins the fit's warnings with "; ".
    """
    if coding not in CODINGS:
        raise ValueError(f"coding {coding!r}: expected one of {list(CODINGS)}")
    if outcome_col not in data.columns:
        raise ValueError(
            f"outcome column {outcome_col!r} is not in the data; available: {list(data.columns)}"
        )
    if ci not in ("wald", "profile"):
        raise ValueError(f"ci {ci!r}: expected 'wald' or 'profile'")
    spec = CODINGS[coding]
    coded = code_outcome(data[outcome_col].rename(outcome_col), coding)
    ycol = coded.name
    frame = data.copy()
    frame[ycol] = coded.to_numpy()
    formula = f"{ycol} ~ {formula_rhs}"
    if spec.model == "proportional_odds":
        res = fit_proportional_odds(
            frame, formula, weights=weights, cov_type=cov_type, groups=groups, ci=ci
        )
        est, se, p, n = res.coef["estimate"], res.coef["se"], res.coef["p"], res.n
        terms = res.coef.index
        ci_method, fit_warnings = res.ci_method, "; ".join(res.fit_warnings)
    else:
        fit, _, n = _fit_glm(frame, formula, spec.model, weights, cov_type, groups)
        keep = [c for c in fit.params.index if c != "const"]
        est, se = fit.params[keep], fit.bse[keep]
        if spec.model == "linear":
            # Gaussian GLM reports normal p-values; a linear model wants Student's t.
            p = 2 * stats.t.sf(np.abs(est / se), fit.df_resid)
        else:
            p = 2 * stats.norm.sf(np.abs(est / se))
        terms = pd.Index(keep)
        ci_method, fit_warnings = ("t" if spec.model == "linear" else "wald"), ""
    est, se, p = (np.asarray(a, dtype=float) for a in (est, se, p))
    crit = stats.t.ppf(0.975, fit.df_resid) if spec.model == "linear" else Z95
    out = pd.DataFrame(
        {
            "term": list(terms),
            "estimate": est,
            "se": se,
            "p": p,
            "ci_low": est - crit * se,
            "ci_high": est + crit * se,
        }
    )
    if spec.model == "linear":
        out["OR"] = out["OR_low"] = out["OR_high"] = np.nan
    elif ci_method == "profile":
        out["OR"] = np.exp(est)
        out["OR_low"], out["OR_high"] = (
            res.coef["OR_low"].to_numpy(),
            res.coef["OR_high"].to_numpy(),
        )
        out["ci_low"], out["ci_high"] = np.log(out["OR_low"]), np.log(out["OR_high"])
    else:
        out["OR"] = np.exp(est)
        out["OR_low"] = np.exp(out["ci_low"])
        out["OR_high"] = np.exp(out["ci_high"])
    out["n"] = n
    out["model"] = spec.model
    out["coding"] = coding
    out["outcome"] = outcome_col
    out["direction"] = [_direction(spec, t, e) for t, e in zip(out["term"], est)]
    out["ci_method"] = ci_method
    out["fit_warnings"] = fit_warnings
    return out[list(OUTCOME_FIT_COLUMNS)]
