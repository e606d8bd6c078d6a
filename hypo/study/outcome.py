"""The patient-level outcome model as a study: data, cross-fitting, evaluation, redraws.

:mod:`hypo.nets.outcome` holds the model (embeddings, poolings, the ordinal head); this
module fits and judges it on a cohort:

1. :func:`outcome_data` -- the analysed patients (stroke patients with a 3-month mRS and
   at least one usable slice; every exclusion counted in ``flow``), their bags of slice
   embeddings, the clinical covariates, the lesion volume from the masks, and on a
   synthetic cohort the generator's truth.
2. :func:`outcome_folds` -- 5 folds by patient, stratified by mRS (levels rarer than the
   number of folds are merged with their neighbour for the stratification only); the
   leakage guard (:func:`hypo.nets.splits.leaked_patients`) checks every fold.
3. :func:`cross_fit` -- every patient gets an out-of-fold prediction from a head that never
   saw them. The image model chooses its pooling and penalty on inner folds of each
   training set (ordinal log-loss); the fusion model reads the same fold's pooling plus
   the clinical covariates (standardised, unpenalised) and chooses its penalty the same
   way. A level absent from a training fold is merged with its neighbour (counted per
   fold); a level absent from the whole cohort is an error.
4. :func:`evaluation_table` -- one table on the same out-of-fold patients: AUC of mRS 3-6
   vs 0-2 (patient bootstrap CI), ordinal C-index, calibration slope, Brier score, for
   lesion volume, clinical covariates, the image model (each pooling as a diagnostic row),
   image + clinical fusion, the two PO oracles on true covariates, and the generator's
   true model.
5. :func:`redraw_comparison` -- outcome noise does not go away by re-splitting, so paired
   differences of AUC are averaged over outcome redraws
   (:func:`hypo.stats.calibration.redraw_mrs`; images, embeddings, folds and each fold's
   pooling fixed, penalties re-chosen and heads refitted), with Monte-Carlo CIs.

Probabilities: ``P(mRS >= 3)`` is the outcome score of every row (AUC, Brier,
calibration slope); the ordinal C-index ranks patients by their expected mRS.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import special, stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

import hypo.cohort as hc
from hypo._util import (
    atomic_path,
    rng_for,
    weights_hash,
    write_json_atomic,
    write_table_atomic,
    write_text_atomic,
)
from hypo.cam.bag import FINE_LAYER, bag_cam_store
from hypo.cam.metrics import relevance_mass_accuracy
from hypo.cohort.layout import MRS_GOOD_MAX, side_right
from hypo.cohort.synthetic import SynthParams
from hypo.cohort.synthetic import clinical as synth_clinical
from hypo.nets.cards import leaked_patients
from hypo.nets.evaluation import markdown_table
from hypo.nets.io import library_versions, load_model
from hypo.nets.outcome import (
    DEFAULT_EMBEDDING_LAYER,
    POOLINGS,
    Bags,
    OrdinalHead,
    SliceEmbeddings,
    build_bag_model,
    cached_embeddings,
    fit_attention_head,
    fit_ordinal_head,
    lesion_extent,
    make_bags,
    ordinal_nll,
    pool_fixed,
    slice_weights,
)
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.stats.calibration import outcome_covariates, redraw_mrs
from hypo.stats.discrimination import ordinal_c_index

#: Clinical covariates of the clinical-only row and of late fusion.
CLINICAL = ("age", "nihss_baseline", "mrs_before")
LEVELS = tuple(range(7))
GOOD_MAX = MRS_GOOD_MAX  # mRS 0-2 = independent
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Principal axes of the pooled image features the head is fitted in (see
#: :func:`hypo.nets.outcome.fit_ordinal_head`).
N_COMPONENTS = 32
#: Poolings the image model chooses from on inner folds (gated attention is learnt per fit
#: and costs ~100x a fixed pooling: it is a diagnostic row unless listed here).
SELECT_FROM = ("mean", "max", "lesion_mean", "volume_sum")


@dataclass
class OutcomeConfig:
    """Settings of the outcome study (defaults of issue 16).

    Attributes
    ----------
    encoder : str
        Model folder whose backbone embeds the slices.
    layer : str
        Embedding layer of the encoder.
    select_from : tuple of str
        Poolings the image model chooses from on inner folds.
    diagnostic_poolings : tuple of str
        Poolings reported as diagnostic rows (each with its penalty chosen on inner folds).
    l2_grid : tuple of float
        Penalties (on standardised features, per patient) tried on inner folds.
    n_components : int or None
        Principal axes of the pooled image features the heads are fitted in.
    n_folds, inner_folds : int
    seed : int
        Folds, bootstrap and redraws derive from it (``rng_for``).
    n_redraws : int
        Outcome redraws of each setting for the paired comparisons.
    strong_swelling_or : float
        Swelling OR per SD of the second redraw setting (image carries more).
    n_boot : int
        Patient bootstrap resamples of the AUC CI.
    groups : tuple of str
        ``participants.tsv`` groups analysed.
    """

    encoder: str = "models/stroke-gap-128"
    layer: str = DEFAULT_EMBEDDING_LAYER
    select_from: tuple = SELECT_FROM
    diagnostic_poolings: tuple = POOLINGS
    l2_grid: tuple = L2_GRID
    n_components: int | None = N_COMPONENTS
    n_folds: int = 5
    inner_folds: int = 3
    seed: int = 0
    n_redraws: int = 50
    strong_swelling_or: float = 3.0
    n_boot: int = 1000
    groups: tuple = ("stroke",)


# --------------------------------------------------------------------------- data


@dataclass
class OutcomeData:
    """The analysed patients of one cohort, ready to fit.

    Attributes
    ----------
    patients : DataFrame
        One row per analysed patient (``participant_id`` column, in bag order):
        ``mrs_3months``, the :data:`CLINICAL` columns, ``lesion_volume_mask_ml``, and on a
        synthetic cohort the true covariates, ``image_lp_true`` (the image part of the
        generator's linear predictor) and ``eta_true`` (its full linear predictor, swelling
        included).
    bags : Bags
    embeddings : SliceEmbeddings
    flow : DataFrame
        ``step, n_before, n_excluded, n_after, reason``: the patient flow.
    cohort_id : str
    params : SynthParams or None
        The generator's parameters (synthetic cohorts).
    covariates : DataFrame or None
        :func:`hypo.stats.calibration.outcome_covariates` of the patients (redraws).
    """

    patients: pd.DataFrame
    bags: Bags
    embeddings: SliceEmbeddings
    flow: pd.DataFrame
    cohort_id: str
    params: SynthParams | None = None
    covariates: pd.DataFrame | None = None
    store: object = field(default=None, repr=False)

    @property
    def y(self) -> np.ndarray:
        return self.patients["mrs_3months"].to_numpy(int)


def _mask_volume_ml(store, rows_by_patient: dict, mask: str = "lesion") -> dict:
    if mask not in store.masks:
        raise ValueError(
            f"slice store {store.path} has no {mask!r} mask (masks: {sorted(store.masks)}); "
            "the lesion-volume row needs the lesion masks the analysis uses"
        )
    t = store.table
    px = (
        t["pixel_mm_row"].to_numpy(float)
        * t["pixel_mm_col"].to_numpy(float)
        * t["slice_thickness_mm"].to_numpy(float)
        / 1000.0
    )
    m = store.masks[mask]
    out = {}
    for pid, rows in rows_by_patient.items():
        counts = np.asarray(m[rows], bool).reshape(len(rows), -1).sum(1)
        out[pid] = float(counts @ px[rows])
    return out


def outcome_data(
    cohort, store, embeddings: SliceEmbeddings, groups=("stroke",), clinical=CLINICAL
) -> OutcomeData:
    """The analysed patients of ``cohort`` with their bags (see :class:`OutcomeData`).

    Raises
    ------
    ValueError
        A clinical column missing from ``participants.tsv``, an mRS outside 0-6 (naming
        the patients), a level of mRS 0-6 absent from every analysed patient, or a store
        from another cohort.
    """
    if store.cohort_id != cohort.cohort_id:
        raise ValueError(f"slice store {store.path} is of cohort {store.cohort_id!r}, "
                         f"not {cohort.cohort_id!r}")  # fmt: skip
    if len(embeddings) != len(store.table):
        raise ValueError(f"{len(embeddings)} embeddings for {len(store.table)} store slices")
    part = cohort.participants.copy()
    part.index = part.index.astype(str)
    for col in ("group", "mrs_3months", *clinical):
        if col not in part.columns:
            raise ValueError(
                f"cohort {cohort.cohort_id}: participants.tsv has no column {col!r} "
                f"(needed for the outcome model; columns: {list(part.columns)})"
            )
    flow = []

    def step(name, keep, reason):
        nonlocal part
        n0 = len(part)
        part = part[keep]
        flow.append({"step": name, "n_before": n0, "n_excluded": n0 - len(part),
                     "n_after": len(part), "reason": reason})  # fmt: skip

    flow.append({"step": "cohort", "n_before": len(part), "n_excluded": 0, "n_after": len(part),
                 "reason": cohort.cohort_id})  # fmt: skip
    step("group", part["group"].astype(str).isin(groups), f"group not in {list(groups)}")
    mrs = pd.to_numeric(part["mrs_3months"], errors="coerce")
    step("mRS known", mrs.notna().to_numpy(), "3-month mRS missing")
    mrs = pd.to_numeric(part["mrs_3months"], errors="coerce")
    bad = part.index[~mrs.isin(LEVELS)].tolist()
    if bad:
        vals = part.loc[bad, "mrs_3months"].tolist()
        raise ValueError(
            f"cohort {cohort.cohort_id}: 3-month mRS outside 0-6 (whole numbers) for patient(s) "
            f"{bad[:5]} (values {vals[:5]})"
        )
    for col in clinical:
        v = pd.to_numeric(part[col], errors="coerce")
        step(f"{col} known", v.notna().to_numpy(), f"clinical covariate {col!r} missing")
    slice_pid = store.table["participant_id"].astype(str).to_numpy()
    has = np.isin(part.index.to_numpy(), np.unique(slice_pid))
    step("usable slices", has, "no usable slice in the slice store")
    levels_seen = set(part["mrs_3months"].astype(int))
    absent = [lv for lv in LEVELS if lv not in levels_seen]
    if absent:
        raise ValueError(
            f"cohort {cohort.cohort_id}: no analysed patient has mRS {absent}; the ordinal head "
            "predicts every level of 0-6 (a level missing from a training fold is merged with "
            "its neighbour, but one missing from the whole cohort has no threshold)"
        )
    pids = part.index.to_numpy()
    bags = make_bags(slice_pid, pids)
    vol = _mask_volume_ml(store, dict(zip(pids, bags.rows)))
    df = pd.DataFrame({"participant_id": pids})
    df["mrs_3months"] = part["mrs_3months"].astype(int).to_numpy()
    for col in clinical:
        df[col] = pd.to_numeric(part[col]).to_numpy(float)
    df["lesion_volume_mask_ml"] = [vol[p] for p in pids]
    df["n_slices"] = [len(r) for r in bags.rows]
    params = covs = None
    truth = cohort.truth() if getattr(cohort, "is_synthetic", False) else None
    gen = cohort.generator() if truth is not None else None
    if truth is not None and gen is not None:
        params = SynthParams.from_dict(gen.get("params") or {})
        covs = outcome_covariates(part.reset_index(names="participant_id"),
                                  truth.reset_index(names="participant_id")).loc[pids]  # fmt: skip
        df = df.join(_truth_columns(covs, params), on="participant_id")
    return OutcomeData(df, bags, embeddings, pd.DataFrame(flow), cohort.cohort_id, params, covs,
                       store)  # fmt: skip


def _truth_columns(covs: pd.DataFrame, params: SynthParams, planted_or=None) -> pd.DataFrame:
    p = params if planted_or is None else dataclasses.replace(params, or_swelling_per_sd=planted_or)
    c = synth_clinical.outcome_coefficients(p, "default")
    eta = synth_clinical.outcome_linear_predictor(covs, p, "default")
    sw = covs["swelling"].to_numpy(float)
    terr = [str(t).split("+")[0] for t in covs["territory"]]
    right = side_right(covs["side"], unknown=0.0)
    log_vol = np.log(covs["true_tissue_volume_ml"].to_numpy(float) + 1.0)
    image_lp = (
        c["log_lesion_volume_ml_plus_1"] * log_vol
        + c["right_side"] * right
        + np.array([c["territory"].get(t, 0.0) for t in terr])
        + c["swelling_per_sd_by_cut"][0] * sw
    )
    return pd.DataFrame(
        {
            "log_volume_true": log_vol,
            "right_side": right,
            "swelling": sw,
            "territory0": terr,
            "image_lp_true": image_lp,
            "eta_true": eta + c["swelling_per_sd_by_cut"][0] * sw,
        },
        index=covs.index,
    )


def true_model_proba(data: OutcomeData, planted_or=None) -> np.ndarray:
    """P(mRS = k), k = 0..6, of the generator's true model (every true covariate)."""
    covs, p = data.covariates, data.params
    if planted_or is not None:
        p = dataclasses.replace(p, or_swelling_per_sd=float(planted_or))
    eta = synth_clinical.outcome_linear_predictor(covs, p, "default")
    coef = synth_clinical.outcome_coefficients(p, "default")
    cum = synth_clinical.cumulative_mrs_probabilities(eta, covs["swelling"].to_numpy(float), coef)
    cum = np.hstack([np.zeros((len(eta), 1)), cum, np.ones((len(eta), 1))])
    return np.diff(cum, axis=1)


# --------------------------------------------------------------------------- folds


@dataclass
class Fold:
    train: np.ndarray
    test: np.ndarray
    merged_levels: tuple
    n_leaked: int


def outcome_folds(patients, y, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Folds by patient, stratified by mRS; each checked by the leakage guard.

    Levels with fewer patients than folds are merged with their neighbour (towards the
    middle of the scale) for the stratification; a level then missing from a training
    fold is recorded in ``merged_levels`` (the head merges it with its neighbour).
    """
    y = np.asarray(y, int)
    pids = np.asarray(patients).astype(str)
    if len(np.unique(pids)) != len(pids):
        raise ValueError("outcome_folds: a patient appears twice; folds are by patient")
    strata = y.copy()
    for _ in range(len(LEVELS)):
        lv, cnt = np.unique(strata, return_counts=True)
        small = lv[cnt < n_folds]
        if len(small) == 0 or len(lv) == 1:
            break
        s = small[0]
        others = lv[lv != s]
        strata[strata == s] = others[np.argmin(np.abs(others - 3) + np.abs(others - s) * 10)]
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for train, test in skf.split(np.zeros(len(y)), strata):
        leak = leaked_patients({"train_patients": pids[train]}, {"test_patients": pids[test]})
        if leak:
            raise ValueError(f"fold leaks patients {leak[:5]} from training into test")
        merged = tuple(lv for lv in LEVELS if lv in set(y) and lv not in set(y[train]))
        folds.append(Fold(train, test, merged, len(leak)))
    return folds


# --------------------------------------------------------------------------- features


def pooled_features(data: OutcomeData, poolings=SELECT_FROM) -> dict:
    """Image design per fixed pooling, computed once: the pooled embedding (n_patients, d)
    followed by one column, the encoder's lesion extent (:func:`lesion_extent`), which the
    heads leave unpenalised (:func:`image_penalty`)."""
    e = data.embeddings
    ext = lesion_extent(e, data.bags)[:, None]
    return {
        p: np.hstack([pool_fixed(e.embeddings, data.bags, p, slice_weights(e, p)), ext])
        for p in poolings
        if p != "attention"
    }


def image_penalty(X: np.ndarray) -> np.ndarray:
    """Penalty mask of an image design: the pooled embedding penalised, the extent not."""
    return np.r_[np.ones(X.shape[1] - 1), 0.0]


def _dummies(values, reference=None) -> np.ndarray:
    v = np.asarray(values).astype(str)
    cats = sorted(set(v))
    ref = reference if reference in cats else (cats[0] if cats else None)
    return (
        np.stack([(v == c).astype(float) for c in cats if c != ref], axis=1)
        if len(cats) > 1
        else np.zeros((len(v), 0))
    )


def baseline_designs(data: OutcomeData) -> dict:
    """Design matrices of the PO rows (no image model): volume, clinical, image oracle,
    clinical + image oracle."""
    df = data.patients
    clin = df[list(CLINICAL)].to_numpy(float)
    out = {"lesion volume PO": np.log1p(df[["lesion_volume_mask_ml"]].to_numpy(float)),
           "clinical PO": clin}  # fmt: skip
    if "log_volume_true" in df.columns:
        img = np.column_stack([df[["log_volume_true", "right_side", "swelling"]].to_numpy(float),
                               _dummies(df["territory0"], "MCA")])  # fmt: skip
        out["image PO oracle (true covariates)"] = img
        out["clinical + image PO oracle"] = np.column_stack([clin, img])
    return out


# --------------------------------------------------------------------------- fitting


def _head_proba(head: OrdinalHead, X) -> np.ndarray:
    return head.predict_proba(X)


def _choose_l2(X, y, train, grid, folds_inner, penalize=None, n_components=None) -> float:
    """Penalty with the smallest inner-fold ordinal log-loss (ties: the stronger)."""
    if len(grid) == 1:
        return float(grid[0])
    loss = np.zeros(len(grid))
    for itr, ite in folds_inner:
        tr, te = train[itr], train[ite]
        start = None
        for j, l2 in enumerate(sorted(grid, reverse=True)):
            h = fit_ordinal_head(X[tr], y[tr], l2, LEVELS, penalize=penalize, start=start,
                                 n_components=n_components)  # fmt: skip
            start = h
            loss[len(grid) - 1 - j] += ordinal_nll(h, X[te], y[te]) * len(te)
    g = np.asarray(sorted(grid))
    best = np.flatnonzero(loss <= loss.min() + 1e-12)
    return float(g[best].max())


def _inner(y_train, k, seed) -> list:
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    strata = np.clip(y_train, 1, 5)  # rare extremes merged for stratification only
    return [(a, b) for a, b in skf.split(np.zeros(len(y_train)), strata)]


@dataclass
class CrossFit:
    """Out-of-fold predictions of one row.

    ``proba`` (n, 7) P(mRS = k); ``per_fold``: pooling, l2, merged levels of each fold.
    """

    name: str
    proba: np.ndarray
    per_fold: list = field(default_factory=list)


def cross_fit_design(
    name, X, y, folds, grid=(0.0,), penalize=None, inner_folds=3, seed=0, standardize=True
) -> CrossFit:
    """Cross-fit a head on a fixed design (penalty chosen on inner folds if a grid)."""
    P = np.full((len(y), len(LEVELS)), np.nan)
    info = []
    for f, fold in enumerate(folds):
        tr, te = fold.train, fold.test
        inner = _inner(y[tr], inner_folds, seed + f) if len(grid) > 1 else []
        l2 = _choose_l2(X, y, tr, grid, inner, penalize)
        h = fit_ordinal_head(X[tr], y[tr], l2, LEVELS, standardize=standardize,
                             penalize=penalize)  # fmt: skip
        P[te] = h.predict_proba(X[te])
        info.append({"fold": f, "l2": l2, "merged_levels": list(h.merged),
                     "converged": h.converged})  # fmt: skip
    return CrossFit(name, P, info)


def select_pooling(pooled: dict, y, train, grid, inner_folds, seed,
                   n_components=None) -> tuple[str, float]:  # fmt: skip
    """(pooling, l2) with the smallest inner-fold log-loss among ``pooled``'s poolings."""
    best = (np.inf, None, None)
    inner = _inner(y[train], inner_folds, seed)
    for p in sorted(pooled):
        X = pooled[p]
        pen = image_penalty(X)
        loss = np.zeros(len(grid))
        for itr, ite in inner:
            tr, te = train[itr], train[ite]
            start = None
            for j, l2 in enumerate(sorted(grid, reverse=True)):
                h = fit_ordinal_head(X[tr], y[tr], l2, LEVELS, start=start, penalize=pen,
                                     n_components=n_components)  # fmt: skip
                start = h
                loss[len(grid) - 1 - j] += ordinal_nll(h, X[te], y[te]) * len(te)
        j = int(np.argmin(loss))
        if loss[j] < best[0]:
            best = (loss[j], p, float(sorted(grid)[j]))
    return best[1], best[2]


def cross_fit_image(data: OutcomeData, pooled: dict, folds, config: OutcomeConfig, y=None,
                    fixed_pooling: list | None = None) -> CrossFit:  # fmt: skip
    """The image model: per fold, pooling and penalty chosen on inner folds (or the pooling
    of ``fixed_pooling[f]`` with the penalty re-chosen)."""
    y = data.y if y is None else y
    P = np.full((len(y), len(LEVELS)), np.nan)
    info = []
    for f, fold in enumerate(folds):
        tr, te = fold.train, fold.test
        if fixed_pooling is None:
            pooling, l2 = select_pooling(pooled, y, tr, config.l2_grid, config.inner_folds,
                                         config.seed + f, config.n_components)  # fmt: skip
        else:
            pooling = fixed_pooling[f]
            l2 = _choose_l2(pooled[pooling], y, tr, config.l2_grid,
                            _inner(y[tr], config.inner_folds, config.seed + f),
                            image_penalty(pooled[pooling]), config.n_components)  # fmt: skip
        X = pooled[pooling]
        h = fit_ordinal_head(X[tr], y[tr], l2, LEVELS, penalize=image_penalty(X),
                             n_components=config.n_components)  # fmt: skip
        P[te] = h.predict_proba(X[te])
        info.append({"fold": f, "pooling": pooling, "l2": l2, "merged_levels": list(h.merged),
                     "converged": h.converged})  # fmt: skip
    return CrossFit("image model", P, info)


def fusion_design(data: OutcomeData, X_img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image design + clinical covariates; the penalty applies to the pooled embedding only."""
    clin = data.patients[list(CLINICAL)].to_numpy(float)
    pen = np.concatenate([image_penalty(X_img), np.zeros(clin.shape[1])])
    return np.column_stack([X_img, clin]), pen


def cross_fit_fusion(data, pooled, folds, poolings, config, y=None) -> CrossFit:
    """Image + clinical late fusion with each fold's image pooling."""
    y = data.y if y is None else y
    P = np.full((len(y), len(LEVELS)), np.nan)
    info = []
    for f, fold in enumerate(folds):
        tr, te = fold.train, fold.test
        X, pen = fusion_design(data, pooled[poolings[f]])
        l2 = _choose_l2(X, y, tr, config.l2_grid,
                        _inner(y[tr], config.inner_folds, config.seed + f), pen,
                        config.n_components)  # fmt: skip
        h = fit_ordinal_head(X[tr], y[tr], l2, LEVELS, penalize=pen,
                             n_components=config.n_components)  # fmt: skip
        P[te] = h.predict_proba(X[te])
        info.append({"fold": f, "pooling": poolings[f], "l2": l2,
                     "merged_levels": list(h.merged), "converged": h.converged})  # fmt: skip
    return CrossFit("image + clinical fusion", P, info)


def cross_fit_attention(data: OutcomeData, folds, config: OutcomeConfig, y=None) -> CrossFit:
    """Gated-attention pooling learnt with the head per fold (penalty: middle of the grid,
    not chosen on inner folds, for time; a diagnostic row)."""
    y = data.y if y is None else y
    P = np.full((len(y), len(LEVELS)), np.nan)
    info = []
    l2 = float(sorted(config.l2_grid)[len(config.l2_grid) // 2])
    x = data.embeddings.embeddings
    for f, fold in enumerate(folds):
        tr, te = fold.train, fold.test
        att = fit_attention_head(x, data.bags.subset(tr), y[tr], l2, LEVELS, seed=config.seed + f)
        P[te] = att.head.predict_proba(att.pooled(x, data.bags.subset(te)))
        info.append({"fold": f, "pooling": "attention", "l2": l2,
                     "merged_levels": list(att.head.merged), "converged": att.head.converged})  # fmt: skip
    return CrossFit("image model, pooling attention", P, info)


# --------------------------------------------------------------------------- metrics


def p_poor(P: np.ndarray) -> np.ndarray:
    """P(mRS >= 3) from level probabilities (n, 7)."""
    return np.asarray(P)[:, GOOD_MAX + 1 :].sum(1)


def _auc(poor, s) -> float:
    return float(roc_auc_score(poor, s)) if 0 < poor.sum() < len(poor) else math.nan


def calibration_slope(poor, p) -> float:
    """Slope of a logistic regression of the outcome on logit(p) (1 = well calibrated)."""
    z = special.logit(np.clip(p, 1e-9, 1 - 1e-9))
    try:
        res = sm.Logit(poor.astype(float), sm.add_constant(z)).fit(disp=0)
    except Exception:  # perfect separation etc.: no slope
        return math.nan
    return float(res.params[1])


def outcome_metrics(y, P, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC of mRS 3-6 vs 0-2 (percentile patient-bootstrap CI), ordinal C-index (expected
    mRS), calibration slope and Brier score of P(mRS >= 3)."""
    y = np.asarray(y, int)
    poor = y > GOOD_MAX
    p = p_poor(P)
    auc = _auc(poor, p)
    boots = []
    rng = rng_for(seed, "outcome-auc-bootstrap")
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < poor[i].sum() < len(i):
            boots.append(roc_auc_score(poor[i], p[i]))
    lo, hi = np.quantile(boots, [0.025, 0.975]) if boots else (math.nan, math.nan)
    expected = np.asarray(P) @ np.arange(P.shape[1])
    return {
        "auc": auc,
        "auc_low": float(lo),
        "auc_high": float(hi),
        "c_index": ordinal_c_index(expected, y),
        "calibration_slope": calibration_slope(poor, p),
        "brier": float(np.mean((p - poor) ** 2)),
        "n": len(y),
        "n_poor": int(poor.sum()),
    }


# --------------------------------------------------------------------------- the study


@dataclass
class CrossFitResult:
    """Every row's out-of-fold predictions on the same patients, and the folds."""

    rows: dict
    folds: list
    image_poolings: list


def cross_fit(data: OutcomeData, config: OutcomeConfig, attention: bool = True,
              y=None, image_poolings=None, diagnostics: bool = True, log=None) -> CrossFitResult:  # fmt: skip
    """Cross-fit every row of the evaluation table on ``data`` (or on outcome ``y``)."""
    say = log or (lambda m: None)
    y = data.y if y is None else np.asarray(y, int)
    folds = outcome_folds(data.patients["participant_id"], data.y, config.n_folds, config.seed)
    pooled = pooled_features(data, tuple(set(config.select_from) | set(
        p for p in config.diagnostic_poolings if p != "attention")))  # fmt: skip
    rows = {}
    for name, X in baseline_designs(data).items():
        rows[name] = cross_fit_design(name, X, y, folds)
    if "eta_true" in data.patients.columns:
        rows["true model (generator)"] = CrossFit("true model (generator)", true_model_proba(data))
    t = time.perf_counter()
    sel = {p: pooled[p] for p in config.select_from}
    img = cross_fit_image(data, sel, folds, config, y,
                          fixed_pooling=image_poolings)  # fmt: skip
    rows["image model"] = img
    pools = [r["pooling"] for r in img.per_fold]
    say(f"image model: {time.perf_counter() - t:.1f} s for {len(folds)} folds; poolings {pools}")
    rows["image + clinical fusion"] = cross_fit_fusion(data, pooled, folds, pools, config, y)
    if diagnostics:
        for p in config.diagnostic_poolings:
            t = time.perf_counter()
            if p == "attention":
                if attention:
                    rows["image, pooling attention"] = cross_fit_attention(data, folds, config, y)
            else:
                rows[f"image, pooling {p}"] = cross_fit_image(
                    data, {p: pooled[p]}, folds, config, y, fixed_pooling=[p] * len(folds)
                )
            say(f"pooling {p}: {time.perf_counter() - t:.1f} s for {len(folds)} folds")
    return CrossFitResult(rows, folds, pools)


def evaluation_table(data: OutcomeData, cf: CrossFitResult, config: OutcomeConfig) -> pd.DataFrame:
    """One row per model on the same out-of-fold patients (see the module docstring)."""
    y = data.y
    out = []
    for name, r in cf.rows.items():
        m = outcome_metrics(y, r.proba, config.n_boot, config.seed)
        role = "diagnostic" if name.startswith("image, pooling") else (
            "oracle" if "oracle" in name or "true model" in name else "model")  # fmt: skip
        choice = ""
        if r.per_fold and "pooling" in r.per_fold[0]:
            choice = ",".join(str(d["pooling"]) for d in r.per_fold)
        l2s = ",".join(f"{d['l2']:g}" for d in r.per_fold) if r.per_fold else ""
        merged = sum(len(d.get("merged_levels", [])) for d in r.per_fold)
        out.append({"row": name, "role": role, **m, "pooling_per_fold": choice,
                    "l2_per_fold": l2s, "levels_merged": merged})  # fmt: skip
    tab = pd.DataFrame(out)
    if "image_lp_true" in data.patients.columns:
        lp = data.patients["image_lp_true"].to_numpy(float)
        tab["spearman_image_lp_true"] = [
            stats.spearmanr(p_poor(cf.rows[n].proba), lp)[0]
            if n == "image model" or n.startswith("image, pooling")
            else np.nan
            for n in tab["row"]
        ]
    return tab


#: Paired AUC differences of the targets: (label, row a, row b).
COMPARISONS = (
    ("image - volume", "image model", "lesion volume PO"),
    ("image - image oracle", "image model", "image PO oracle (true covariates)"),
    ("fusion - clinical", "image + clinical fusion", "clinical PO"),
    ("fusion - clinical+image oracle", "image + clinical fusion", "clinical + image PO oracle"),
    ("image oracle - volume", "image PO oracle (true covariates)", "lesion volume PO"),
)


def redraw_comparison(data: OutcomeData, cf: CrossFitResult, config: OutcomeConfig,
                      planted_or=None, setting: str = "default", log=None) -> pd.DataFrame:  # fmt: skip
    """AUC of every main row per outcome redraw (images, embeddings, folds and each fold's
    pooling fixed; penalties re-chosen, heads refitted). One row per (redraw, model)."""
    say = log or (lambda m: None)
    if data.covariates is None:
        raise ValueError(f"cohort {data.cohort_id}: outcome redraws need the generator's truth")
    pooled = pooled_features(data, tuple(set(cf.image_poolings)))
    designs = baseline_designs(data)
    out = []
    t0 = time.perf_counter()
    for r in range(config.n_redraws):
        rng = rng_for(config.seed, "outcome-redraw", setting, r)
        y = redraw_mrs(data.covariates, "default", rng, data.params, planted_or).astype(int)
        poor = y > GOOD_MAX
        aucs = {}
        for name, X in designs.items():
            aucs[name] = cross_fit_design(name, X, y, cf.folds).proba
        aucs["image model"] = cross_fit_image(data, pooled, cf.folds, config, y,
                                              fixed_pooling=cf.image_poolings).proba  # fmt: skip
        aucs["image + clinical fusion"] = cross_fit_fusion(data, pooled, cf.folds,
                                                           cf.image_poolings, config, y).proba  # fmt: skip
        aucs["true model (generator)"] = true_model_proba(data, planted_or)
        img = p_poor(aucs["image model"])
        rho = stats.spearmanr(img, data.patients["image_lp_true"])[0] if planted_or is None else (
            stats.spearmanr(img, _truth_columns(data.covariates, data.params, planted_or)[
                "image_lp_true"])[0])  # fmt: skip
        for name, P in aucs.items():
            out.append({"setting": setting, "redraw": r, "row": name, "auc": _auc(poor, p_poor(P)),
                        "spearman_image_lp_true": rho if name == "image model" else np.nan})  # fmt: skip
        if r == 0 or (r + 1) % 10 == 0:
            say(f"{setting}: redraw {r + 1}/{config.n_redraws} ({time.perf_counter() - t0:.0f} s)")
    return pd.DataFrame(out)


def summarise_redraws(reps: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean AUC per row and the paired differences of :data:`COMPARISONS`, each with a
    Monte-Carlo CI (mean +- z SD / sqrt(R))."""
    z = stats.norm.ppf(0.5 + level / 2)
    rows = []
    for setting, d in reps.groupby("setting", sort=False):
        wide = d.pivot(index="redraw", columns="row", values="auc")
        items = [(f"AUC {c}", wide[c]) for c in wide.columns]
        items += [(f"AUC {lab}", wide[a] - wide[b]) for lab, a, b in COMPARISONS
                  if a in wide and b in wide]  # fmt: skip
        rho = d.loc[d["row"] == "image model", "spearman_image_lp_true"]
        items.append(("Spearman image score vs image part of true lp", rho))
        for name, v in items:
            v = pd.Series(v).dropna()
            se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
            rows.append({"setting": setting, "quantity": name, "mean": v.mean(),
                         "mc_low": v.mean() - z * se, "mc_high": v.mean() + z * se,
                         "sd": v.std(ddof=1), "n_redraws": len(v)})  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- final model


@dataclass
class FinalModel:
    """The head fitted on every development patient (pooling and penalty chosen by
    cross-validation over all of them)."""

    pooling: str
    l2: float
    head: OrdinalHead
    fusion_head: OrdinalHead
    fusion_l2: float
    train_patients: list

    def predict(self, data: OutcomeData, fusion: bool = False) -> np.ndarray:
        X = pooled_features(data, (self.pooling,))[self.pooling]
        if fusion:
            X, _ = fusion_design(data, X)
            return self.fusion_head.predict_proba(X)
        return self.head.predict_proba(X)


def fit_final(data: OutcomeData, config: OutcomeConfig) -> FinalModel:
    y = data.y
    pooled = pooled_features(data, config.select_from)
    everyone = np.arange(len(y))
    nc = config.n_components
    pooling, l2 = select_pooling(pooled, y, everyone, config.l2_grid, config.n_folds,
                                 config.seed, nc)  # fmt: skip
    head = fit_ordinal_head(pooled[pooling], y, l2, LEVELS, penalize=image_penalty(
        pooled[pooling]), n_components=nc)  # fmt: skip
    X, pen = fusion_design(data, pooled[pooling])
    fl2 = _choose_l2(X, y, everyone, config.l2_grid, _inner(y, config.n_folds, config.seed), pen,
                     nc)  # fmt: skip
    fhead = fit_ordinal_head(X, y, fl2, LEVELS, penalize=pen, n_components=nc)
    return FinalModel(pooling, l2, head, fhead, fl2, list(data.patients["participant_id"]))


@dataclass
class OutcomeStudyResult:
    """Everything one run of the outcome study produced."""

    config: OutcomeConfig
    table: pd.DataFrame
    folds: pd.DataFrame
    flow: pd.DataFrame
    oof: pd.DataFrame
    redraws: pd.DataFrame
    comparisons: pd.DataFrame
    final: FinalModel | None = None
    analysis_table: pd.DataFrame | None = None
    analysis_flow: pd.DataFrame | None = None
    timings: dict = field(default_factory=dict)

    def summary(self) -> str:
        cols = ["row", "auc", "auc_low", "auc_high", "c_index", "calibration_slope", "brier"]
        lines = [self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")]
        if len(self.comparisons):
            lines += ["", self.comparisons.to_string(index=False,
                                                      float_format=lambda v: f"{v:.3f}")]  # fmt: skip
        return "\n".join(lines)


def fold_table(data: OutcomeData, cf: CrossFitResult) -> pd.DataFrame:
    img = cf.rows["image model"].per_fold
    fus = cf.rows["image + clinical fusion"].per_fold
    return pd.DataFrame([
        {"fold": f, "n_train": len(fd.train), "n_test": len(fd.test), "n_leaked": fd.n_leaked,
         "levels_merged": ",".join(map(str, fd.merged_levels)), "pooling": img[f]["pooling"],
         "l2_image": img[f]["l2"], "l2_fusion": fus[f]["l2"]}
        for f, fd in enumerate(cf.folds)
    ])  # fmt: skip


def oof_table(data: OutcomeData, cf: CrossFitResult) -> pd.DataFrame:
    fold_of = np.full(len(data.y), -1)
    for f, fd in enumerate(cf.folds):
        fold_of[fd.test] = f
    df = pd.DataFrame({"participant_id": data.patients["participant_id"], "fold": fold_of,
                       "mrs_3months": data.y})  # fmt: skip
    for name, r in cf.rows.items():
        df[f"p_poor__{name}"] = p_poor(r.proba)
    return df


def run_outcome_study(dev: OutcomeData, config: OutcomeConfig, analysis: OutcomeData | None = None,
                      redraws: bool = True, attention: bool = True, log=None) -> OutcomeStudyResult:  # fmt: skip
    say = log or (lambda m: None)
    timings = {}
    t = time.perf_counter()
    cf = cross_fit(dev, config, attention=attention, log=say)
    timings["cross_fit_s"] = time.perf_counter() - t
    table = evaluation_table(dev, cf, config)
    reps = pd.DataFrame()
    if redraws and dev.covariates is not None and config.n_redraws > 0:
        t = time.perf_counter()
        reps = pd.concat([
            redraw_comparison(dev, cf, config, None, "default", say),
            redraw_comparison(dev, cf, config, config.strong_swelling_or,
                              f"swelling OR {config.strong_swelling_or:g}", say),
        ], ignore_index=True)  # fmt: skip
        timings["redraws_s"] = time.perf_counter() - t
    comps = summarise_redraws(reps) if len(reps) else pd.DataFrame()
    final = fit_final(dev, config)
    an_tab = None
    if analysis is not None:
        rows = {
            "image model (final)": final.predict(analysis),
            "image + clinical fusion (final)": final.predict(analysis, fusion=True),
        }
        an_tab = pd.DataFrame([{"row": k, **outcome_metrics(analysis.y, P, config.n_boot,
                                                             config.seed)}
                               for k, P in rows.items()])  # fmt: skip
    return OutcomeStudyResult(config, table, fold_table(dev, cf), dev.flow, oof_table(dev, cf),
                              reps, comps, final, an_tab,
                              analysis.flow if analysis is not None else None, timings)  # fmt: skip


def write_tables(result: OutcomeStudyResult, out_dir) -> dict:
    """CSV tables and a markdown summary of a run into ``out_dir``."""
    out = Path(out_dir)
    paths = {
        "evaluation": write_table_atomic(out / "evaluation.csv", result.table),
        "folds": write_table_atomic(out / "evaluation_folds.csv", result.folds),
        "flow": write_table_atomic(out / "patient_flow.csv", result.flow),
        "oof": write_table_atomic(out / "oof_predictions.csv", result.oof),
    }
    if len(result.comparisons):
        paths["redraws"] = write_table_atomic(out / "evaluation_redraws.csv", result.comparisons)
    if result.analysis_table is not None:
        paths["analysis"] = write_table_atomic(out / "evaluation_analysis.csv",
                                               result.analysis_table)  # fmt: skip
    write_json_atomic(out / "config.json", dataclasses.asdict(result.config))
    write_text_atomic(out / "evaluation.md", evaluation_markdown(result))
    return paths


def evaluation_markdown(result: OutcomeStudyResult) -> str:
    def fmt(v):
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
            f"{v:.3f}" if isinstance(v, float) else str(v))  # fmt: skip

    t = result.table
    lines = ["# Outcome model: out-of-fold evaluation on the development cohort", "",
             f"{int(t['n'].iloc[0])} patients ({int(t['n_poor'].iloc[0])} with mRS 3-6), "
             f"{result.config.n_folds} folds by patient stratified by mRS; every patient "
             "predicted by a head that never saw them. AUC of mRS 3-6 vs 0-2 with a 95 % "
             "patient-bootstrap CI; ordinal C-index of the expected mRS; calibration slope and "
             "Brier score of P(mRS >= 3).", "",
             "| row | role | AUC [95 % CI] | C-index | cal. slope | Brier | Spearman vs true "
             "image lp | pooling per fold |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, r in t.iterrows():
        lines.append(
            f"| {r['row']} | {r['role']} | {fmt(r['auc'])} [{fmt(r['auc_low'])}, "
            f"{fmt(r['auc_high'])}] | {fmt(r['c_index'])} | {fmt(r['calibration_slope'])} | "
            f"{fmt(r['brier'])} | {fmt(r.get('spearman_image_lp_true'))} | "
            f"{r['pooling_per_fold']} |"
        )
    c = result.comparisons
    if len(c):
        lines += ["", "## Paired comparisons over outcome redraws", "",
                  "Images, embeddings, folds and each fold's pooling fixed; mRS redrawn from the "
                  "generator's outcome model, penalties re-chosen and heads refitted per redraw; "
                  "mean with a 95 % Monte-Carlo CI.", "",
                  "| setting | quantity | mean [MC 95 % CI] | SD | redraws |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for _, r in c.iterrows():
            lines.append(f"| {r['setting']} | {r['quantity']} | {r['mean']:.3f} "
                         f"[{r['mc_low']:.3f}, {r['mc_high']:.3f}] | {r['sd']:.3f} | "
                         f"{r['n_redraws']} |")  # fmt: skip
    if result.analysis_table is not None:
        lines += ["", "## The final model on the analysis cohort", "",
                  "| row | AUC [95 % CI] | C-index | cal. slope | Brier | n |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for _, r in result.analysis_table.iterrows():
            lines.append(f"| {r['row']} | {fmt(r['auc'])} [{fmt(r['auc_low'])}, "
                         f"{fmt(r['auc_high'])}] | {fmt(r['c_index'])} | "
                         f"{fmt(r['calibration_slope'])} | {fmt(r['brier'])} | {r['n']} |")  # fmt: skip
    lines += ["", "## Folds", "", markdown_table(result.folds), "",
              "## Patient flow", "", markdown_table(result.flow), ""]  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------- inputs


def load_outcome_data(cohort_dir, config: OutcomeConfig, model=None, log=None) -> OutcomeData:
    """Cohort -> slice store (the encoder card's preprocessing) -> cached embeddings ->
    :class:`OutcomeData`."""

    say = log or (lambda m: None)
    model = model if model is not None else load_model(config.encoder)
    card = model.hypo_card
    cohort = hc.load(cohort_dir)
    store = build_slice_store(cohort, PreprocessConfig(**card["preprocessing"]), progress=False)
    t = time.perf_counter()
    emb = cached_embeddings(model, store, config.layer)
    say(f"{cohort.cohort_id}: {len(emb)} slice embeddings ({emb.embeddings.shape[1]} at "
        f"{config.layer}) in {time.perf_counter() - t:.1f} s (cached after the first run)")  # fmt: skip
    return outcome_data(cohort, store, emb, config.groups)


def save_outcome_model(result: OutcomeStudyResult, dev: OutcomeData, encoder, out_dir,
                       command: str | None = None) -> Path:  # fmt: skip
    """``head.json`` (the final heads) and ``card.json`` beside the evaluation tables.

    The card's ``train_patients`` are every development patient the heads or the encoder
    trained or validated on, so :func:`hypo.features.join.flag_training_patients` guards the
    model like any other."""

    out = Path(out_dir)
    fin = result.final
    enc_card = getattr(encoder, "hypo_card", {}) or {}
    seen = set(fin.train_patients) | set(map(str, enc_card.get("train_patients", [])))
    seen |= set(map(str, enc_card.get("val_patients", [])))
    heads = {"pooling": fin.pooling, "embedding_layer": result.config.layer,
             "image": fin.head.to_dict(), "fusion": fin.fusion_head.to_dict(),
             "fusion_clinical": list(CLINICAL)}  # fmt: skip
    write_json_atomic(out / "head.json", heads)
    bag_check = _save_bag_model(encoder, fin, dev, out)
    metrics = {r["row"]: {k: r[k] for k in ("auc", "auc_low", "auc_high", "c_index",
                                              "calibration_slope", "brier", "n")}
               for r in result.table.to_dict("records")}  # fmt: skip
    card = {
        "architecture": "mil-ordinal",
        "classes": [f"mRS {k}" for k in LEVELS],
        "input_shape": [None, *enc_card.get("input_shape", [])],
        "cohort": enc_card.get("cohort", {}) | {"id": dev.cohort_id},
        "train_patients": sorted(seen),
        "val_patients": [],
        "test_patients": [],
        "split_seed": result.config.seed,
        "preprocessing": enc_card.get("preprocessing", {}),
        "cam_layer": enc_card.get("cam_layer"),
        "encoder": {
            "model": str(result.config.encoder),
            "weights_hash": weights_hash(encoder),
            "cohort": enc_card.get("cohort", {}),
        },  # fmt: skip
        "embedding_layer": result.config.layer,
        "pooling": fin.pooling,
        "l2": fin.l2,
        "fusion": {
            "clinical": list(CLINICAL),
            "l2": fin.fusion_l2,
            "note": "late fusion: clinical covariates standardised, unpenalised",
        },  # fmt: skip
        "patients_per_fold": [
            {
                "fold": int(r["fold"]),
                "n_train": int(r["n_train"]),
                "n_test": int(r["n_test"]),
                "pooling": r["pooling"],
            }
            for r in result.folds.to_dict("records")
        ],  # fmt: skip
        "n_patients": len(fin.train_patients),
        "head_sign": "logit P(mRS <= j) = theta_j - eta; eta > 0 = worse (fit_proportional_odds)",
        "metrics": {
            "out_of_fold": metrics,
            "analysis_cohort": (
                result.analysis_table.to_dict("records")
                if result.analysis_table is not None
                else None
            ),
        },  # fmt: skip
        "timings_s": result.timings,
        "bag_model_check": bag_check,
        "versions": library_versions(),
        "command": command,
    }
    write_json_atomic(out / "card.json", card)
    return out


def _save_bag_model(encoder, fin: FinalModel, dev: OutcomeData, out: Path, n_check: int = 3):
    """``model.keras``: the final image head as a Keras bag model
    (:func:`hypo.nets.outcome.build_bag_model`), checked against the cached path on the
    first ``n_check`` development patients (the largest |P difference| is returned)."""

    bag = build_bag_model(encoder, fin.head, fin.pooling, dev.embeddings.layer)
    with atomic_path(out / "model.keras") as tmp:
        bag.save(tmp)
    if dev.store is None:
        return {"n_patients": 0, "max_abs_diff": None}
    X = pooled_features(dev, (fin.pooling,))[fin.pooling]
    diffs = []
    for i in range(min(n_check, len(dev.bags))):
        rows = dev.bags.rows[i]
        x = np.asarray(dev.store.images[rows], np.float32)[None, ..., None]
        v = dev.embeddings.slice_volume_ml[rows][None]
        p_bag = bag.predict([x, v], verbose=0)
        diffs.append(float(np.abs(p_bag - fin.head.predict_proba(X[i : i + 1])).max()))
    return {"n_patients": len(diffs), "max_abs_diff": max(diffs)}


def bag_cam_localisation(encoder, store, head: OrdinalHead, pooling: str, cache_root,
                         layers=None, methods=("gradcam", "gradcampp")) -> pd.DataFrame:  # fmt: skip
    """Exploratory: how much of the bag CAMs' relevance falls in the lesion, per layer and
    method, on the store's slices with a lesion mask (Quantus relevance-mass accuracy).

    Brain pixels are approximated as those above the slice's minimum (z-scored slices have a
    flat background), so ``chance`` is the lesion's share of those pixels. The CAM caches
    (:func:`hypo.cam.bag.bag_cam_store`) go to ``cache_root/<layer>``."""
    card = getattr(encoder, "hypo_card", None) or {}
    layers = tuple(layers) if layers else (card.get("cam_layer", "block5_relu"), FINE_LAYER)
    les = np.asarray(store.masks["lesion"]).astype(bool)
    rows = np.flatnonzero(les.reshape(len(les), -1).any(1))
    img = np.asarray(store.images[rows])
    brain = img > img.min(axis=(1, 2), keepdims=True) + 1e-3
    chance = float((les[rows] & brain).sum() / brain.sum())
    out = []
    for layer in layers:
        cs = bag_cam_store(encoder, store, head, pooling, Path(cache_root) / layer, layer=layer)
        for m in methods:
            rma = relevance_mass_accuracy(cs.maps(m, rows, resized=True)[:, 0], les[rows], brain)
            out.append({"layer": layer, "method": m, "relevance_mass_lesion": float(np.nanmean(rma)),
                        "n_slices": int(np.isfinite(rma).sum()), "chance": chance,
                        "cell_px": float(cs.cell_size[0])})  # fmt: skip
    return pd.DataFrame(out)
