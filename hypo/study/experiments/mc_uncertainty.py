"""MC-dropout uncertainty against correctness and against how concentrated the CAM is.

What the literature did: Herzog et al. (2020), whose model the paper starts from (section
2 and 3.4), made the stroke slice model Bayesian with Monte Carlo dropout and showed that
its uncertainty flags the predictions that are wrong; the paper itself did not measure
uncertainty, and read the maps of uncertain misclassified slices by eye (Figure 12: "the
model is uncertain since the probability ... is between 18 % and 33 %").

What hypo measures, on slices of patients the model never trained or validated on:

* ``T`` stochastic passes with only the dropout layers active
  (:func:`hypo.nets.mc_dropout.mc_predict`): predictive entropy, mutual information,
  variation ratio and total variance per slice; the prediction is the argmax of the
  predictive mean.
* Uncertainty for errors: the ROC AUC of each uncertainty for "this prediction is wrong"
  (0.5 = no better than chance, 1 = every error is more uncertain than every correct
  prediction), with a patient-clustered bootstrap interval. The deterministic model's
  ``1 - max softmax`` is the baseline any MC measure should beat.
* Uncertainty and the map: the Spearman correlation of each uncertainty with the
  concentration of the predicted class's Grad-CAM (``entropy_norm`` and ``top_share`` of
  :mod:`hypo.features.maps`, on the image-derived brain), with a patient-clustered
  bootstrap interval. A diffuse map (high entropy, low top share) on uncertain slices
  would say the map carries the uncertainty too.

Labels: the reader's slice labels (stroke model) or the 3-class mRS labels (a 3-class
model; patients without mRS are left out). The default analyses a seeded sample of
patients to fit the CPU budget (``--patients 0`` for all).

Command line: ``python -m analyses.mc_uncertainty`` (default: synthetic analysis cohort,
``models/stroke-gap-128``); in a notebook ``mc_uncertainty.run(RunSettings(out=...,
model_dir=...), McUncertaintyConfig())``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotnine as p9
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from hypo._util import rng_for
from hypo.cam import compute
from hypo.features.anatomy import anatomy_for_store
from hypo.features.maps import map_features
from hypo.nets.labels import mrs_labels, stroke_labels
from hypo.nets.mc_dropout import mc_predict
from hypo.report.figures import save_figure
from hypo.report.writer import Figure, Section, Table
from hypo.stats.bootstrap import bootstrap_ci
from hypo.study.experiments.frame import (
    ExperimentError,
    Inputs,
    RunSettings,
    open_inputs,
    predict_proba,
    setting_lines,
    shown,
    write_experiment,
)

NAME = "mc_uncertainty"
#: Per-slice uncertainty columns (``hypo.nets.mc_dropout.uncertainty``) plus the baseline.
UNCERTAINTIES = (
    "predictive_entropy",
    "mutual_information",
    "variation_ratio",
    "total_variance",
    "one_minus_max_softmax",
)
#: CAM concentration features (definitions in hypo.features.maps.FEATURE_DICTIONARY).
CONCENTRATION = ("entropy_norm", "top_share")


@dataclass(frozen=True)
class McUncertaintyConfig:
    """Settings of the MC-dropout experiment.

    Parameters
    ----------
    T : int
        MC-dropout passes (Herzog et al.: 50); at least 2.
    patients : int
        Seeded sample of held-out patients; 0 = all.
    n_boot : int
        Patient-bootstrap replicates.
    """

    T: int = 20
    patients: int = 30
    n_boot: int = 1000

    def __post_init__(self):
        if self.T < 2:
            raise ExperimentError(f"--passes {self.T}: expected at least 2")


#: The quick run's settings (tests, a first look).
QUICK = McUncertaintyConfig(T=5, patients=0, n_boot=30)


def error_auc(data: pd.DataFrame, uncertainties=UNCERTAINTIES) -> dict:
    """ROC AUC of each uncertainty column for ``error`` (1 = wrong prediction).

    Raises ``ValueError`` when ``error`` has one value only (no AUC is defined); the
    bootstrap counts such resamples as failed.
    """
    e = data["error"].to_numpy(int)
    if e.min() == e.max():
        raise ValueError("all predictions right (or all wrong): no AUC for errors")
    return {u: float(roc_auc_score(e, data[u].to_numpy(float))) for u in uncertainties}


def concentration_spearman(
    data: pd.DataFrame, uncertainties=UNCERTAINTIES, features=CONCENTRATION
) -> dict:
    """Spearman rho of each (uncertainty, concentration feature) pair, NaN rows dropped."""
    out = {}
    for f in features:
        for u in uncertainties:
            d = data[[u, f]].dropna()
            if len(d) < 3 or d[u].nunique() < 2 or d[f].nunique() < 2:
                raise ValueError(f"{u} or {f} is constant: no Spearman correlation")
            out[f"{u}|{f}"] = float(spearmanr(d[u], d[f]).statistic)
    return out


def tidy(boot: pd.DataFrame, what: str) -> pd.DataFrame:
    """Bootstrap output of :func:`hypo.stats.bootstrap.bootstrap_ci` as report rows: the
    estimate named for what it is, its interval ``<estimate>_low`` / ``<estimate>_high``."""
    df = boot.reset_index(names="key")
    if what == "auc":
        name = "auc_for_errors"
        df.insert(0, "uncertainty", df.pop("key"))
    else:
        name = "spearman_rho"
        parts = df.pop("key").str.split("|", expand=True)
        df.insert(0, "uncertainty", parts[0])
        df.insert(1, "cam_feature", parts[1])
    return df.rename(columns={"estimate": name, "ci_low": f"{name}_low", "ci_high": f"{name}_high"})


def sample_patients(pids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Boolean mask over ``pids`` keeping ``n`` patients drawn by ``rng_for(seed, ...)``
    (all when ``n`` is 0 or at least the number of patients)."""
    uniq = np.array(sorted(set(pids)))
    if n <= 0 or n >= len(uniq):
        return np.ones(len(pids), bool)
    keep = rng_for(seed, "mc-patients").choice(uniq, n, replace=False)
    return np.isin(pids, keep)


def cam_concentration(inp, rows: np.ndarray, classes: np.ndarray, batch: int = 64):
    """``entropy_norm`` and ``top_share`` of the Grad-CAM of ``classes[i]`` on store row
    ``rows[i]``, on the image-derived anatomy (lesion pixels count as brain)."""
    anat = anatomy_for_store(inp.store, progress=False)
    has_lesion = "lesion" in inp.store.masks
    rows, classes = np.asarray(rows), np.asarray(classes, dtype=int)
    out = pd.DataFrame(np.nan, index=range(len(rows)), columns=list(CONCENTRATION))
    # One class per call: a map costs one backward pass per class, and each slice needs
    # only its predicted class's.
    for k in np.unique(classes):
        pos = np.flatnonzero(classes == k)
        for s in range(0, len(pos), batch):
            i = pos[s : s + batch]
            r = rows[i]
            res = compute(
                inp.model,
                inp.images(r),
                layer=inp.cam_layer,
                methods=("gradcam",),
                classes=[int(k)],
            )
            feats = map_features(
                res["gradcam"][:, 0],
                np.asarray(anat.labels[r]),
                lesion=inp.lesion_masks(r) if has_lesion else None,
                on_empty_brain="nan",
            )
            out.loc[i, list(CONCENTRATION)] = feats[list(CONCENTRATION)].to_numpy()
    return out


def figure(data: pd.DataFrame, path: Path) -> Path:
    """Predictive entropy of right and wrong predictions, and against the map's entropy."""
    d = data.dropna(subset=["entropy_norm", "predictive_entropy"])
    d = d.assign(prediction=np.where(d["error"] == 1, "wrong", "right"))
    plot = (
        p9.ggplot(d, p9.aes("entropy_norm", "predictive_entropy", colour="prediction"))
        + p9.geom_point(alpha=0.5, size=1.2)
        + p9.labs(
            x="Grad-CAM entropy (normalised, brain pixels)",
            y="MC-dropout predictive entropy (nats)",
            colour="",
        )
        + p9.theme_bw()
    )
    return save_figure(plot, path, width=6.0, height=4.0)


def _labels(inp: Inputs, table: pd.DataFrame):
    classes = inp.classes
    if len(classes) == 2:
        return stroke_labels(table)
    if len(classes) == 3:
        return mrs_labels(table)
    raise ExperimentError(
        f"model {inp.model_dir}: {len(classes)} classes {classes}; expected the stroke "
        "(2 classes) or mRS (3 classes) model"
    )


def slice_uncertainties(inp: Inputs, cfg: McUncertaintyConfig, seed: int, say) -> tuple:
    """One row per analysed slice: MC-dropout prediction and uncertainties, the
    deterministic baseline and the map's concentration; and the patient-sample mask."""
    table = inp.store.table.iloc[inp.held_out].reset_index(drop=True)
    labels = _labels(inp, table)
    rows = inp.held_out[labels.index]
    keep = sample_patients(labels.patients, cfg.patients, seed)
    rows, y, pids = rows[keep], labels.y[keep], labels.patients[keep]
    say(f"{cfg.T} MC-dropout passes over {len(rows)} slices of {len(set(pids))} patients")
    det = predict_proba(inp, rows)
    mc = mc_predict(inp.model, inp.images(rows), T=cfg.T, seed=seed, class_names=inp.classes)
    data = inp.store.table.iloc[rows][["participant_id", "slice"]].reset_index(drop=True)
    data.insert(0, "row", rows)
    data["y"] = y
    data = pd.concat([data, mc.reset_index(drop=True)], axis=1)
    data["error"] = (data["predicted_class"].to_numpy() != y).astype(int)
    data["one_minus_max_softmax"] = 1.0 - det.max(axis=1)
    data["deterministic_error"] = (det.argmax(axis=1) != y).astype(int)
    say(f"Grad-CAM concentration of {len(rows)} slices")
    conc = cam_concentration(inp, rows, data["predicted_class"].to_numpy())
    return pd.concat([data, conc], axis=1), keep


def bootstrap_tables(data: pd.DataFrame, n_boot: int, seed: int) -> tuple:
    """(AUC for errors, Spearman rho with the map, medians by right/wrong, warnings)."""
    n_err = int(data["error"].sum())
    warnings = []
    if 0 < n_err < len(data):
        auc = tidy(bootstrap_ci(data, error_auc, n_boot, seed, "participant_id"), "auc")
    else:
        auc = pd.DataFrame({"uncertainty": list(UNCERTAINTIES), "auc_for_errors": np.nan})
        warnings.append(
            f"{n_err} errors among {len(data)} slices: the AUC for errors is undefined."
        )
    try:
        boot = bootstrap_ci(data, concentration_spearman, n_boot, seed, "participant_id")
        rho = tidy(boot, "rho")
    except ValueError as e:
        rho = pd.DataFrame(columns=["uncertainty", "cam_feature", "spearman_rho"])
        warnings.append(f"No Spearman correlation with the map: {e}")
    if 0 < n_err < 20:
        warnings.append(f"Only {n_err} wrong predictions: the AUCs for errors are rough.")
    by_correct = (
        data.groupby("error")[[*UNCERTAINTIES, *CONCENTRATION]]
        .median()
        .rename(index={0: "right", 1: "wrong"})
        .reset_index(names="prediction")
    )
    return auc, rho, by_correct, warnings


def _sections(auc, rho, by_correct) -> list:
    return [
        Section(
            "Uncertainty for errors",
            [
                "AUC of each uncertainty for a wrong prediction (0.5 = chance). "
                "one_minus_max_softmax is the deterministic model's baseline.",
                Table(shown(auc), "AUC for errors with patient-bootstrap 95 % intervals"),
                Table(shown(by_correct), "Medians by right / wrong prediction"),
            ],
        ),
        Section(
            "Uncertainty against the map's concentration",
            [
                "Spearman rho between each uncertainty and the Grad-CAM's normalised entropy "
                "(1 = uniform over the brain) and top-5 % share (share of map mass in the top "
                "5 % brain pixels). Positive rho with entropy_norm / negative with top_share: "
                "uncertain slices have diffuse maps.",
                Table(shown(rho), "Spearman rho with patient-bootstrap 95 % intervals"),
                Figure(
                    "figures/uncertainty_vs_map.png",
                    "Predictive entropy against Grad-CAM entropy, per slice",
                ),
            ],
        ),
    ]


def run(settings: RunSettings, cfg: McUncertaintyConfig = McUncertaintyConfig()) -> dict:
    """Run the experiment: MC dropout, maps, bootstrap, figure and report; return the
    paths."""
    started = time.perf_counter()
    say = settings.say(NAME)
    inp = open_inputs(settings)
    seed = settings.seed
    data, keep = slice_uncertainties(inp, cfg, seed, say)
    say(f"patient bootstrap ({cfg.n_boot} resamples)")
    auc, rho, by_correct, warnings = bootstrap_tables(data, cfg.n_boot, seed)
    out = Path(settings.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figure(data, out / "figures" / "uncertainty_vs_map.png")
    acc_mc = 1 - data["error"].mean()
    acc_det = 1 - data["deterministic_error"].mean()
    n_err = int(data["error"].sum())
    sample = (
        "(all held-out patients)" if keep.all() else f"(seeded sample of {cfg.patients} patients)"
    )
    intro = setting_lines(
        inp,
        f"task: {len(inp.classes)}-class slice model; MC dropout with T = {cfg.T} passes "
        "(Herzog et al. 2020)",
        [
            f"Analysed: {len(data)} slices of {data['participant_id'].nunique()} patients "
            f"{sample}; {n_err} wrong MC predictions. Accuracy: MC mean {acc_mc:.4f}, "
            f"deterministic {acc_det:.4f}. CAM: Grad-CAM of the predicted class at "
            f"`{inp.cam_layer or 'engine default'}`, concentration on the image-derived "
            f"brain. Bootstrap: {cfg.n_boot} patient resamples, seed {seed}."
        ],
    )
    paths = write_experiment(
        out,
        NAME,
        tables={"mc_uncertainty": auc, "concentration": rho, "slices": data},
        sections=_sections(auc, rho, by_correct),
        config=settings.record_of(cfg),
        inputs=inp,
        intro=intro,
        warnings=warnings,
        extra_provenance={
            "seeds": {"mc_dropout": seed, "bootstrap": seed, "patients": seed},
            "T": cfg.T,
            "n_boot": cfg.n_boot,
            "patients_sampled": int(data["participant_id"].nunique()),
        },
        started=started,
    )
    say(f"wrote {out}")
    return paths
