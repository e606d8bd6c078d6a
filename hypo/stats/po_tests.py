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
from scipy import optimize, stats
from statsmodels.tools.numdiff import approx_fprime

from ._cumlogit import ppo_negloglik_grad as _ppo_negloglik_grad
from .ordinal import (
    Z95,
    ConvergenceError,
    OrdinalFitError,
    OrdinalResult,
    SeparationError,
)
from .separation import find_separation

__all__ = [
    "PartialPOResult",
    "brant_test",
    "nominal_test",
    "partial_po_fit",
    "partial_po_table",
    "per_cut_logistic",
]

#: Columns of :func:`partial_po_table`.
PARTIAL_PO_COLUMNS = [
    "term",
    "column",
    "cut",
    "OR",
    "OR_low",
    "OR_high",
    "p",
    "po_OR",
    "brant_p",
    "nominal_p",
    "lr_chi2",
    "lr_df",
    "lr_p",
    "status",
    "reason",
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
    at_cut = _separated_at_cuts(result)
    cut_index = {cut: j for j, cut in enumerate(cuts)}
    coef["note"] = [
        SEPARATION_NOTE if cut in cut_index and term in at_cut[cut_index[cut]] else ""
        for cut, term in zip(coef["cut"], coef["term"])
    ]
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


def _separated_at_cuts(result: OrdinalResult) -> dict[int, set]:
    """Cut index -> design columns that separate ``Y > level_j`` from ``Y <= level_j``
    (exact check of the binary split at each cut; a cut-specific estimate of such a
    column diverges)."""
    out = {}
    for m in range(result.n_levels - 1):
        sep = find_separation((result.codes > m).astype(int), result.exog)
        out[m] = set(sep.columns) if sep is not None else set()
    return out


SEPARATION_NOTE = "separation at this cut: estimate diverges, do not interpret"


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
    at_cut = _separated_at_cuts(result)
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
                        (SEPARATION_NOTE if c in at_cut[m] else "")
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


def _crossing_patients(result: OrdinalResult, fit: PartialPOResult) -> int:
    """Patients for whom the fitted cumulative probabilities decrease across some cut."""
    J = result.n_levels
    cuts = list(fit.thresholds.index)
    eta = np.tile(fit.thresholds["estimate"].to_numpy(), (len(result.codes), 1))
    for _, r in fit.coef.iterrows():
        x = result.exog[r["term"]].to_numpy(float)
        if r["cut"] == "all":
            eta -= np.outer(x, np.ones(J - 1)) * r["estimate"]
        else:
            eta[:, cuts.index(r["cut"])] -= x * r["estimate"]
    return int(np.sum(np.any(np.diff(eta, axis=1) <= 0, axis=1)))


def partial_po_table(result: OrdinalResult, alpha: float = 0.05) -> pd.DataFrame:
    """Per-cut odds ratios for every term whose proportional-odds check fails.

    A term fails when its Brant test or its nominal (LR) test has p < ``alpha``. Each
    failing term is refitted with cut-specific effects (:func:`partial_po_fit`, the other
    terms keep a common effect) and reported cut by cut, with the likelihood-ratio test of
    that partial model against the proportional-odds one. A secondary table: the common
    OR of the proportional-odds fit stays the primary estimate.

    A term whose partial fit does not converge, is singular, or gives crossing cumulative
    probabilities (a negative probability of some level for some patient) gets one row with
    ``status = "not estimable"`` and the reason; a single cut whose binary split is
    separated by the column gets that status on its row.

    Returns
    -------
    DataFrame
        :data:`PARTIAL_PO_COLUMNS`: ``term`` (formula term), ``column`` (design column),
        ``cut`` (``"2|3"``: OR for a level above 2 vs 2 or below), ``OR, OR_low, OR_high,
        p`` (Wald, OR > 1 = worse), ``po_OR`` (the common OR), ``brant_p, nominal_p``,
        ``lr_chi2, lr_df, lr_p`` (partial vs proportional odds), ``status`` (``estimated``
        or ``not estimable``) and ``reason``. Empty when every term passes.
    """
    _require_logit(result, "partial_po_table")
    try:
        brant = brant_test(result).set_index("term")["p"]
    except (OrdinalFitError, np.linalg.LinAlgError) as e:
        brant = pd.Series(dtype=float)
        brant_error = f"Brant test not available ({type(e).__name__}: {e})"
    else:
        brant_error = ""
    nominal = nominal_test(result).set_index("term")
    rows = []
    for term, cols in result.design.term_columns.items():
        bp = float(brant.get(term, np.nan))
        npv = float(nominal.loc[term, "p"]) if term in nominal.index else np.nan
        if not ((np.isfinite(bp) and bp < alpha) or (np.isfinite(npv) and npv < alpha)):
            continue
        base = {
            "term": term,
            "brant_p": bp,
            "nominal_p": npv,
            "lr_df": len(cols) * (result.n_levels - 2),
        }
        reason = ""
        try:
            fit = partial_po_fit(result, term)
        except (OrdinalFitError, np.linalg.LinAlgError) as e:
            reason = f"did not converge: {type(e).__name__}: {e}"
        else:
            n_cross = _crossing_patients(result, fit)
            if n_cross:
                reason = (
                    f"crossing probabilities: the cut-specific effects give {n_cross} "
                    f"patient(s) a negative probability of some level"
                )
        if reason:
            rows.append({**base, "column": ", ".join(cols), "cut": "all",
                         "status": "not estimable", "reason": reason + (f"; {brant_error}" if brant_error else "")})  # fmt: skip
            continue
        chi2 = max(2 * (fit.loglik - result.loglik), 0.0)
        lr = {"lr_chi2": chi2, "lr_p": float(stats.chi2.sf(chi2, base["lr_df"]))}
        for _, r in fit.coef[fit.coef["term"].isin(cols)].iterrows():
            sep = bool(r["note"])
            rows.append(
                {
                    **base,
                    **lr,
                    "column": r["term"],
                    "cut": r["cut"],
                    "OR": r["OR"],
                    "OR_low": np.nan if sep else r["OR_low"],
                    "OR_high": np.nan if sep else r["OR_high"],
                    "p": np.nan if sep else r["p"],
                    "po_OR": float(result.coef.loc[r["term"], "OR"]),
                    "status": "not estimable" if sep else "estimated",
                    "reason": "separation: no patient on one side of this cut at some "
                    "value of the column, the estimate diverges"
                    if sep
                    else brant_error,
                }
            )
    out = pd.DataFrame(rows)
    for c in PARTIAL_PO_COLUMNS:
        if c not in out.columns:
            out[c] = pd.Series(
                dtype=object if c in ("term", "column", "cut", "status", "reason") else float
            )
    return out[PARTIAL_PO_COLUMNS]
