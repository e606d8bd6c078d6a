"""The ceiling for the mRS model: what the true covariates tell about the outcome.

The 3-class mRS model (paper 4.2) guesses, from one DWI slice, whether the patient will be
independent (mRS 0-2) or not (mRS 3-6) at 3 months. Much of the outcome is decided by things
no slice shows (age, pre-stroke mRS, NIHSS, treatment, chance), so even a perfect image
reader has a ceiling. On a synthetic cohort the generator's truth gives it, for the same
test patients the model is evaluated on:

``true model``
    The generator's own outcome model with its true coefficients and every true covariate
    (swelling included): ``P(mRS <= 2) = expit(theta_2 - lp)``, lp the patient's
    ``outcome_linear_predictor``. The Bayes classifier; no fitted model can do better in
    expectation.
``fitted PO``
    A proportional-odds model (:func:`hypo.stats.fit_proportional_odds`) of mRS on the true
    covariates, fitted on the training patients and applied to the test patients: what a
    clinical model learns from a cohort this size.
``image PO``
    The same fit on the covariates a perfect image reader could see (lesion volume, side,
    territory, swelling): the ceiling for the images alone. Age, pre-stroke mRS, NIHSS and
    treatment are not in a DWI slice.

``slice lesion area``
    Not an oracle but a floor for the CNN: a logistic regression of mRS 3-6 on the log of
    the lesion area the reader marked on each slice, fitted on the training patients'
    lesion slices and applied to the test patients' (given ``slice_table``). A CNN that
    reads outcome from the image should beat it.

The oracles predict per patient; the per-class sensitivities over lesion slices weight each
patient by their lesion slices, as the mRS model's Table 3 rows do. Two decision rules:
``P > 0.5`` (the Bayes rule for accuracy) and ``balanced`` (poor outcome when its
probability exceeds its share among the training patients: the rule a classifier trained
with class weights, like the mRS model, approximates; it trades mRS 0-2 sensitivity for
mRS 3-6 sensitivity). A third, optimistic row, ``best cut for targets``, picks the cut on
the test patients themselves that comes closest to the targets of :data:`TARGETS` (the
most any threshold of that oracle could give): if it misses, no threshold on that
oracle's per-patient probability reaches both targets on these patients. (Slice-level
predictions may differ between a patient's slices and so interpolate between such cuts;
the per-slice ``slice lesion area`` row shows how far that goes.) The threshold-free AUC of mRS 3-6 vs
0-2 over lesion slices compares with the model card's ``auc_mrs_3_6_vs_0_2``. With
``all_lesion_slices`` the true model is also evaluated on every patient of the cohort
(``true model, all patients``): it needs no fit, so it can say whether the test patients
are a harder draw than the cohort; the two PO oracles are then also cross-fitted over every
patient (:func:`cross_fitted_poor`), so each patient is predicted by a fit that did not
see them: whether even a perfect image reader reaches the targets on the whole cohort.

    python -m hypo.study.oracle models/mrs-gap-128      # writes evaluation_oracle.csv/.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

import hypo.cohort as hc
from hypo._util import write_table_atomic, write_text_atomic
from hypo.cohort import layout
from hypo.cohort.layout import MRS_GOOD_MAX, side_right
from hypo.intervals import wilson_ci
from hypo.nets.cards import read_card
from hypo.nets.evaluation import markdown_table
from hypo.paths import data_dir, default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.stats import fit_proportional_odds
from hypo.stats.calibration import generator_design
from hypo.stats.ordinal import OrdinalFitError
from hypo.stats.outcomes import fit_outcome
from hypo.study.config import OUTCOME

#: Covariates of the fitted oracle (truth table and participants.tsv columns); a covariate
#: constant among the training patients is left out of the fit (recorded).
ORACLE_TERMS = ("age_decades", "mrs_before", "female", "log_volume", "right_side",
                "nihss_baseline", "ivt", "iat", "swelling", "territory0")  # fmt: skip
ORACLE_FORMULA = "mrs_3months ~ " + " + ".join(ORACLE_TERMS[:-1]) + " + C(territory0)"
#: The covariates of the ``image PO`` oracle: what the image itself could show.
IMAGE_TERMS = ("log_volume", "right_side", "swelling", "territory0")
GOOD_MAX = MRS_GOOD_MAX  # mRS 0-2 = independent
#: Per-class sensitivity targets of the mRS model (issue #3; the paper reported 0.70 / 0.58
#: on a slice-level split).
TARGETS = {"mRS 0-2": 0.65, "mRS 3-6": 0.55}
#: Cross-fitting of the whole-cohort PO oracles.
CV_FOLDS, CV_REPEATS = 5, 5


@dataclass
class OracleResult:
    """The oracle table and how it was made (see :func:`mrs_oracle`)."""

    table: pd.DataFrame
    note: str
    n_train: int
    formula: str
    image_formula: str
    balanced_at: float


class OracleError(ValueError):
    """The cohort cannot give an oracle (not synthetic, no truth, no outcome)."""


def _patient_table(cohort) -> pd.DataFrame:
    truth = cohort.truth()
    gen = cohort.generator()
    if truth is None or gen is None:
        raise OracleError(
            f"cohort {cohort.cohort_id}: no generator truth (derivatives/truth/truth.tsv and "
            "generator.json); the oracle exists only for synthetic cohorts"
        )
    part = cohort.participants.reset_index()
    part["participant_id"] = part["participant_id"].astype(str)
    t = truth.reset_index()
    t["participant_id"] = t["participant_id"].astype(str)
    cols = ["participant_id", "lesion_volume_ml", "swelling", "side", "territory"]
    cols += ["outcome_linear_predictor"]
    df = part.merge(t[cols], on="participant_id", how="left", validate="one_to_one")
    df["age_decades"] = (pd.to_numeric(df["age"]) - 70) / 10
    df["female"] = (df["sex"].astype(str) == "F").astype(float)
    df["log_volume"] = np.log(pd.to_numeric(df["lesion_volume_ml"]).fillna(0) + 1)
    df["right_side"] = side_right(df["side"], unknown=0.0)
    df["territory0"] = df["territory"].fillna("none").astype(str).str.split("+").str[0]
    theta = gen["outcome_model"]["coefficients"]["theta"]
    lp = pd.to_numeric(df["outcome_linear_predictor"])
    df["p_poor_true_model"] = 1.0 - 1.0 / (1.0 + np.exp(-(theta[GOOD_MAX] - lp)))
    return df


def _rows(name: str, p_poor, poor_true, weights, balanced_at: float) -> list[dict]:

    out = []
    rules = (("P > 0.5", 0.5, False), ("balanced", balanced_at, False))
    rules += (("best cut for targets", _best_cut(p_poor, poor_true, weights), True),)
    for rule, cut, inclusive in rules:
        poor_pred = p_poor >= cut if inclusive else p_poor > cut
        for label, m in (("mRS 0-2", ~poor_true), ("mRS 3-6", poor_true), ("all", None)):
            sel = np.ones(len(poor_true), bool) if m is None else m
            ok = (poor_pred == poor_true)[sel]
            w = weights[sel]
            k, n = float((ok * w).sum()), float(w.sum())
            lo, hi = wilson_ci(int(round(k)), int(round(n))) if n else (math.nan, math.nan)
            metric = "accuracy (lesion slices)" if m is None else f"sensitivity {label}"
            out.append({"oracle": name, "rule": rule, "metric": metric,
                        "estimate": k / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                        "n_slices": int(n), "n_patients": int(sel.sum())})  # fmt: skip
    auc = math.nan
    if 0 < poor_true.sum() < len(poor_true):
        auc = float(roc_auc_score(poor_true, p_poor, sample_weight=weights))
    out.append({"oracle": name, "rule": "threshold-free", "metric": "AUC mRS 3-6 vs 0-2",
                "estimate": auc, "ci_low": math.nan, "ci_high": math.nan,
                "n_slices": int(weights.sum()), "n_patients": len(poor_true)})  # fmt: skip
    return out


def _best_cut(p_poor, poor_true, weights) -> float:
    """The cut ``p >= cut`` that maximises the smaller margin over :data:`TARGETS`."""
    cuts = np.r_[np.unique(p_poor), np.inf]
    pred = p_poor[None, :] >= cuts[:, None]
    w_good, w_poor = weights * ~poor_true, weights * poor_true
    s_good = (~pred * w_good).sum(1) / max(w_good.sum(), 1e-12)
    s_poor = (pred * w_poor).sum(1) / max(w_poor.sum(), 1e-12)
    margin = np.minimum(s_good - TARGETS["mRS 0-2"], s_poor - TARGETS["mRS 3-6"])
    return float(cuts[int(np.argmax(margin))])


def _lesion_area_rows(table: pd.DataFrame, train_patients, test_patients) -> list[dict]:

    need = ["participant_id", "lesion_visible", "lesion_area_mm2", "mrs_3months"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise OracleError(f"slice table lacks column(s) {missing} for the lesion-area baseline")
    t = table[table["lesion_visible"].astype(bool) & table["mrs_3months"].notna()]
    pid = t["participant_id"].astype(str)
    x = np.log1p(pd.to_numeric(t["lesion_area_mm2"]).fillna(0).to_numpy(float))[:, None]
    poor = pd.to_numeric(t["mrs_3months"]).to_numpy() > GOOD_MAX
    tr = pid.isin({str(p) for p in train_patients}).to_numpy()
    te = pid.isin({str(p) for p in test_patients}).to_numpy()
    if not te.any() or len(np.unique(poor[tr])) < 2:
        return []
    fit = LogisticRegression().fit(x[tr], poor[tr])
    return _rows("slice lesion area (logistic)", fit.predict_proba(x[te])[:, 1], poor[te],
                 np.ones(int(te.sum())), float(poor[tr].mean()))  # fmt: skip


def cross_fitted_poor(df: pd.DataFrame, terms, seed: int = 0) -> np.ndarray:
    """P(mRS 3-6) of each patient from PO fits that did not see them.

    ``CV_FOLDS``-fold cross-fitting stratified by outcome group, repeated ``CV_REPEATS``
    times with seeded shuffles and averaged, so that every patient of the cohort is predicted
    out of sample (raises :class:`OrdinalFitError` when a fold's fit fails).
    """

    poor = df["mrs_3months"].to_numpy() > GOOD_MAX
    out = np.zeros(len(df))
    for r in range(CV_REPEATS):
        folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed + r)
        for tr, te in folds.split(np.zeros(len(df)), poor):
            out[te] += _po_poor(df.iloc[tr], df.iloc[te], terms) / CV_REPEATS
    return out


def _po_poor(train: pd.DataFrame, test: pd.DataFrame, terms) -> np.ndarray:
    """P(mRS 3-6) of ``test`` from a PO fit of mRS on ``terms`` in ``train``."""

    probs = fit_proportional_odds(train, _formula(train, terms)).predict_proba(test)
    cols = [lv for lv in probs.columns if int(lv) > GOOD_MAX]
    return probs[cols].sum(axis=1).to_numpy()


def _formula(train: pd.DataFrame, terms) -> str:
    # A covariate constant among the training patients is left out of the fit.
    terms = [c for c in terms if train[c].nunique() > 1]
    return "mrs_3months ~ " + " + ".join(f"C({c})" if c == "territory0" else c for c in terms)


def mrs_oracle(
    cohort,
    train_patients,
    test_patients,
    lesion_slices: pd.Series,
    all_lesion_slices: pd.Series | None = None,
    slice_table: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-class sensitivity of the two oracles on the test patients' lesion slices.

    Parameters
    ----------
    cohort : hypo.cohort.Cohort
        A synthetic cohort (truth and generator.json).
    train_patients, test_patients : iterable of str
        Patients to fit the PO oracle on and to evaluate on.
    lesion_slices : Series
        Lesion slices per test patient (index participant_id): the weights that make the
        numbers comparable with the mRS model's slice-level Table 3.
    all_lesion_slices : Series, optional
        Lesion slices of every patient of the cohort: adds the true model on all of them.
    slice_table : DataFrame, optional
        The slice store's table (``participant_id``, ``lesion_visible``,
        ``lesion_area_mm2``, ``mrs_3months``): adds the ``slice lesion area`` baseline.

    Returns
    -------
    OracleResult
        ``table``: ``oracle, rule, metric, estimate, ci_low, ci_high, n_slices,
        n_patients``; Wilson CIs over slices (as the model's table; patients cluster them,
        so they are optimistic); and ``note`` (why a fitted oracle is missing),
        ``n_train``, ``formula`` (fitted PO), ``image_formula`` (image PO),
        ``balanced_at``.
    """

    df = _patient_table(cohort)
    has = df["mrs_3months"].notna() & (df["group"].astype(str) == "stroke")
    has &= df["lesion_volume_ml"].fillna(0) > 0
    train = df[has & df["participant_id"].isin({str(p) for p in train_patients})].copy()
    test = df[has & df["participant_id"].isin({str(p) for p in test_patients})].copy()
    w = lesion_slices.reindex(test["participant_id"]).fillna(0).to_numpy(float)
    test = test[w > 0]
    w = w[w > 0]
    if len(test) == 0:
        raise OracleError("no test patient with a lesion slice and a 3-month mRS")
    train["mrs_3months"] = train["mrs_3months"].astype(int)
    formula = _formula(train, ORACLE_TERMS)
    image_formula = _formula(train, IMAGE_TERMS)
    poor_true = test["mrs_3months"].astype(int).to_numpy() > GOOD_MAX
    # The balanced rule's cut: the poor outcome's share among the training patients.
    share = float((train["mrs_3months"] > GOOD_MAX).mean()) if len(train) else 0.5
    rows = _rows("true model", test["p_poor_true_model"].to_numpy(), poor_true, w, share)
    notes = []

    def attempt(name, fn):
        # A failed clinical fit must not hide the true-model ceiling; the note says why.
        try:
            return fn()
        except OrdinalFitError as e:
            notes.append(f"{name} not available: {e}")
            return None

    for name, terms in (("fitted PO", ORACLE_TERMS), ("image PO", IMAGE_TERMS)):
        p_poor = attempt(name, lambda t=terms: _po_poor(train, test, t))
        if p_poor is not None:
            rows += _rows(name, p_poor, poor_true, w, share)
    if all_lesion_slices is not None:
        wa = all_lesion_slices.reindex(df.loc[has, "participant_id"]).fillna(0).to_numpy(float)
        every = df[has][wa > 0]
        poor_all = every["mrs_3months"].astype(int).to_numpy() > GOOD_MAX
        rows += _rows("true model, all patients", every["p_poor_true_model"].to_numpy(),
                      poor_all, wa[wa > 0], share)  # fmt: skip
        every = every.assign(mrs_3months=every["mrs_3months"].astype(int))
        for name, terms in (("fitted PO", ORACLE_TERMS), ("image PO", IMAGE_TERMS)):
            label = f"{name}, all patients ({CV_FOLDS}-fold cross-fitted)"
            p_cv = attempt(label, lambda t=terms: cross_fitted_poor(every, t))
            if p_cv is not None:
                rows += _rows(label, p_cv, poor_all, wa[wa > 0], share)
    if slice_table is not None:
        rows += _lesion_area_rows(slice_table, train_patients, test_patients)
    return OracleResult(
        table=pd.DataFrame(rows),
        note="; ".join(notes),
        n_train=len(train),
        formula=formula,
        image_formula=image_formula,
        balanced_at=share,
    )


def oracle_for_model(model_dir: str | Path, cohort=None, store=None) -> OracleResult:
    """The oracle table for a shipped mRS model: its card's split of its cohort."""

    model_dir = Path(model_dir)
    card = read_card(model_dir)
    if cohort is None:
        cohort = hc.load(default_cohort_dir("dev"))
    if store is None:
        store = build_slice_store(cohort, PreprocessConfig(**card["preprocessing"]), progress=False)
    seen = set(map(str, card["train_patients"])) | set(map(str, card["val_patients"]))
    test = set(map(str, card.get("test_patients") or [])) or (set(cohort.participant_ids) - seen)
    t = store.table
    les = t[t["lesion_visible"].astype(bool)]
    counts = les.groupby(les["participant_id"].astype(str)).size()
    # The test rows take their own patients' counts; all counts add the whole-cohort row.
    return mrs_oracle(cohort, card["train_patients"], sorted(test), counts, counts, t)


def write_oracle(out_dir: str | Path, result: OracleResult) -> None:
    """``evaluation_oracle.csv`` and ``.md`` in ``out_dir`` (the model's evaluation
    folder)."""

    out_dir = Path(out_dir)
    table = result.table
    write_table_atomic(out_dir / "evaluation_oracle.csv", table)
    t = table.copy()
    t["value"] = [f"{e:.4f}" if not np.isfinite(lo) else f"{e:.4f} [{lo:.4f} {hi:.4f}]"
                  for e, lo, hi in zip(t["estimate"], t["ci_low"], t["ci_high"])]  # fmt: skip
    md = (
        "# Oracle: the true covariates of the same test patients\n\n"
        "The ceiling for what an image can tell about the 3-month mRS: `true model` is the "
        "generator's outcome model with its true coefficients and covariates (the Bayes "
        "classifier of mRS 0-2 vs 3-6); `fitted PO` a proportional-odds model on the true "
        f"covariates (`{result.formula or ORACLE_FORMULA}`) fitted on the "
        f"{result.n_train} training patients; `image PO` the same on what a perfect "
        f"image reader could see (`{result.image_formula}`). Rules: `P > 0.5` (the "
        "Bayes rule for accuracy) and `balanced` (mRS 3-6 when its probability exceeds its "
        f"share among the training patients, {result.balanced_at:.3f}: what "
        "class-weighted training approximates); `best cut for targets` (optimistic: the cut "
        "chosen on these test patients that comes closest to the per-class targets "
        f"{TARGETS['mRS 0-2']:.2f} / {TARGETS['mRS 3-6']:.2f}; if it misses, no threshold on "
        "that oracle's per-patient probability reaches both here). `true model, all patients`: the "
        "true model on every patient of the cohort with a lesion slice and an mRS (it needs "
        f"no fit); `..., all patients ({CV_FOLDS}-fold cross-fitted)`: the PO oracles "
        f"predicted out of sample for every such patient ({CV_FOLDS} folds x {CV_REPEATS} "
        "seeded repeats, averaged); `slice lesion area (logistic)`: not an oracle but a "
        "floor, a logistic regression on the log of the reader's lesion area on each slice "
        "(per slice, fitted on the training patients' lesion slices). Each oracle patient's "
        "prediction counts once per "
        "lesion slice, as in the mRS model's table; Wilson 95 % CIs over slices; AUC weighted "
        "by lesion slices.\n\n"
        + markdown_table(t[["oracle", "rule", "metric", "value", "n_slices", "n_patients"]])
        + (f"\n{result.note}\n" if result.note else "\n")
    )
    write_text_atomic(out_dir / "evaluation_oracle.md", md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hypo.study.oracle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", type=Path, help="mRS model folder (card.json)")
    p.add_argument("--cohort", type=Path, default=None, help="the model's cohort (default dev)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default HYPO_DATA/oracle/<model folder name>; pass the model "
        "folder itself to regenerate a shipped evaluation_oracle.md)",
    )
    args = p.parse_args(argv)

    cohort = hc.load(args.cohort) if args.cohort else None
    try:
        result = oracle_for_model(args.model, cohort)
    except OracleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or data_dir() / "oracle" / Path(args.model).resolve().name
    out.mkdir(parents=True, exist_ok=True)
    write_oracle(out, result)
    print(result.table.to_string(index=False))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --------------------------------------------------------------------------- main study


def truth_rows(data: pd.DataFrame, cohort) -> pd.DataFrame | None:
    """Oracle fit of the main study on the generator's truth: ``true_value``, ``covered``.

    The outcome is refitted with the generator's own covariates
    (:func:`hypo.stats.calibration.generator_design`), the only specification whose
    coefficients are the documented ones: a model that leaves some out estimates other
    (marginal) quantities. None for a cohort without the generator's truth.
    """
    gen_file = Path(cohort.root) / layout.GENERATOR
    truth_file = Path(cohort.root) / layout.TRUTH_TABLE
    if not gen_file.is_file() or not truth_file.is_file():
        return None
    gen = json.loads(gen_file.read_text(encoding="utf-8"))
    coef = (gen.get("outcome_model") or {}).get("coefficients") or {}
    truth = pd.read_csv(truth_file, sep="\t", dtype={"participant_id": str})
    need = {"participant_id", "swelling", "true_tissue_volume_ml", "territory", "side"}
    if not need <= set(truth.columns) or not coef:
        raise OracleError(f"{truth_file}: lacks {sorted(need - set(truth.columns))}")
    t = truth.set_index("participant_id")
    pid = data["participant_id"].astype(str)
    cov = data.reset_index(drop=True).assign(
        **{c: pid.map(t[c]).to_numpy() for c in sorted(need - {"participant_id"})}
    )
    d = generator_design(cov, unknown_side=math.nan)
    d[OUTCOME] = data[OUTCOME].to_numpy()
    ref = "MCA" if "MCA" in set(d["territory"]) else sorted(set(d["territory"]))[0]
    truth_value = _true_coefficients(coef, d, ref)
    rhs = " + ".join([*TRUTH_COVARIATES, f"C(territory, Treatment('{ref}'))"])
    base = {
        "hypothesis": "truth",
        "family": "synthetic_truth",
        "analysis": "oracle",
        "map_source": "truth",
        "model": "generator",
        "coding": "mrs",
        "expected_direction": "",
        "error": "",
    }
    try:
        fit = fit_outcome(d, rhs, OUTCOME, "mrs")
    except ValueError as e:
        row = {**base, "feature": "swelling", "term": "swelling"}
        row.update(error=f"{type(e).__name__}: {e}", true_value=truth_value["swelling"])
        return pd.DataFrame([row])
    rows = []
    prefix = f"C(territory, Treatment('{ref}'))[T."
    for _, r in fit.iterrows():
        tv = truth_value.get(r["term"])
        tv = math.nan if tv is None else float(tv)
        term = str(r["term"])
        if term.startswith(prefix):  # patsy's name is unreadable in tables and plots
            term = f"territory_{term[len(prefix) : -1]}_vs_{ref}"
        rows.append(
            {
                **base,
                "feature": term,
                "term": term,
                **{k: r[k] for k in ("estimate", "se", "OR", "OR_low", "OR_high", "p", "n")},
                "direction": r["direction"],
                "true_value": tv,
                "covered": (bool(r["ci_low"] <= tv <= r["ci_high"]) if np.isfinite(tv) else pd.NA),
            }
        )
    return pd.DataFrame(rows)


#: The generator's outcome covariates in the order the oracle formula names them.
TRUTH_COVARIATES = (
    "swelling",
    "log_lesion_volume_ml_plus_1",
    "age_per_decade_above_70",
    "mrs_before",
    "female",
    "right_side",
    "nihss_baseline",
    "ivt",
    "iat",
)


def _true_coefficients(coef: dict, d: pd.DataFrame, ref: str) -> dict:
    """The generator's coefficient of each oracle term (territories against ``ref``)."""
    gamma = coef.get("swelling_per_sd_by_cut") or []
    po = bool(coef.get("proportional_odds", True)) and len(set(gamma)) <= 1
    out = {c: coef.get(c) for c in TRUTH_COVARIATES}
    out["swelling"] = float(gamma[0]) if gamma and po else math.nan
    terr = coef.get("territory") or {}
    for lv in sorted(set(d["territory"]) - {ref}):
        name = f"C(territory, Treatment('{ref}'))[T.{lv}]"
        out[name] = terr.get(lv, math.nan) - terr.get(ref, 0.0)
    return out
