"""What the stroke model gets "wrong": missed lesions and TIA slices it calls stroke.

What the paper did (section 4.1, Figures 12 and 13): it showed a few lesion slices the
model called "no stroke" (stroke probability 18-33 %) whose Grad-CAM / Grad-CAM++ maps
still pointed at the lesion, and two TIA patients (131, 135) whose slices the model called
stroke with 66 % and 99 %; a neurologist then found real infarcts there: the labels, not
the model, were wrong. Both were judged by eye on hand-picked examples.

What hypo measures instead, on slices of patients the model never trained or validated on:

* False negatives (lesion slice, p(stroke) < threshold): how many, and whether the
  stroke-class Grad-CAM still points into the lesion (pointing game, relevance mass in
  the lesion), next to the same numbers on correctly found lesion slices.
* TIA patients: per patient the maximum stroke probability over its slices; a patient is
  "called stroke" when it reaches the threshold. On a synthetic cohort the generator
  planted reader-missed infarcts in some TIA patients (``truth().mislabelled_tia == 1``):
  the share of those the model calls stroke (its sensitivity for label errors) against the
  share of clean TIA patients it calls stroke (false alarms), each with a Wilson interval,
  and whether the called slice holds the planted lesion.
* Panels of the most confident false negatives and TIA-called-stroke slices (one slice per
  patient), with the lesion outlined (the planted one on a synthetic cohort).

Command line: ``python -m analyses.misclassified`` (default: synthetic analysis cohort,
``models/stroke-gap-128``); in a notebook ``misclassified.run(RunSettings(out=...,
model_dir=...), MisclassifiedConfig())``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from hypo._util import rng_for
from hypo.cam import compute
from hypo.cam.metrics import pointing_game, relevance_mass_accuracy
from hypo.intervals import wilson_ci
from hypo.nets.labels import stroke_labels
from hypo.report.writer import Figure, Section, Table
from hypo.study.experiments.frame import (
    PANEL_METHODS,
    ExperimentError,
    Inputs,
    RunSettings,
    cam_examples,
    open_inputs,
    predict_proba,
    setting_lines,
    shown,
    write_experiment,
    write_method_panels,
)

NAME = "misclassified"
#: Cap on correctly found lesion slices whose maps are computed for comparison.
TP_SAMPLE = 300


@dataclass(frozen=True)
class MisclassifiedConfig:
    """Settings of the misclassification experiment.

    Parameters
    ----------
    threshold : float
        Decision threshold on p(stroke) (paper: 0.5).
    n_examples : int
        Slices per panel figure.
    """

    threshold: float = 0.5
    n_examples: int = 6

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ExperimentError(f"--threshold {self.threshold}: expected 0 < t < 1")


#: The quick run's settings (tests, a first look).
QUICK = MisclassifiedConfig(n_examples=2)


@dataclass
class LabelErrors:
    """Planted label errors found vs clean TIA false alarms (:func:`label_error_table`)."""

    #: Rows ``planted_mislabelled_tia`` and ``clean_tia``: ``called_stroke``, ``n``,
    #: ``share``, ``wilson_low``/``wilson_high``, ``median_max_p_stroke``.
    table: pd.DataFrame
    #: AUC of the maximum p(stroke), planted vs clean TIA patients (NaN without both).
    auc_planted_vs_clean: float


def _is_tia(group: pd.Series) -> np.ndarray:
    return group.astype(str).str.strip().str.upper().eq("TIA").to_numpy()


def patient_table(slices: pd.DataFrame, threshold: float, truth: pd.DataFrame | None):
    """One row per patient: group, slices, maximum p(stroke) and its slice, calls.

    Parameters
    ----------
    slices : DataFrame
        One row per slice: ``participant_id``, ``slice``, ``group``, ``y`` (reader's
        label), ``p_stroke``, and on a synthetic cohort ``true_lesion_slice``.
    truth : DataFrame, optional
        The synthetic cohort's truth table (index ``participant_id``).
    """
    s = slices.sort_values(["participant_id", "slice"])
    at_max = s.loc[s.groupby("participant_id")["p_stroke"].idxmax()].set_index("participant_id")
    per = s.groupby("participant_id").agg(
        group=("group", "first"),
        n_slices=("slice", "size"),
        n_lesion_slices=("y", "sum"),
        max_p_stroke=("p_stroke", "max"),
        n_slices_called_stroke=("p_stroke", lambda p: int((p >= threshold).sum())),
    )
    per["slice_at_max"] = at_max["slice"].reindex(per.index).astype(int)
    per["called_stroke"] = per["max_p_stroke"] >= threshold
    # A reader re-checking the TIA patients in order of the model's suspicion finds a label
    # error after this many patients, whatever the threshold.
    tia = _is_tia(per["group"])
    per["rank_among_tia"] = pd.Series(np.nan, index=per.index)
    per.loc[tia, "rank_among_tia"] = per.loc[tia, "max_p_stroke"].rank(
        ascending=False, method="min"
    )
    if truth is not None:
        per["mislabelled_tia"] = truth["mislabelled_tia"].reindex(per.index).astype("Int64")
        per["true_lesion"] = truth["true_lesion"].reindex(per.index).astype("Int64")
        if "true_lesion_slice" in s:
            per["slice_at_max_has_true_lesion"] = (
                at_max["true_lesion_slice"].reindex(per.index).astype(bool)
            )
    return per.reset_index()


def label_error_table(per: pd.DataFrame) -> LabelErrors:
    """Planted mislabelled TIA patients called stroke vs clean TIA patients called stroke.

    Rows ``planted_mislabelled_tia`` (sensitivity for the label errors) and
    ``clean_tia`` (false-alarm rate), each with ``k``/``n``, Wilson interval and the
    median of the patients' maximum p(stroke); and the AUC of the maximum p(stroke) of
    planted against clean patients.
    """
    tia = per[_is_tia(per["group"])]
    rows = []
    for name, sel in (
        ("planted_mislabelled_tia", tia["mislabelled_tia"] == 1),
        ("clean_tia", tia["mislabelled_tia"] == 0),
    ):
        g = tia[sel.fillna(False).to_numpy(bool)]
        k, n = int(g["called_stroke"].sum()), len(g)
        lo, hi = wilson_ci(k, n)
        rows.append(
            {
                "patients": name,
                "called_stroke": k,
                "n": n,
                "share": k / n if n else np.nan,
                "wilson_low": lo,
                "wilson_high": hi,
                "median_max_p_stroke": float(g["max_p_stroke"].median()) if n else np.nan,
            }
        )
    planted = tia[tia["mislabelled_tia"].fillna(0).to_numpy(int) == 1]
    clean = tia[tia["mislabelled_tia"].fillna(1).to_numpy(int) == 0]
    auc = np.nan
    if len(planted) and len(clean):
        y = np.r_[np.ones(len(planted)), np.zeros(len(clean))]
        auc = roc_auc_score(y, np.r_[planted["max_p_stroke"], clean["max_p_stroke"]])
    return LabelErrors(pd.DataFrame(rows), auc)


def localisation(inp: Inputs, rows) -> pd.DataFrame:
    """Stroke-class Grad-CAM / Grad-CAM++ against the lesion mask of store ``rows`` (inside
    the ground-truth brain on a synthetic cohort, over the whole slice otherwise)."""
    if len(rows) == 0:
        return pd.DataFrame(columns=["row", "method", "pointing_game", "relevance_mass"])
    stroke = int(len(inp.card["classes"]) - 1)
    parts = []
    for s in range(0, len(rows), 64):
        r = rows[s : s + 64]
        res = compute(
            inp.model, inp.images(r), layer=inp.cam_layer, methods=PANEL_METHODS, classes=[stroke]
        )
        les = inp.lesion_masks(r)
        b = inp.brain_masks(r)
        for m in PANEL_METHODS:
            a = res[m][:, 0]
            parts.append(
                pd.DataFrame(
                    {
                        "row": r,
                        "method": m,
                        "pointing_game": pointing_game(a, les, b),
                        "relevance_mass": relevance_mass_accuracy(a, les, b),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- steps


def slice_predictions(inp: Inputs, threshold: float, say) -> pd.DataFrame:
    """One row per held-out slice: store row, ids, group, reader's label, p(stroke), call,
    lesion area and (synthetic cohort) whether the slice holds a true lesion."""
    if len(inp.classes) != 2:
        raise ExperimentError(
            f"model {inp.model_dir}: card classes {inp.classes}; this experiment needs the "
            "binary stroke model (classes 'no stroke', 'stroke'), e.g. models/stroke-gap-128"
        )
    rows = inp.held_out
    table = inp.store.table.iloc[rows].reset_index(drop=True)
    y = stroke_labels(table).y
    if "group" not in table or table["group"].isna().all():
        raise ExperimentError(
            f"cohort {inp.store.cohort_id}: participants.tsv has no 'group' column; this "
            "experiment needs each patient's group (stroke / TIA)"
        )
    say(f"predicting {len(rows)} held-out slices")
    p_stroke = predict_proba(inp, rows)[:, 1]
    slices = table[["participant_id", "slice", "group"]].copy()
    slices.insert(0, "row", rows)
    slices["y"] = y
    slices["p_stroke"] = p_stroke
    slices["predicted"] = (p_stroke >= threshold).astype(int)
    slices["lesion_area_mm2"] = (
        pd.to_numeric(table["lesion_area_mm2"], errors="coerce").to_numpy()
        if "lesion_area_mm2" in table
        else np.nan
    )
    truth_lesion = inp.store.masks.get("truth_lesion")
    if truth_lesion is not None:
        slices["true_lesion_slice"] = (
            np.asarray(truth_lesion[rows]).reshape(len(rows), -1).any(axis=1)
        )
    return slices


@dataclass
class _Calls:
    """The slices of each kind of call."""

    fn: pd.DataFrame  # lesion slices called no stroke
    tp: pd.DataFrame  # lesion slices called stroke
    tia_called: pd.DataFrame  # TIA slices called stroke
    counts: pd.DataFrame


def calls(slices: pd.DataFrame) -> _Calls:
    tia = _is_tia(slices["group"])
    lesion, called = slices["y"] == 1, slices["predicted"] == 1
    fn, tp = slices[lesion & ~called], slices[lesion & called]
    tia_called = slices[tia & called]
    fp_stroke = slices[~tia & (slices["y"] == 0) & called]
    counts = pd.DataFrame(
        [
            {"slices": "lesion slices", "n": int(lesion.sum())},
            {"slices": "false negatives (lesion, called no stroke)", "n": len(fn)},
            {"slices": "TIA slices", "n": int(tia.sum())},
            {"slices": "TIA slices called stroke", "n": len(tia_called)},
            {"slices": "no-lesion slices of stroke patients called stroke", "n": len(fp_stroke)},
        ]
    )
    return _Calls(fn, tp, tia_called, counts)


def localisation_on_calls(inp: Inputs, c: _Calls, seed: int) -> tuple:
    """Stroke maps on the false negatives and (a seeded sample of) the true positives:
    per slice and summarised."""
    tp_rows = c.tp["row"].to_numpy()
    if len(tp_rows) > TP_SAMPLE:
        tp_rows = np.sort(rng_for(seed, "tp-sample").choice(tp_rows, TP_SAMPLE, replace=False))
    loc = [
        localisation(inp, r).assign(slices=kind)
        for r, kind in ((c.fn["row"].to_numpy(), "false negative"), (tp_rows, "true positive"))
        if len(r)
    ]
    loc = pd.concat(loc, ignore_index=True) if loc else localisation(inp, tp_rows[:0])
    summary = (
        loc.groupby(["slices", "method"], sort=True)
        .agg(
            n=("row", "size"),
            pointing_game=("pointing_game", "mean"),
            relevance_mass_median=("relevance_mass", "median"),
        )
        .reset_index()
    )
    return loc, summary


def panels(inp: Inputs, c: _Calls, out: Path, n_examples: int) -> list:
    """Panels of the most confident misses and TIA-called-stroke slices, one per patient:
    ``[(figure paths, title, picks), ...]``."""
    truth_lesion = inp.store.masks.get("truth_lesion")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    top_fn = c.fn.sort_values(["p_stroke", "row"]).drop_duplicates("participant_id")
    top_tia = c.tia_called.sort_values(["p_stroke", "row"], ascending=[False, True])
    top_tia = top_tia.drop_duplicates("participant_id")
    figures = []
    for key, picks, title, outline in (
        (
            "false_negatives",
            top_fn[:n_examples],
            "Lesion slices called 'no stroke' (lowest p(stroke))",
            None,
        ),
        (
            "tia_called_stroke",
            top_tia[:n_examples],
            "TIA slices called 'stroke' (highest p(stroke))",
            truth_lesion,
        ),
    ):
        if picks.empty:
            continue
        r = picks["row"].to_numpy()
        cams = compute(inp.model, inp.images(r), layer=inp.cam_layer, methods=PANEL_METHODS)
        masks = None if outline is None else np.asarray(outline[r]).astype(bool)
        ex = cam_examples(inp, r, cams, inp.classes, model_label="stroke", lesion_masks=masks)
        paths = write_method_panels(out, key, ex, inp.classes[::-1], title)
        figures.append((paths, title, picks))
    return figures


def _label_error_paragraphs(per: pd.DataFrame, errors: LabelErrors | None) -> tuple:
    """(paragraphs, warnings) on the planted label errors."""
    if errors is None:
        return [
            "No synthetic truth: the TIA patients called stroke are candidates for a second "
            "reading, not confirmed label errors."
        ], []
    pl = errors.table.set_index("patients")
    k = int(pl.loc["planted_mislabelled_tia", "called_stroke"])
    n = int(pl.loc["planted_mislabelled_tia", "n"])
    kc, nc = int(pl.loc["clean_tia", "called_stroke"]), int(pl.loc["clean_tia", "n"])
    paras = [
        f"The model calls {k} of {n} planted mislabelled TIA patients stroke "
        f"(sensitivity for the label errors) and {kc} of {nc} clean TIA patients "
        f"(false alarms). AUC of the maximum p(stroke), planted vs clean: "
        f"{errors.auc_planted_vs_clean:.3f}."
    ]
    warnings = []
    if n < 10:
        warnings.append(
            f"Only {n} planted mislabelled TIA patient(s): the sensitivity for label "
            "errors is a rough estimate (see its Wilson interval)."
        )
    planted = per[per["mislabelled_tia"].fillna(0).to_numpy(int) == 1]
    ranks = sorted(int(r) for r in planted["rank_among_tia"].dropna())
    n_tia = int(_is_tia(per["group"]).sum())
    paras.append(
        f"Ranked by maximum p(stroke) among the {n_tia} TIA patients, the planted ones "
        f"come at ranks {ranks} (1 = most suspicious): the threshold-free view of how "
        "soon a second reading in the model's order would find them."
    )
    called = planted[planted["called_stroke"]]
    if "slice_at_max_has_true_lesion" in called and len(called):
        hit = called["slice_at_max_has_true_lesion"]
        paras.append(
            f"Of the planted patients called stroke, {int(hit.sum())} of {len(hit)} have "
            "the planted lesion on their highest-probability slice."
        )
    return paras, warnings


def _sections(inp, per, c: _Calls, errors, loc_summary, figures, err_paras) -> list:
    tia_per = per[_is_tia(per["group"])].sort_values("max_p_stroke", ascending=False)
    error_tables = (
        [
            Table(
                shown(errors.table),
                "Planted label errors found vs clean TIA false alarms (Wilson 95 % CI)",
            )
        ]
        if errors is not None
        else []
    )
    sections = [
        Section("Slice counts", [Table(c.counts)]),
        Section(
            "Figure 13: TIA patients called stroke",
            [
                *err_paras,
                *error_tables,
                Table(
                    shown(tia_per.head(20)),
                    "TIA patients by maximum p(stroke) (top 20; all in misclassified.csv)",
                ),
            ],
        ),
        Section(
            "Figure 12: false negatives and their maps",
            [
                "Pointing game = share of slices whose map maximum (inside the brain) lies in "
                "the reader's lesion; relevance mass = share of the map inside the lesion. A "
                "map that still finds the lesion on a missed slice says the evidence was seen "
                "but not enough to cross the threshold.",
                Table(shown(loc_summary), "Stroke-class maps on false negatives vs true positives"),
            ],
        ),
    ]
    truth_lesion = inp.store.masks.get("truth_lesion")
    for paths, title, picks in figures:
        planted = "TIA" in title and truth_lesion is not None
        outline = "ground-truth lesion (synthetic)" if planted else "reader's lesion"
        shown_cols = ["participant_id", "slice", "group", "p_stroke", "lesion_area_mm2"]
        sections.append(
            Section(
                title,
                [
                    *[
                        Figure(
                            path,
                            f"{title}, {name}; one slice per patient; R/L = patient's sides; "
                            f"outline = {outline}",
                        )
                        for path, name in paths
                    ],
                    Table(shown(picks[shown_cols])),
                ],
            )
        )
    return sections


def run(settings: RunSettings, cfg: MisclassifiedConfig = MisclassifiedConfig()) -> dict:
    """Run the experiment: predict, find the misclassified, measure their maps, write
    tables, panels and report; return the paths."""
    started = time.perf_counter()
    say = settings.say(NAME)
    inp = open_inputs(settings)
    slices = slice_predictions(inp, cfg.threshold, say)
    truth = inp.cohort.truth() if getattr(inp.cohort, "is_synthetic", False) else None
    c = calls(slices)
    per = patient_table(slices, cfg.threshold, truth)
    errors = None
    if truth is not None and "mislabelled_tia" in truth:
        errors = label_error_table(per)
    # Localisation of the stroke maps on misses vs hits: does the map still find the lesion?
    say(f"CAMs of {len(c.fn)} false negatives and up to {TP_SAMPLE} true positives")
    loc, loc_summary = localisation_on_calls(inp, c, settings.seed)
    out = Path(settings.out)
    figures = panels(inp, c, out, cfg.n_examples)
    flagged = [
        d.assign(kind=k)
        for d, k in ((c.fn, "false negative"), (c.tia_called, "TIA called stroke"))
        if len(d)
    ]
    flagged = pd.concat(flagged, ignore_index=True) if flagged else c.fn.assign(kind="")
    tables = {
        "misclassified": per,
        "slices_flagged": flagged,
        "localisation": loc,
        "localisation_summary": loc_summary,
    }
    if errors is not None:
        tables["label_errors"] = errors.table
    brain = (
        "(synthetic ground-truth brain)."
        if "truth_brain" in inp.store.masks
        else "(whole slice: no brain mask)."
    )
    intro = setting_lines(
        inp,
        f"task: stroke slice model, threshold {cfg.threshold} on p(stroke) (paper 4.1, "
        "Figures 12/13)",
        [
            f"CAM layer `{inp.cam_layer or 'engine default'}`, Grad-CAM and Grad-CAM++ of the "
            "'stroke' score (pre-softmax); localisation inside the brain " + brain
        ],
    )
    err_paras, warnings = _label_error_paragraphs(per, errors)
    paths = write_experiment(
        out,
        NAME,
        tables=tables,
        sections=_sections(inp, per, c, errors, loc_summary, figures, err_paras),
        config=settings.record_of(cfg),
        inputs=inp,
        intro=intro,
        warnings=warnings,
        extra_provenance={"seeds": {"tp_sample": settings.seed}, "threshold": cfg.threshold},
        started=started,
    )
    say(f"{len(c.fn)} false negatives, {len(c.tia_called)} TIA slices called stroke; wrote {out}")
    return paths
