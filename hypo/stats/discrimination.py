"""Discrimination and calibration of ordinal outcome models, in-sample or cross-validated.

* Harrell's C = (1 + Somers' D)/2 between the linear predictor and the outcome, over
  patient pairs whose outcomes differ.
* Ordinal c-index (Van Calster et al. 2012): the mean over all pairs of outcome levels of
  the AUC separating the higher level from the lower one.
Both are 0.5 for a useless predictor and 1 for a perfect one; "higher predictor, higher
outcome" counts as concordant (the proportional-odds sign).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from ._design import build_design, ordinal_codes
from .ordinal import fit_proportional_odds

__all__ = [
    "calibration_table",
    "cross_validated_predictions",
    "cv_discrimination",
    "harrell_c",
    "ordinal_c_index",
    "stratified_folds",
]


def _as_pair(predictor, outcome) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(predictor, dtype=float)
    if isinstance(outcome, pd.Series) and isinstance(outcome.dtype, pd.CategoricalDtype):
        y = outcome.cat.codes.to_numpy().astype(float)
    else:
        y = np.asarray(outcome, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"predictor {x.shape} and outcome {y.shape} must be 1-D of equal length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("predictor and outcome must be finite (drop missing values first)")
    if len(np.unique(y)) < 2:
        raise ValueError("the outcome has a single level; discrimination is undefined")
    return x, y


def harrell_c(predictor, outcome) -> float:
    """Harrell's C between a predictor and an ordinal outcome, (1 + Somers' D_xy)/2.

    Pairs tied on the outcome are not counted; pairs tied on the predictor count 1/2.
    """
    x, y = _as_pair(predictor, outcome)
    # somersd(y, x) conditions on pairs untied in y, which is Harrell's definition.
    return float((1 + stats.somersd(y, x).statistic) / 2)


def ordinal_c_index(predictor, outcome) -> float:
    """Ordinal c-index: mean of the AUCs of every pair of observed outcome levels."""
    x, y = _as_pair(predictor, outcome)
    levels = np.unique(y)
    aucs = []
    for lo, hi in itertools.combinations(levels, 2):
        m = (y == lo) | (y == hi)
        aucs.append(roc_auc_score(y[m] == hi, x[m]))
    return float(np.mean(aucs))


def stratified_folds(
    outcome, n_splits: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold splits that keep every outcome level in every training set.

    Raises
    ------
    ValueError
        If a level has fewer than 2 patients (it would be missing from some training set):
        merge sparse levels first (e.g. coding ``mrs_5_6_merged``).
    """
    y = pd.Series(np.asarray(outcome)).astype(str).to_numpy()
    levels, counts = np.unique(y, return_counts=True)
    sparse = {str(lv): int(c) for lv, c in zip(levels, counts) if c < 2}
    if sparse:
        raise ValueError(
            f"outcome level(s) {sparse} have fewer than 2 patients; a fold would train without "
            f"them. Merge sparse levels before cross-validation"
        )
    if not 2 <= n_splits <= len(y):
        raise ValueError(f"n_splits must be in 2..{len(y)}, got {n_splits}")
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A level rarer than n_splits is spread one patient per fold, which is what we want.
        warnings.filterwarnings("ignore", message="The least populated class")
        folds = list(skf.split(np.zeros(len(y)), y))
    for f, (train, _) in enumerate(folds):
        missing = set(levels) - set(y[train])
        if missing:
            raise ValueError(
                f"fold {f} would train without outcome levels {sorted(missing)}; merge sparse levels"
            )
    return folds


def cross_validated_predictions(
    data: pd.DataFrame, formula: str, n_splits: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Out-of-fold linear predictor and level probabilities of a proportional-odds model.

    Returns
    -------
    DataFrame
        Indexed like the complete-case rows of ``data``: ``fold``, ``outcome_code``
        (0..K-1), ``linear_predictor`` (higher = worse) and one ``P(<level>)`` column per
        outcome level.
    """
    design = build_design(data, formula)
    codes, levels = ordinal_codes(design.y, design.outcome)
    frame = data.loc[design.index]
    folds = stratified_folds(codes, n_splits, seed)
    lp = np.full(len(codes), np.nan)
    probs = np.full((len(codes), len(levels)), np.nan)
    fold_id = np.full(len(codes), -1)
    for f, (train, test) in enumerate(folds):
        res = fit_proportional_odds(frame.iloc[train], formula)
        lp[test] = res.linear_predictor(frame.iloc[test])
        probs[test] = res.predict_proba(frame.iloc[test]).to_numpy()
        fold_id[test] = f
    out = pd.DataFrame(
        {"fold": fold_id, "outcome_code": codes, "linear_predictor": lp}, index=design.index
    )
    for j, lv in enumerate(levels):
        out[f"P({lv})"] = probs[:, j]
    return out


def cv_discrimination(
    data: pd.DataFrame, formula: str, n_splits: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Cross-validated Harrell's C and ordinal c-index (pooled out-of-fold predictions).

    Returns
    -------
    DataFrame
        Columns ``metric, in_sample, cross_validated, n, n_splits, seed``.
    """
    cv = cross_validated_predictions(data, formula, n_splits, seed)
    full = fit_proportional_odds(data, formula)
    lp_in = full.linear_predictor()
    y = cv["outcome_code"].to_numpy()
    rows = [
        ("harrell_c", harrell_c(lp_in, full.codes), harrell_c(cv["linear_predictor"], y)),
        (
            "ordinal_c_index",
            ordinal_c_index(lp_in, full.codes),
            ordinal_c_index(cv["linear_predictor"], y),
        ),
    ]
    out = pd.DataFrame(rows, columns=["metric", "in_sample", "cross_validated"])
    out["n"], out["n_splits"], out["seed"] = len(y), n_splits, seed
    return out


def calibration_table(outcome_code, probabilities, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed P(Y <= cut) for every cumulative cut, by bins of prediction.

    Parameters
    ----------
    outcome_code : array-like of int
        Observed levels coded 0..K-1.
    probabilities : DataFrame or array, shape (n, K)
        Predicted level probabilities (e.g. the ``P(...)`` columns of
        :func:`cross_validated_predictions`).
    n_bins : int
        Quantile bins (deciles by default) of the predicted cumulative probability.

    Returns
    -------
    DataFrame
        ``cut, bin, n, predicted, observed`` where ``cut`` = j means ``P(Y <= level_j)``.
    """
    y = np.asarray(outcome_code, dtype=int)
    P = np.asarray(probabilities, dtype=float)
    if P.ndim != 2 or P.shape[0] != len(y):
        raise ValueError(f"probabilities must be (n={len(y)}, K), got {P.shape}")
    if y.min() < 0 or y.max() >= P.shape[1]:
        raise ValueError(f"outcome codes must lie in 0..{P.shape[1] - 1}")
    cum = np.cumsum(P, axis=1)
    rows = []
    for j in range(P.shape[1] - 1):
        pred = cum[:, j]
        obs = (y <= j).astype(float)
        bins = pd.qcut(pd.Series(pred).rank(method="first"), q=min(n_bins, len(y)), labels=False)
        for b, idx in pd.Series(np.arange(len(y))).groupby(bins.to_numpy()):
            rows.append(
                {
                    "cut": j,
                    "bin": int(b),
                    "n": len(idx),
                    "predicted": pred[idx].mean(),
                    "observed": obs[idx].mean(),
                }
            )
    return pd.DataFrame(rows)
