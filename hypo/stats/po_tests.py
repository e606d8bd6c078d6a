"""Tests of the proportional-odds assumption and the fits to use where it fails.

* :func:`brant_test` -- Brant (1990) Wald test, as R package ``brant``: the J-1 binary
  logits ``Y > j`` are fitted separately and their slopes compared with their joint
  covariance.
* :func:`nominal_test` -- likelihood-ratio test per term, as R's ``ordinal::nominal_test``:
  the term is given cut-specific effects (a partial proportional-odds model).
* :func:`partial_po_fit` and :func:`per_cut_logistic` -- sensitivity fits.

All cut-specific effects keep the proportional-odds sign: positive = higher (worse) outcome.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, special, stats
from statsmodels.tools.numdiff import approx_fprime

from .ordinal import (
    SEPARATION_EFFECT_PER_SD,
    Z95,
    ConvergenceError,
    OrdinalFitError,
    OrdinalResult,
    SeparationError,
)

__all__ = [
    "PartialPOResult",
    "brant_test",
    "nominal_test",
    "partial_po_fit",
    "per_cut_logistic",
]


def _require_logit(result: OrdinalResult, what: str) -> None:
    if result.link != "logit":
        raise ValueError(f"{what} is defined for the logit link; the model uses {result.link!r}")
    if result.n_levels < 3:
        raise ValueError(
            f"{what}: the outcome {result.outcome!r} has {result.n_levels} levels; proportional "
            f"odds is only testable with 3 or more"
        )


def _term_columns(result: OrdinalResult, terms) -> dict[str, list[str]]:
    available = result.design.term_columns
    if terms is None:
        return dict(available)
    if isinstance(terms, str):
        terms = [terms]
    unknown = [t for t in terms if t not in available]
    if unknown:
        raise ValueError(f"term(s) {unknown} are not in the model; its terms: {list(available)}")
    return {t: available[t] for t in terms}


# --------------------------------------------------------------------------------------
# Brant test
# --------------------------------------------------------------------------------------


def _binary_logits(result: OrdinalResult):
    """Fit logit P(Y > cut_m) = a_m + x' b_m for every cut; return slopes, fitted P, X."""
    X = result.exog.to_numpy(float)
    Xc = np.column_stack([np.ones(len(X)), X])
    J = result.n_levels
    betas, pis = [], []
    for m in range(J - 1):
        z = (result.codes > m).astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("error", category=sm.tools.sm_exceptions.PerfectSeparationWarning)
            try:
                fit = sm.GLM(z, Xc, family=sm.families.Binomial()).fit()
            except (
                sm.tools.sm_exceptions.PerfectSeparationError,
                sm.tools.sm_exceptions.PerfectSeparationWarning,
            ) as e:
                raise SeparationError(
                    f"binary logit {result.outcome} > {result.outcome_levels[m]}: "
                    f"perfect separation ({e}); merge sparse outcome levels"
                ) from e
        if not fit.converged:
            raise ConvergenceError(
                f"binary logit {result.outcome} > {result.outcome_levels[m]} did not converge"
            )
        betas.append(np.asarray(fit.params))
        pis.append(np.asarray(fit.fittedvalues))
    return np.array(betas), np.column_stack(pis), Xc


def brant_test(result: OrdinalResult) -> pd.DataFrame:
    """Brant (1990) Wald test of proportional odds, omnibus and per term.

    Parameters
    ----------
    result : OrdinalResult
        A logit proportional-odds fit with three or more outcome levels.

    Returns
    -------
    DataFrame
        Columns ``term, chi2, df, p``: first the ``omnibus`` row (all slopes equal across
        cuts; df = (J-2) x K), then one row per formula term (df = (J-2) x its columns).
        A small p-value is evidence *against* proportional odds.
    """
    _require_logit(result, "brant_test")
    betas, pi, Xc = _binary_logits(result)
    J1, K1 = betas.shape  # J-1 cuts, K+1 parameters with intercept
    K = K1 - 1
    # Joint covariance of the cut-specific estimates: for cuts m <= l,
    # Cov(b_m, b_l) = (X'W_m X)^-1 X'W_ml X (X'W_l X)^-1 with W_ml = pi_l (1 - pi_m),
    # the covariance of the indicators 1[Y > m] and 1[Y > l].
    info_inv = [
        np.linalg.inv(Xc.T @ (Xc * (pi[:, m] * (1 - pi[:, m]))[:, None])) for m in range(J1)
    ]
    V = np.zeros((J1 * K, J1 * K))
    for m in range(J1):
        for el in range(m, J1):
            wml = pi[:, el] * (1 - pi[:, m])
            block = info_inv[m] @ (Xc.T @ (Xc * wml[:, None])) @ info_inv[el]
            block = block[1:, 1:]
            V[m * K : (m + 1) * K, el * K : (el + 1) * K] = block
            V[el * K : (el + 1) * K, m * K : (m + 1) * K] = block.T
    b = betas[:, 1:].reshape(-1)  # cut-major: b_1, b_2, ...

    def wald(cols: list[int]) -> tuple[float, int]:
        rows = []
        for m in range(1, J1):
            for c in cols:
                d = np.zeros(J1 * K)
                d[c] = 1.0
                d[m * K + c] = -1.0
                rows.append(d)
        D = np.array(rows)
        diff = D @ b
        stat = float(diff @ np.linalg.solve(D @ V @ D.T, diff))
        return stat, len(rows)

    names = list(result.exog.columns)
    out = []
    chi2, df = wald(list(range(K)))
    out.append({"term": "omnibus", "chi2": chi2, "df": df, "p": stats.chi2.sf(chi2, df)})
    for term, cols in result.design.term_columns.items():
        chi2, df = wald([names.index(c) for c in cols])
        out.append({"term": term, "chi2": chi2, "df": df, "p": stats.chi2.sf(chi2, df)})
    return pd.DataFrame(out, columns=["term", "chi2", "df", "p"])


# --------------------------------------------------------------------------------------
# Partial proportional odds (cumulative logit with cut-specific effects for some columns)
# --------------------------------------------------------------------------------------


def _ppo_negloglik_grad(params, codes, X, Z, J):
    """Negative log-likelihood and gradient of logit P(Y<=j) = a_j - x'b - z'g_j."""
    n, k = X.shape
    q = Z.shape[1]
    a = params[: J - 1]
    b = params[J - 1 : J - 1 + k]
    g = params[J - 1 + k :].reshape(J - 1, q) if q else np.zeros((J - 1, 0))
    eta = a[None, :] - (X @ b)[:, None] - Z @ g.T  # n x (J-1)
    F = special.expit(eta)
    Fpad = np.hstack([np.zeros((n, 1)), F, np.ones((n, 1))])
    idx = np.arange(n)
    p = Fpad[idx, codes + 1] - Fpad[idx, codes]
    if np.any(p <= 0):
        # Cut-specific effects crossed: the model gives a negative probability here.
        return np.inf, np.zeros_like(params)
    f = F * (1 - F)
    G = np.zeros((n, J - 1))  # d log p_i / d eta_ij
    up = codes < J - 1
    G[idx[up], codes[up]] = f[idx[up], codes[up]] / p[up]
    lo = codes > 0
    G[idx[lo], codes[lo] - 1] = -f[idx[lo], codes[lo] - 1] / p[lo]
    grad = np.concatenate([G.sum(0), -(X.T @ G.sum(1)), -(G.T @ Z).reshape(-1)])
    return -float(np.sum(np.log(p))), -grad


@dataclass
class PartialPOResult:
    """A partial proportional-odds fit.

    ``coef`` has one row per (cut, column): ``cut`` is ``"all"`` for proportional columns
    and ``"<level_j>|<level_j+1>"`` for the relaxed ones. Positive estimates mean a higher
    (worse) outcome, as in the proportional-odds model.
    """

    coef: pd.DataFrame
    thresholds: pd.DataFrame
    loglik: float
    aic: float
    n: float
    nominal_terms: list
    converged: bool


def partial_po_fit(result: OrdinalResult, terms: str | list[str]) -> PartialPOResult:
    """Refit ``result``'s model letting ``terms`` have cut-specific effects.

    Uses the same rows (and frequency-weight expansion) as ``result``; maximised with
    scipy BFGS on the analytic gradient, started from the proportional-odds solution.

    Raises
    ------
    ConvergenceError
        If the optimiser does not converge (e.g. the cut-specific effects cross).
    """
    _require_logit(result, "partial_po_fit")
    term_cols = _term_columns(result, terms)
    nominal = [c for cols in term_cols.values() for c in cols]
    po_cols = [c for c in result.exog.columns if c not in nominal]
    X = result.exog[po_cols].to_numpy(float)
    Z = result.exog[nominal].to_numpy(float)
    J = result.n_levels
    theta = result.thresholds["estimate"].to_numpy()
    start = np.concatenate(
        [
            theta,
            result.coef.loc[po_cols, "estimate"].to_numpy(),
            np.tile(result.coef.loc[nominal, "estimate"].to_numpy(), J - 1),
        ]
    )
    opt = optimize.minimize(
        _ppo_negloglik_grad,
        start,
        args=(result.codes, X, Z, J),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-7, "maxiter": 5000},
    )
    if not np.isfinite(opt.fun) or not (opt.success or np.max(np.abs(opt.jac)) < 1e-4):
        raise ConvergenceError(
            f"partial proportional-odds fit of {result.formula!r} with cut-specific {list(term_cols)} "
            f"did not converge: {opt.message}"
        )
    hess = approx_fprime(
        opt.x, lambda th: _ppo_negloglik_grad(th, result.codes, X, Z, J)[1], centered=True
    )
    hess = (hess + hess.T) / 2
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError as e:
        raise OrdinalFitError(f"partial PO fit of {result.formula!r}: singular information") from e
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    cuts = [f"{result.outcome_levels[j]}|{result.outcome_levels[j + 1]}" for j in range(J - 1)]
    rows = []
    k = len(po_cols)
    for i, c in enumerate(po_cols):
        rows.append(("all", c, opt.x[J - 1 + i], se[J - 1 + i]))
    for j, cut in enumerate(cuts):
        for i, c in enumerate(nominal):
            pos = J - 1 + k + j * len(nominal) + i
            rows.append((cut, c, opt.x[pos], se[pos]))
    coef = pd.DataFrame(rows, columns=["cut", "term", "estimate", "se"])
    coef = _add_wald(coef)
    coef["note"] = [_separation_note(result, t, e) for t, e in zip(coef["term"], coef["estimate"])]
    thresholds = pd.DataFrame(
        {"estimate": opt.x[: J - 1], "se": se[: J - 1]}, index=pd.Index(cuts, name="cut")
    )
    ll = -float(opt.fun)
    return PartialPOResult(
        coef=coef,
        thresholds=thresholds,
        loglik=ll,
        aic=-2 * ll + 2 * len(opt.x),
        n=result.n,
        nominal_terms=list(term_cols),
        converged=True,
    )


def _add_wald(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["z"] = df["estimate"] / df["se"]
    df["p"] = 2 * stats.norm.sf(np.abs(df["z"]))
    with np.errstate(over="ignore"):
        df["OR"] = np.exp(df["estimate"])
        df["OR_low"] = np.exp(df["estimate"] - Z95 * df["se"])
        df["OR_high"] = np.exp(df["estimate"] + Z95 * df["se"])
    return df


def _separation_note(result: OrdinalResult, column: str, estimate: float) -> str:
    """Flag a cut-specific estimate that diverges (no events on one side of that cut)."""
    sd = float(result.exog[column].std(ddof=0))
    if abs(estimate) * sd > SEPARATION_EFFECT_PER_SD:
        return "separation at this cut: estimate diverges, do not interpret"
    return ""


def nominal_test(result: OrdinalResult) -> pd.DataFrame:
    """Likelihood-ratio test of proportional odds for each term (R ``ordinal::nominal_test``).

    Returns
    -------
    DataFrame
        Columns ``term, chi2, df, p, loglik, note``; df = (J-2) x the term's columns.
        Where the relaxed model cannot be fitted, ``chi2`` and ``p`` are NaN and ``note``
        says why.
    """
    _require_logit(result, "nominal_test")
    rows = []
    for term, cols in result.design.term_columns.items():
        df = (result.n_levels - 2) * len(cols)
        try:
            fit = partial_po_fit(result, term)
        except OrdinalFitError as e:
            rows.append(
                {
                    "term": term,
                    "chi2": np.nan,
                    "df": df,
                    "p": np.nan,
                    "loglik": np.nan,
                    "note": str(e),
                }
            )
            continue
        chi2 = max(2 * (fit.loglik - result.loglik), 0.0)
        rows.append(
            {
                "term": term,
                "chi2": chi2,
                "df": df,
                "p": stats.chi2.sf(chi2, df),
                "loglik": fit.loglik,
                "note": "",
            }
        )
    return pd.DataFrame(rows, columns=["term", "chi2", "df", "p", "loglik", "note"])


def per_cut_logistic(result: OrdinalResult) -> pd.DataFrame:
    """One binary logistic regression per cut, ``Y > level_j`` vs ``Y <= level_j``.

    Returns
    -------
    DataFrame
        Columns ``cut, term, estimate, se, z, p, OR, OR_low, OR_high, po_estimate, n_above``.
        OR > 1 means a higher (worse) outcome, as in the proportional-odds model whose
        common estimate is repeated in ``po_estimate``; under proportional odds the
        per-cut estimates scatter around it.
    """
    X = sm.add_constant(result.exog, has_constant="add")
    rows = []
    for m in range(result.n_levels - 1):
        z = (result.codes > m).astype(float)
        cut = f"{result.outcome} > {result.outcome_levels[m]}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = sm.GLM(z, X, family=sm.families.Binomial()).fit()
        sep = any("separation" in str(w.message).lower() for w in caught)
        for c in result.exog.columns:
            rows.append(
                {
                    "cut": cut,
                    "term": c,
                    "estimate": fit.params[c],
                    "se": fit.bse[c],
                    "po_estimate": result.coef.loc[c, "estimate"],
                    "n_above": int(z.sum()),
                    "note": "perfect separation"
                    if sep
                    else (
                        _separation_note(result, c, fit.params[c])
                        if fit.converged
                        else "not converged"
                    ),
                }
            )
    out = _add_wald(pd.DataFrame(rows))
    return out[
        [
            "cut",
            "term",
            "estimate",
            "se",
            "z",
            "p",
            "OR",
            "OR_low",
            "OR_high",
            "po_estimate",
            "n_above",
            "note",
        ]
    ]
