"""The mRS model on held-out slices: Table 3 and the CAM panels of Figures 14 and 15.

What the paper did (section 4.2, Table 3, Figures 14/15): a three-class slice model
("no stroke", "mRS 0-2", "mRS 3-6"; a lesion slice takes its patient's 3-month outcome)
reached 92.06 % accuracy on its test set, 99.09 % on slices without a lesion, 70.18 % on
"mRS 0-2" and 58.13 % on "mRS 3-6" (Wilson intervals). Grad-CAM and Grad-CAM++ maps of a
few hand-picked patients were then read by eye: the lesion for a mild stroke (Fig. 14),
deformation and asymmetry away from the lesion for a severe one (Fig. 15).

What hypo measures instead: the same per-class accuracies on slices of patients the model
never trained or validated on, each with a Wilson interval (slices as independent, as the
paper) and a patient-clustered bootstrap interval (slices of a patient are correlated),
the confusion matrix, and the lesion-slice AUC of "mRS 3-6" vs "mRS 0-2". The panels show
examples of every true class picked by a seeded rule (random patients; for a lesion class
the patient's slice with the largest lesion cross-section), not by hand, with the maps of
every class on one shared raw colour scale.

Labels: :func:`hypo.nets.labels.mrs_labels` (0 = no lesion on the slice, 1 = lesion slice
of a patient with mRS 0-2, 2 = lesion slice with mRS 3-6). Patients without a 3-month
mRS are left out and counted, never guessed.

Command line: ``python -m analyses.mrs_model`` (default: synthetic analysis cohort,
``models/mrs-gap-128``); in a notebook ``mrs_model.run(RunSettings(out=..., model_dir=...),
MrsModelConfig())``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotnine as p9
from sklearn.metrics import confusion_matrix

from hypo._util import rng_for
from hypo.cam import compute
from hypo.nets.evaluation import evaluate_mrs, markdown_table, table3
from hypo.nets.labels import MRS_CLASSES, mrs_labels
from hypo.report.figures import save_figure
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

NAME = "mrs_model"
#: Paper's Table 3 (test set of the original data), for context in the report only.
PAPER_TABLE3 = {
    "accuracy": 0.9206,
    "sensitivity no stroke": 0.9909,
    "sensitivity mRS 0-2": 0.7018,
    "sensitivity mRS 3-6": 0.5813,
}


@dataclass(frozen=True)
class MrsModelConfig:
    """Settings of the mRS-model experiment.

    Parameters
    ----------
    n_examples : int
        Example slices per true class in the panels.
    n_boot : int
        Patient-bootstrap replicates of the intervals.
    """

    n_examples: int = 2
    n_boot: int = 2000


#: The quick run's settings (tests, a first look).
QUICK = MrsModelConfig(n_examples=1, n_boot=50)


# --------------------------------------------------------------------------- the science


def pick_panel_slices(slices: pd.DataFrame, n_per_class: int, seed: int) -> pd.DataFrame:
    """Example slices per true class, by a seeded rule rather than by hand.

    Per class, patients are drawn in a seeded random order (``rng_for(seed, "panels",
    class)``); each contributes one slice: for a lesion class its slice of that class with
    the largest lesion cross-section (``lesion_area_mm2``, ties by slice), for "no stroke"
    the middle one of its no-lesion slices.

    Parameters
    ----------
    slices : DataFrame
        One row per labelled slice with ``row`` (store row), ``participant_id``, ``slice``,
        ``y`` (true class) and ``lesion_area_mm2``.
    """
    picks = []
    for k in sorted(slices["y"].unique()):
        cand = slices[slices["y"] == k]
        pids = np.array(sorted(cand["participant_id"].unique()))
        order = rng_for(seed, "panels", int(k)).permutation(len(pids))
        for pid in pids[order][:n_per_class]:
            own = cand[cand["participant_id"] == pid].sort_values("slice")
            if k > 0:
                area = pd.to_numeric(own["lesion_area_mm2"], errors="coerce").fillna(0)
                pick = own.loc[area.idxmax()]
            else:
                pick = own.iloc[len(own) // 2]
            picks.append(pick)
    return pd.DataFrame(picks).reset_index(drop=True)


def confusion_table(y, pred, classes) -> pd.DataFrame:
    """Slices per (true class, predicted class), with row shares."""
    cm = confusion_matrix(y, pred, labels=range(len(classes)))
    rows = []
    for t, tname in enumerate(classes):
        n = cm[t].sum()
        for p, pname in enumerate(classes):
            rows.append(
                {
                    "true_class": tname,
                    "predicted_class": pname,
                    "slices": int(cm[t, p]),
                    "share_of_true_class": cm[t, p] / n if n else np.nan,
                }
            )
    return pd.DataFrame(rows)


def accuracy_figure(image: pd.DataFrame, path: Path) -> Path:
    """Per-class accuracy with Wilson and patient-bootstrap intervals (plotnine)."""
    d = image[image["metric"].str.startswith(("accuracy", "sensitivity "))].copy()
    d["label"] = (
        d["metric"].str.replace("sensitivity ", "", regex=False).replace({"accuracy": "all slices"})
    )
    d["label"] = pd.Categorical(d["label"], categories=list(d["label"])[::-1])
    long = pd.concat(
        [
            d.assign(interval="Wilson", low=d["wilson_low"], high=d["wilson_high"]),
            d.assign(interval="patient bootstrap", low=d["boot_low"], high=d["boot_high"]),
        ]
    )
    plot = (
        p9.ggplot(long, p9.aes("label", "estimate", ymin="low", ymax="high", colour="interval"))
        + p9.geom_pointrange(position=p9.position_dodge(width=0.5))
        + p9.coord_flip()
        + p9.scale_y_continuous(limits=(0, 1))
        + p9.labs(x="", y="accuracy among slices of the true class (95 % CI)", colour="")
        + p9.theme_bw()
    )
    return save_figure(plot, path, width=6.5, height=3.0)


# --------------------------------------------------------------------------- steps


def labelled_slices(inp: Inputs):
    """The mRS labels of the held-out slices and their store rows."""
    classes = inp.classes
    if len(classes) != len(MRS_CLASSES):
        raise ExperimentError(
            f"model {inp.model_dir}: card classes {classes}; the mRS experiment needs a "
            f"three-class model {list(MRS_CLASSES)} (e.g. models/mrs-gap-128)"
        )
    table = inp.store.table.iloc[inp.held_out].reset_index(drop=True)
    labels = mrs_labels(table)
    if len(labels.index) == 0:
        raise ExperimentError(
            f"cohort {inp.store.cohort_id}: no held-out patient has a 3-month mRS "
            "(mrs_3months); the mRS model cannot be evaluated"
        )
    return table, labels, inp.held_out[labels.index]


def predictions(table, labels, rows, proba, classes) -> pd.DataFrame:
    """One row per labelled slice: store row, ids, mRS, lesion area, true and predicted
    class and the class probabilities."""
    slices = table.iloc[labels.index][["participant_id", "slice"]].reset_index(drop=True)
    slices.insert(0, "row", rows)
    slices["mrs_3months"] = table["mrs_3months"].iloc[labels.index].to_numpy()
    slices["lesion_area_mm2"] = (
        table["lesion_area_mm2"].iloc[labels.index].to_numpy()
        if "lesion_area_mm2" in table
        else np.nan
    )
    slices["y"] = labels.y
    slices["true_class"] = [classes[k] for k in labels.y]
    slices["predicted_class"] = [classes[k] for k in proba.argmax(axis=1)]
    for k, c in enumerate(classes):
        slices[f"p_{c}"] = proba[:, k]
    return slices


def panels(inp: Inputs, slices, out: Path, cfg: MrsModelConfig, seed: int) -> tuple:
    """CAM panels of the seeded example slices: (picks table, figure paths, CAM layer)."""
    classes = inp.classes
    picks = pick_panel_slices(slices, cfg.n_examples, seed)
    rows = picks["row"].to_numpy()
    cams = compute(inp.model, inp.images(rows), layer=inp.cam_layer, methods=PANEL_METHODS)
    examples = cam_examples(inp, rows, cams, classes, model_label="mRS")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths = write_method_panels(
        out, "cam_panels", examples, classes, "mRS model, every class, examples per true class"
    )
    cols = ["participant_id", "slice", "mrs_3months", "true_class", "predicted_class"]
    return picks[[*cols, *[f"p_{c}" for c in classes]]], paths, cams.layer


def _paper_table(ev) -> pd.DataFrame:
    image = ev.image.set_index("metric")
    return pd.DataFrame(
        [
            {
                "metric": m,
                "paper (original data)": v,
                "hypo": float(image.loc[m, "estimate"]) if m in image.index else np.nan,
            }
            for m, v in PAPER_TABLE3.items()
        ]
    )


def _report(inp, labels, rows, ev, t3, conf, picks_out, figs, cam_layer, cfg, seed) -> tuple:
    """(intro, warnings, sections) of the report."""
    classes = inp.classes
    counts = pd.Series(labels.y).value_counts().reindex(range(len(classes)), fill_value=0)
    excluded = labels.excluded_patients
    intro = setting_lines(
        inp,
        "task: 3-class mRS slice model (paper 4.2, Table 3, Figures 14/15)",
        [
            f"Labelled slices: {len(rows)} of {len(set(labels.patients))} patients; "
            + ", ".join(f"{classes[k]}: {int(counts[k])}" for k in range(len(classes)))
            + f". Patients without a 3-month mRS left out: {len(excluded)}"
            + (f" ({', '.join(excluded)})." if excluded else "."),
            f"CAM layer `{cam_layer}`, methods Grad-CAM and Grad-CAM++ (pre-softmax scores, "
            f"raw maps), {cfg.n_examples} example(s) per true class; bootstrap {cfg.n_boot} "
            f"patient resamples, seed {seed}.",
        ],
    )
    warnings = []
    if min(counts) < 20:
        warnings.append(
            "Some true class has fewer than 20 slices: its accuracy interval is wide "
            f"(counts {dict(zip(classes, counts.tolist()))})."
        )
    sections = [
        Section(
            "Table 3: accuracy per true class",
            [
                "Accuracy of a class = share of slices of that true class predicted as it "
                '(the paper\'s "Accuracy <class>"). Wilson intervals treat slices as '
                "independent; the patient-bootstrap intervals resample patients.",
                Table(t3, "Table 3 layout (Wilson 95 % CI)"),
                Table(shown(ev.image), "All metrics with both intervals (mrs_model.csv)"),
                Figure("figures/class_accuracy.png", "Per-class accuracy, both intervals."),
                Table(
                    shown(_paper_table(ev)),
                    "The paper's numbers on its own (real) test set, for context only: "
                    "different data, not a replication target.",
                ),
            ],
        ),
        Section("Confusion matrix", [Table(shown(conf), "Slices per true and predicted class")]),
        Section(
            "Figures 14/15: CAM panels per true class",
            [
                "Rows: example slices per true class (seeded random patients; a lesion class "
                "shows the patient's slice with the largest lesion). Columns: native slice, "
                "network input (lesion outline in red), then Grad-CAM and Grad-CAM++ of every "
                "class; one figure per method, each on one raw colour scale shared by its "
                "panels (pre-softmax scores, maps not normalised per image); R/L mark the "
                "patient's sides (radiological view).",
                *[Figure(path, f"mRS model, {name} of every class") for path, name in figs],
                Table(shown(picks_out), "The slices shown"),
            ],
        ),
    ]
    return intro, warnings, sections


def run(settings: RunSettings, cfg: MrsModelConfig = MrsModelConfig()) -> dict:
    """Run the experiment: evaluate, draw panels, write tables and report; return the
    paths."""
    started = time.perf_counter()
    say = settings.say(NAME)
    inp = open_inputs(settings)
    classes = inp.classes
    table, labels, rows = labelled_slices(inp)
    say(
        f"{len(rows)} labelled slices of {len(set(labels.patients))} patients; "
        f"{len(labels.excluded_patients)} patient(s) without mRS left out"
    )
    proba = predict_proba(inp, rows)
    ev = evaluate_mrs(
        labels.y,
        proba,
        labels.patients,
        n_boot=cfg.n_boot,
        seed=settings.seed,
        class_names=tuple(classes),
    )
    t3 = table3(ev)
    conf = confusion_table(labels.y, proba.argmax(axis=1), classes)
    slices = predictions(table, labels, rows, proba, classes)
    say("CAM panels")
    out = Path(settings.out)
    picks_out, figs, cam_layer = panels(inp, slices, out, cfg, settings.seed)
    accuracy_figure(ev.image, out / "figures" / "class_accuracy.png")
    intro, warnings, sections = _report(
        inp, labels, rows, ev, t3, conf, picks_out, figs, cam_layer, cfg, settings.seed
    )
    paths = write_experiment(
        out,
        NAME,
        tables={
            "mrs_model": ev.image,
            "table3": t3,
            "confusion": conf,
            "predictions": slices,
            "panel_slices": picks_out,
        },
        sections=sections,
        config=settings.record_of(cfg),
        inputs=inp,
        intro=intro,
        warnings=warnings,
        extra_provenance={
            "seeds": {"bootstrap": settings.seed, "panels": settings.seed},
            "n_boot": cfg.n_boot,
            "cam_layer": cam_layer,
            "excluded_no_mrs": labels.excluded_patients,
        },
        started=started,
    )
    say(f"accuracy {ev.metric('accuracy'):.4f}; wrote {out}")
    if settings.progress:
        print(markdown_table(t3), file=sys.stderr)
    return paths
