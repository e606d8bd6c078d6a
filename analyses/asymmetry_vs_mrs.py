"""The main analysis: do CAM features of stroke DWI relate to the 3-month mRS?

    python -m analyses.asymmetry_vs_mrs [--cohort DIR] [--stroke-model DIR] [--mrs-model DIR]
        [--layer NAME] [--method gradcam] [--out DIR] [--quick] [--n-boot 200] [--seed 0]

With no arguments it runs the whole path on the embedded default: the synthetic analysis
cohort (``hypo.paths.default_cohort_dir("analysis")``, generated when missing), the shipped
models ``models/stroke-gap-128`` and ``models/mrs-gap-128``, CAMs of the analysis cohort
(never of a model's training or validation patients: the leakage guard refuses them),
features, the registered hypotheses of ``analyses/hypotheses/`` (checked against
``analyses/hypotheses.lock.json`` before any outcome is joined) and the report.

Outputs in ``--out`` (default ``reports/asymmetry_vs_mrs/``): ``results.csv`` (every
registered test on the CAM maps and on the negative-control maps, ``map_source`` column;
on a synthetic cohort also the oracle fit on the generator's truth with ``true_value`` and
``covered``), ``features.csv`` (the joined patient table), ``secondary_*.csv``,
``report.md``/``report.html``, ``secondary.md``/``secondary.html``, ``figures/``,
``provenance.json`` and ``runtime.json``.

Caches: the slice store and the anatomy under ``hypo.paths.cache_dir()``, CAMs and slice
features under ``cache_dir()/analyses/asymmetry_vs_mrs/<cohort>/<model>-<hash>/``, so a
second run only refits the statistics and redraws the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import file_hash, stable_hash, write_json_atomic, write_table_atomic
from hypo.paths import ANALYSIS_COHORT, REPO_ROOT, cache_dir, data_dir, default_cohort_dir

HYPOTHESES_DIR = REPO_ROOT / "analyses" / "hypotheses"
LOCK_FILE = REPO_ROOT / "analyses" / "hypotheses.lock.json"
OUTCOME = "mrs_3months"
#: Primary covariates of every registered hypothesis (the registry files name them).
LOG_VOLUME = "log_lesion_volume_ml"
SIDE_RIGHT = "lesion_side_right"
#: Lesion side coded on one degree of freedom: a bilateral lesion counts half.
SIDE_CODE = {"left": 0.0, "right": 1.0, "bilateral": 0.5}
#: Suffix of the patient feature table per registered aggregation.
AGGREGATION_SUFFIX = {
    "lesion_slices_map_mass_weighted_mean": "_lesion",
    "all_slices_map_mass_weighted_mean": "_all",
}
MODEL_KEYS = ("stroke", "mrs")
CONTROL_SOURCES = ("control_uniform", "control_intensity", "control_random_model")
QUICK_PATIENTS = 30
#: Error prefix of a test that a map source cannot define (not a failed fit).
NOT_APPLICABLE = "not applicable"
#: Classes shown in the CAM panels, per model (both classes of each, as the paper's
#: Figures 11 and 14 do).
PANEL_CLASSES = {"stroke": ("no stroke", "stroke"), "mrs": ("mRS 0-2", "mRS 3-6")}


class AnalysisError(RuntimeError):
    """The analysis cannot run as asked (a missing model, an unusable cohort)."""


@dataclass
class AnalysisConfig:
    """Settings of one run (defaults: the embedded default analysis).

    Attributes
    ----------
    cohort : path or None
        Cohort folder; None = the default synthetic analysis cohort (generated if missing),
        or with ``quick`` a small synthetic cohort of ``quick_patients`` patients.
    stroke_model, mrs_model : path
        Model folders (``model.keras`` + ``card.json``).
    layer : str or None
        CAM layer for both models; None = each card's ``cam_layer`` (the registered one).
    methods : tuple of str
        CAM methods computed; the registered primary method must be among them.
    out : path
        Report folder.
    quick : bool
        A small run (tests, a first look): small cohort, few bootstrap resamples, no
        randomised-model control, few CAM panels.
    n_boot : int
        Patient bootstrap resamples for the primary ORs (paper-style 200).
    seed : int
        Seed of the bootstrap, cross-validation folds, MICE and the randomised control.
    random_control : bool
        Grad-CAM of the randomised-weights model as a third negative control.
    cv_splits : int
        Folds of the cross-validated C-index.
    mice_m : int
        Imputations of the MICE sensitivity analysis (only when covariates are missing).
    n_panels : int
        Example slices in the CAM panels.
    hypotheses, lock : path
        Registry folder and its lock file.
    progress : bool
        Progress bars and stage lines on stderr.
    max_qc_fail_fraction : float or None
        The features stage stops when more patients fail the anatomy QC (default 0.2).
    """

    cohort: Path | None = None
    stroke_model: Path = REPO_ROOT / "models" / "stroke-gap-128"
    mrs_model: Path = REPO_ROOT / "models" / "mrs-gap-128"
    layer: str | None = None
    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    out: Path = REPO_ROOT / "reports" / "asymmetry_vs_mrs"
    quick: bool = False
    quick_patients: int = QUICK_PATIENTS
    n_boot: int = 200
    seed: int = 0
    random_control: bool = True
    cv_splits: int = 5
    mice_m: int = 20
    n_panels: int = 3
    hypotheses: Path = HYPOTHESES_DIR
    lock: Path = LOCK_FILE
    progress: bool = True
    max_qc_fail_fraction: float | None = None
    extra: dict = field(default_factory=dict)

    def effective(self) -> AnalysisConfig:
        """The configuration actually run (``quick`` shrinks the expensive parts)."""
        if not self.quick:
            return self
        return replace(
            self,
            n_boot=min(self.n_boot, 20),
            random_control=False,
            mice_m=min(self.mice_m, 5),
            n_panels=min(self.n_panels, 2),
            cv_splits=min(self.cv_splits, 3),
        )


def _stage(msg: str) -> None:
    print(f"[asymmetry_vs_mrs] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- inputs


def check_model(path: Path, key: str) -> Path:
    """A model folder with ``model.keras`` and ``card.json``, or an error naming the
    command that trains it."""
    path = Path(path)
    missing = [f for f in ("model.keras", "card.json") if not (path / f).is_file()]
    if missing:
        arch, name = ("gap", "stroke-gap-128") if key == "stroke" else ("mrs", "mrs-gap-128")
        epochs = 100 if key == "stroke" else 400
        raise AnalysisError(
            f"{key} model {path}: missing {missing}. Train it with\n"
            f"    python -m analyses.train_models --model {arch} --size 128 --epochs {epochs} "
            f"--out models/{name}\n"
            f"(after `python -m analyses.prepare_default`), or pass --{key}-model DIR"
        )
    return path


def resolve_cohort(cfg: AnalysisConfig):
    """Load the cohort to analyse, generating the default synthetic one when missing."""
    import hypo.cohort as hc

    if cfg.cohort is not None:
        root = Path(cfg.cohort)
        if not root.is_dir():
            raise AnalysisError(f"--cohort {root}: no such folder")
        return hc.load(root)
    from hypo.cohort.synthetic import generate_cohort

    seed = ANALYSIS_COHORT["seed"]
    if cfg.quick:
        n = int(cfg.quick_patients)
        root = data_dir() / "synthetic" / f"quick-analysis-n{n}-s{seed}"
    else:
        n = ANALYSIS_COHORT["patients"]
        root = default_cohort_dir("analysis")
    if not (root / "participants.tsv").exists() or not (root / "generator.json").exists():
        _stage(f"generating the synthetic analysis cohort ({n} patients) -> {root}")
    generate_cohort(root, n_patients=n, seed=seed, progress=cfg.progress)
    return hc.load(root)


def _models_trained_on_synthetic(cards: dict) -> list[str]:
    return [k for k, c in cards.items() if (c.get("cohort") or {}).get("generator_hash")]


# --------------------------------------------------------------------------- table


def class_index(card: dict, name: str, where: str) -> int:
    classes = [str(c) for c in card.get("classes", [])]
    if name not in classes:
        raise AnalysisError(f"{where}: class {name!r} is not a class of the model ({classes})")
    return classes.index(name)


def wide_column(feature: str, aggregation: str, source: str, method: str, layer: str, k: int):
    """Column of the joined table (:func:`hypo.features.join.to_wide` naming)."""
    if aggregation not in AGGREGATION_SUFFIX:
        raise AnalysisError(
            f"aggregation {aggregation!r}: expected one of {sorted(AGGREGATION_SUFFIX)}"
        )
    suffix = AGGREGATION_SUFFIX[aggregation]
    label = "_".join(str(p).replace(" ", "-") for p in (source, method, layer, f"c{k}"))
    return f"{feature}{suffix}__{label}"


def alias(h, source: str) -> str:
    """Short analysis-table column of hypothesis ``h`` on one map source."""
    return f"{h.model}__{h.feature}__{source}"


def feature_columns(reg, cards, layers, methods, sources) -> dict[tuple[str, str], str]:
    """``(hypothesis id, map source) -> joined-table column`` for every registered test."""
    out = {}
    for h in reg.hypotheses.values():
        card, layer = cards[h.model], layers[h.model]
        if h.layer not in ("cam_layer", layer):
            raise AnalysisError(
                f"hypothesis {h.id} ({h.source}) registers layer {h.layer!r} but the {h.model} "
                f"model's CAMs are computed at {layer!r} (the card's cam_layer or --layer)"
            )
        k = class_index(card, h.cam_class, f"hypothesis {h.id} ({h.source})")
        method = h.method if h.method in methods else methods[0]
        for src in sources:
            if src in ("control_uniform", "control_intensity"):
                col = wide_column(h.feature, h.aggregation, src, "control", "image", -1)
            elif src == "control_random_model":
                col = wide_column(h.feature, h.aggregation, src, "gradcam", layer, k)
            else:
                col = wide_column(h.feature, h.aggregation, "cam", method, layer, k)
            out[h.id, src] = col
    return out


def build_table(joined: dict, reg, cards, layers, methods, sources) -> pd.DataFrame:
    """One row per patient: participants, image covariates, flags and one column per
    (hypothesis, map source) named by :func:`alias`."""
    base = joined["stroke"].table
    cols = feature_columns(reg, cards, layers, methods, sources)
    keep = [c for c in base.columns if "__" not in c]
    table = base[keep].copy()
    for key in ("stroke", "mrs"):
        t = joined[key].table.set_index("participant_id")
        table[f"in_training_{key}_model"] = (
            table["participant_id"].map(t["in_model_training"]).fillna(False).astype(bool)
        )
    table["in_model_training"] = table["in_training_stroke_model"] | table["in_training_mrs_model"]
    for (hid, src), col in cols.items():
        h = reg.hypotheses[hid]
        t = joined[h.model].table.set_index("participant_id")
        if col not in t.columns:
            raise AnalysisError(
                f"hypothesis {hid} ({h.source}): feature column {col!r} is not in the "
                f"{h.model} model's feature table (layer/method/class not computed?)"
            )
        table[alias(h, src)] = table["participant_id"].map(t[col]).astype(float)
    vol = pd.to_numeric(table.get("lesion_volume_ml"), errors="coerce")
    table[LOG_VOLUME] = np.log1p(vol.clip(lower=0))
    table[SIDE_RIGHT] = table["lesion_side"].astype(str).map(SIDE_CODE).astype(float)
    table.attrs["columns"] = {f"{hid}|{src}": col for (hid, src), col in cols.items()}
    return table


def population_flow(table: pd.DataFrame):
    """Inclusion steps, in order; returns (flow, excluded, boolean population)."""
    from hypo.report.tables import patient_flow

    stroke = table["group"].astype(str).str.lower().eq("stroke")
    visible = pd.to_numeric(table.get("any_lesion_visible"), errors="coerce").fillna(0) > 0
    has_feat = table["has_features"].astype(bool)
    has_mrs = pd.to_numeric(table[OUTCOME], errors="coerce").notna()
    held_out = ~table["in_model_training"].astype(bool)
    criteria = [
        ("Stroke patients", stroke.to_numpy(), "not a stroke (TIA / other group)"),
        ("Visible lesion", visible.to_numpy(), "no slice with a visible lesion"),
        ("CAM features", has_feat.to_numpy(), "no slices or maps"),
        ("Not a model's training/validation patient", held_out.to_numpy(), "leakage guard"),
        ("3-month mRS known", has_mrs.to_numpy(), "3-month mRS missing"),
    ]
    flow, excluded = patient_flow(table, criteria, start="All participants")
    pop = stroke & visible & has_feat & held_out & has_mrs
    return flow, excluded, pop


# --------------------------------------------------------------------------- statistics


def _registered_columns(reg, source: str):
    return lambda h: alias(h, source)


def run_hypotheses(data: pd.DataFrame, reg, cfg: AnalysisConfig, sources) -> pd.DataFrame:
    """Every registered test on every map source (q within family, per source/analysis)."""
    from hypo.stats.registry import test_hypotheses

    parts = []
    for src in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures are kept in the rows' error column
            res = test_hypotheses(
                data,
                reg,
                cfg.lock,
                outcome_col=OUTCOME,
                sensitivity=src == "cam",
                column_for=_registered_columns(reg, src),
            )
        res.insert(3, "map_source", src)
        parts.append(res)
    out = pd.concat(parts, ignore_index=True)
    hyp = reg.hypotheses
    for i, r in out.iterrows():
        x = pd.to_numeric(data[r["feature"]], errors="coerce").dropna()
        if not len(x) and r["map_source"] != "cam":
            out.loc[i, "error"] = (
                f"{NOT_APPLICABLE}: no {r['map_source']} map of the analysed patients has "
                "mass in the brain (all maps zero), so the feature is undefined"
            )
        elif len(x) and x.nunique() == 1:
            out.loc[i, "error"] = (
                f"{NOT_APPLICABLE}: {hyp[r['hypothesis']].feature} is {x.iloc[0]:g} for every "
                f"patient on {r['map_source']} maps (a uniform map has density ratio 1 by "
                "construction)"
            )
    out["column"] = out["feature"]
    out["feature"] = [hyp[i].feature for i in out["hypothesis"]]
    out["cam_class"] = [hyp[i].cam_class for i in out["hypothesis"]]
    cam_method = {
        i: h.method if h.method in cfg.methods else cfg.methods[0] for i, h in hyp.items()
    }
    out["method"] = [
        cam_method[i] if s == "cam" else ("gradcam" if s == "control_random_model" else "control")
        for i, s in zip(out["hypothesis"], out["map_source"])
    ]
    out["aggregation"] = [hyp[i].aggregation for i in out["hypothesis"]]
    return out


def truth_rows(data: pd.DataFrame, cohort) -> pd.DataFrame | None:
    """Oracle fit on the generator's truth (synthetic cohorts): ``true_value``, ``covered``.

    The outcome is refitted with the generator's own covariates (swelling SD, ln(true
    tissue volume + 1), age per decade above 70, pre-stroke mRS, female, right side,
    territory, NIHSS, IVT, IAT), the only specification whose coefficients are the
    documented ones: a model that leaves some out estimates other (marginal) quantities.
    """
    from hypo.cohort import layout
    from hypo.stats.outcomes import fit_outcome

    gen_file = Path(cohort.root) / layout.GENERATOR
    truth_file = Path(cohort.root) / layout.TRUTH_TABLE
    if not gen_file.is_file() or not truth_file.is_file():
        return None
    gen = json.loads(gen_file.read_text(encoding="utf-8"))
    coef = (gen.get("outcome_model") or {}).get("coefficients") or {}
    truth = pd.read_csv(truth_file, sep="\t", dtype={"participant_id": str})
    need = {"participant_id", "swelling", "true_tissue_volume_ml", "territory", "side"}
    if not need <= set(truth.columns) or not coef:
        raise AnalysisError(f"{truth_file}: lacks {sorted(need - set(truth.columns))}")
    t = truth.set_index("participant_id")
    d = data.copy()
    pid = d["participant_id"].astype(str)
    d["swelling"] = pid.map(t["swelling"]).astype(float)
    d["log_lesion_volume_ml_plus_1"] = np.log1p(pid.map(t["true_tissue_volume_ml"]).astype(float))
    d["age_per_decade_above_70"] = (pd.to_numeric(d["age"], errors="coerce") - 70) / 10
    d["female"] = d["sex"].astype(str).str.upper().eq("F").astype(float)
    d["right_side"] = pid.map(t["side"]).astype(str).map(SIDE_CODE).astype(float)
    d["territory"] = pid.map(t["territory"]).astype(str).str.split("+").str[0]
    gamma = coef.get("swelling_per_sd_by_cut") or []
    po = bool(coef.get("proportional_odds", True)) and len(set(gamma)) <= 1
    terr = coef.get("territory") or {}
    ref = "MCA" if "MCA" in set(d["territory"]) else sorted(set(d["territory"]))[0]
    truth_value = {
        "swelling": float(gamma[0]) if gamma and po else math.nan,
        "log_lesion_volume_ml_plus_1": coef.get("log_lesion_volume_ml_plus_1"),
        "age_per_decade_above_70": coef.get("age_per_decade_above_70"),
        "mrs_before": coef.get("mrs_before"),
        "female": coef.get("female"),
        "right_side": coef.get("right_side"),
        "nihss_baseline": coef.get("nihss_baseline"),
        "ivt": coef.get("ivt"),
        "iat": coef.get("iat"),
    }
    rhs = " + ".join([*truth_value, f"C(territory, Treatment('{ref}'))"])
    for lv in sorted(set(d["territory"]) - {ref}):
        truth_value[f"C(territory, Treatment('{ref}'))[T.{lv}]"] = terr.get(
            lv, math.nan
        ) - terr.get(ref, 0.0)
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
        row = {
            **base,
            "feature": "swelling",
            "term": "swelling",
            "error": f"{type(e).__name__}: {e}",
        }
        row["true_value"] = truth_value["swelling"]
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


def _primary_frame(data: pd.DataFrame, h, col: str, extra=()) -> tuple[pd.DataFrame, str, str]:
    """Complete-case frame with the standardised feature ``z`` and the formula's rhs."""
    covs = list(h.covariates) + list(extra)
    d = data[[OUTCOME, col, *covs]].apply(pd.to_numeric, errors="coerce").dropna()
    x = d[col]
    d = d.assign(z=(x - x.mean()) / x.std(ddof=1))
    return d, "z", " + ".join(["z", *covs])


def _cv_pair(d: pd.DataFrame, h, formula: str, cfg: AnalysisConfig):
    """Cross-validated C-indices without and with the feature, on the same folds.

    Stratified folds need every mRS grade twice; where a grade is rarer, grades are merged
    from the top (6 into 5, then 5 into 4, ...) and the coding says so.
    """
    from hypo.stats import cv_discrimination

    y = d[OUTCOME].astype(int)
    top = 6
    while top > 1 and (y.clip(upper=top).value_counts() < 2).any():
        top -= 1
    dd = d.assign(**{OUTCOME: y.clip(upper=top)})
    outcome = "mRS 0-6" if top == 6 else f"mRS 0-{top} ({top}-6 merged)"
    base = cv_discrimination(dd, f"{OUTCOME} ~ {' + '.join(h.covariates)}", cfg.cv_splits,
                             cfg.seed)  # fmt: skip
    full = cv_discrimination(dd, formula, cfg.cv_splits, cfg.seed)
    return base, full, outcome


def secondary_analyses(data: pd.DataFrame, reg, cfg: AnalysisConfig) -> dict[str, pd.DataFrame]:
    """Bootstrap CIs, PO checks, partial Spearman, mRS 0-2 vs 3-6, CV C-index, MICE."""
    from tqdm.auto import tqdm

    from hypo.stats import (
        bootstrap_proportional_odds,
        brant_test,
        compare_outcome_groups,
        fit_proportional_odds,
        mice_proportional_odds,
        nominal_test,
        partial_spearman,
    )
    from hypo.stats.multiplicity import bh_qvalues

    hyps = sorted(reg.hypotheses.values(), key=lambda h: h.id)
    boot, po, spear, disc, mice = [], [], [], [], []
    bar = tqdm(hyps, desc="secondary analyses", disable=not cfg.progress, unit="hypothesis")
    for h in bar:
        col = alias(h, "cam")
        d, term, rhs = _primary_frame(data, h, col)
        formula = f"{OUTCOME} ~ {rhs}"
        ident = {"hypothesis": h.id, "family": h.family, "model": h.model, "feature": h.feature}
        # Bootstrap of the per-SD OR by resampling patients.
        try:
            b = bootstrap_proportional_odds(d, formula, n_resamples=cfg.n_boot, seed=cfg.seed)
            r = b.loc[term]
            boot.append({**ident, "OR": r["OR"], "boot_OR_low": r["OR_low"],
                         "boot_OR_high": r["OR_high"], "boot_se": r["boot_se"],
                         "n_ok": int(r["n_ok"]), "n_failed": int(r["n_failed"]), "error": ""})  # fmt: skip
        except ValueError as e:
            boot.append({**ident, "error": f"{type(e).__name__}: {e}"})
        # Proportional odds: Brant (omnibus and feature) and the LR nominal test.
        try:
            fit = fit_proportional_odds(d, formula)
            bt = brant_test(fit).set_index("term")
            nt = nominal_test(fit).set_index("term")
            po.append({**ident, "brant_omnibus_p": bt.loc["omnibus", "p"],
                       "brant_feature_p": bt.loc[term, "p"] if term in bt.index else np.nan,
                       "nominal_feature_p": nt.loc[term, "p"] if term in nt.index else np.nan,
                       "error": ""})  # fmt: skip
        except (ValueError, np.linalg.LinAlgError) as e:
            po.append({**ident, "error": f"{type(e).__name__}: {e}"})
        # Spearman partial correlation with mRS, adjusted for the primary covariates.
        try:
            s = partial_spearman(d, "z", OUTCOME, list(h.covariates)).iloc[0].to_dict()
            spear.append({**ident, **{k: s[k] for k in ("n", "r", "ci_low", "ci_high", "p")}})
        except (ValueError, ZeroDivisionError, AssertionError) as e:
            spear.append({**ident, "error": f"{type(e).__name__}: {e}"})
        # Cross-validated discrimination: covariates alone vs covariates + feature.
        try:
            base, full, outcome = _cv_pair(d, h, formula, cfg)
            for (_, rb), (_, rf) in zip(base.iterrows(), full.iterrows()):
                disc.append({**ident, "outcome": outcome, "metric": rb["metric"],
                             "covariates_only_cv": rb["cross_validated"],
                             "with_feature_cv": rf["cross_validated"],
                             "difference": rf["cross_validated"] - rb["cross_validated"],
                             "n": int(rb["n"]), "n_splits": cfg.cv_splits, "error": ""})  # fmt: skip
        except ValueError as e:
            disc.append({**ident, "error": f"{type(e).__name__}: {e}"})
        # MICE only where a covariate (not the outcome) is missing in the population.
        covs = list(h.covariates)
        if data[covs].apply(pd.to_numeric, errors="coerce").isna().any().any():
            m = data[[OUTCOME, col, *covs]].apply(pd.to_numeric, errors="coerce")
            m = m[m[OUTCOME].notna() & m[col].notna()]
            m = m.assign(z=(m[col] - m[col].mean()) / m[col].std(ddof=1))
            try:
                pooled = mice_proportional_odds(m, formula, m=cfg.mice_m, seed=cfg.seed)
                r = pooled.loc["z"]
                mice.append({**ident, **{k: r[k] for k in ("OR", "OR_low", "OR_high", "p")},
                             "n": pooled.attrs["n"], "n_imputed": pooled.attrs["n_incomplete"],
                             "error": ""})  # fmt: skip
            except ValueError as e:
                mice.append({**ident, "error": f"{type(e).__name__}: {e}"})
    ident_cols = ["hypothesis", "family", "model", "feature"]

    def frame(rows, cols):
        df = pd.DataFrame(rows)
        for c in ident_cols + cols + ["error"]:
            if c not in df.columns:
                df[c] = pd.Series(dtype=object if c == "error" else float)
        df["error"] = df["error"].fillna("")
        return df[ident_cols + cols + ["error"]]

    out = {
        "bootstrap": frame(boot, ["OR", "boot_OR_low", "boot_OR_high", "boot_se", "n_ok",
                                  "n_failed"]),
        "po_checks": frame(po, ["brant_omnibus_p", "brant_feature_p", "nominal_feature_p"]),
        "spearman": frame(spear, ["n", "r", "ci_low", "ci_high", "p"]),
        "discrimination": frame(disc, ["outcome", "metric", "covariates_only_cv",
                                       "with_feature_cv", "difference", "n", "n_splits"]),
        "mice": frame(mice, ["OR", "OR_low", "OR_high", "p", "n", "n_imputed"]),
    }  # fmt: skip
    sp = out["spearman"]
    if len(sp) and "p" in sp:
        sp["q"] = np.nan
        for _, idx in sp.groupby("family").groups.items():
            sp.loc[idx, "q"] = bh_qvalues(sp.loc[idx, "p"].to_numpy(float))
    groups = []
    for fam in reg.families:
        fh = reg.family(fam)
        cols = [alias(h, "cam") for h in fh]
        try:
            g = compare_outcome_groups(data, cols, OUTCOME)  # BH within the family
            g.insert(0, "hypothesis", [h.id for h in fh])
            g.insert(1, "family", fam)
            groups.append(g)
        except ValueError as e:
            groups.append(pd.DataFrame([{"family": fam, "error": f"{type(e).__name__}: {e}"}]))
    out["outcome_groups"] = pd.concat(groups, ignore_index=True) if groups else pd.DataFrame()
    return out


def _statistics_key(data: pd.DataFrame, lock_info: dict, cfg: AnalysisConfig, sources) -> str:
    """Key of the statistics cache: the analysed table, the locked registry, the settings
    and the code that computes the numbers."""
    code = [Path(__file__), *sorted((REPO_ROOT / "hypo" / "stats").glob("*.py"))]
    return stable_hash(
        {
            "data": pd.util.hash_pandas_object(data, index=False).astype(str).tolist(),
            "columns": list(data.columns),
            "registry": lock_info.get("registry_sha256"),
            "settings": [cfg.n_boot, cfg.seed, cfg.cv_splits, cfg.mice_m, list(sources)],
            "code": [file_hash(f) for f in code if f.is_file()],
        }
    )


def _write_statistics(folder: Path, results, truth, sec: dict) -> None:
    from hypo._util import atomic_path

    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        return
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        results.to_pickle(tmp / "results.pkl")
        if truth is not None:
            truth.to_pickle(tmp / "truth.pkl")
        for name, df in sec.items():
            df.to_pickle(tmp / f"secondary_{name}.pkl")


def _read_statistics(folder: Path):
    if not (folder / "results.pkl").is_file():
        return None
    results = pd.read_pickle(folder / "results.pkl")
    truth = pd.read_pickle(folder / "truth.pkl") if (folder / "truth.pkl").is_file() else None
    sec = {
        f.stem.removeprefix("secondary_"): pd.read_pickle(f)
        for f in sorted(folder.glob("secondary_*.pkl"))
    }
    return results, truth, sec


# --------------------------------------------------------------------------- CAM panels


def _lesion_score(t: pd.DataFrame) -> np.ndarray:
    """Lesion area (mm^2) of each slice, or the reader's label where no mask gives one."""
    n = len(t)
    area = pd.to_numeric(t.get("lesion_area_mm2", pd.Series(np.nan, index=t.index)),
                         errors="coerce").fillna(0).to_numpy(float)  # fmt: skip
    vis = pd.to_numeric(t.get("lesion_visible", pd.Series(0, index=t.index)),
                        errors="coerce").fillna(0).to_numpy(float)  # fmt: skip
    return area + 1e-6 * vis if n else np.zeros(0)


def cam_examples(cohort, table, pop, feats, cfg: AnalysisConfig, cards):
    """A few lesion slices of the analysed patients with both models' CAMs (raw maps)."""
    from hypo.cam.stream import CamStore
    from hypo.cohort.orientation import axial_slices
    from hypo.preprocess import SliceStore
    from hypo.report.cam_panels import CamExample

    data = table[pop]
    if data.empty:
        return [], {}
    mrs = pd.to_numeric(data[OUTCOME], errors="coerce")
    vol = pd.to_numeric(data["lesion_volume_ml"], errors="coerce").fillna(0)
    poor = (
        data[mrs >= 3].assign(v=vol).sort_values(["v", "participant_id"], ascending=[False, True])
    )
    good = (
        data[mrs <= 2].assign(v=vol).sort_values(["v", "participant_id"], ascending=[False, True])
    )
    picks = []
    for src in (poor, good, poor.iloc[1:], good.iloc[1:]):
        for pid in src["participant_id"]:
            if pid not in picks:
                picks.append(pid)
                break
        if len(picks) >= cfg.n_panels:
            break
    stores = {k: SliceStore.open(feats[k].table.attrs["store"]) for k in MODEL_KEYS}
    cams = {k: CamStore.open(feats[k].table.attrs["cam_dirs"][0]) for k in MODEL_KEYS}
    examples = []
    for pid in picks:
        st = stores["stroke"]
        rows = st.patient_rows(pid)
        i = int(rows[int(np.argmax(_lesion_score(st.table.iloc[rows])))])
        sl = int(st.table["slice"].iloc[i])
        native = axial_slices(cohort.dwi(pid).data)[sl]
        maps, probs = {}, {}
        for k in MODEL_KEYS:
            s = stores[k]
            j = int(np.flatnonzero((s.table["participant_id"].to_numpy() == pid)
                                   & (s.table["slice"].to_numpy() == sl))[0])  # fmt: skip
            res = cams[k].result([j])
            classes = [str(c) for c in cards[k]["classes"]]
            for cname in PANEL_CLASSES[k]:
                c = classes.index(cname)
                ci = list(res.classes).index(c)
                label = f"{k}: {cname}"
                probs[label] = float(res.probabilities[0, c])
                for m in res.methods:
                    maps[m, label] = np.asarray(res[m][0, ci], float)
        mask = stores["stroke"].masks.get("lesion")
        examples.append(
            CamExample(
                participant_id=str(pid),
                image_native=np.asarray(native, float),
                image_preprocessed=np.asarray(stores["stroke"].images[i], float),
                maps=maps,
                probabilities=probs,
                slice_index=sl,
                mrs_3months=float(
                    pd.to_numeric(data.set_index("participant_id").loc[pid, OUTCOME])
                ),
                lesion_mask=None if mask is None else np.asarray(mask[i]),
            )
        )
    classes = [f"{k}: {c}" for k in MODEL_KEYS for c in PANEL_CLASSES[k]]
    methods = [m for m in ("gradcam", "gradcampp") if m in cfg.methods]
    # One colour scale per method for the cohort: the 99th percentile of the method's raw
    # maps of the panel classes over every lesion slice of the analysed patients (a maximum
    # of the examples alone would rescale with the choice of examples).
    vals = {m: [] for m in methods}
    analysed = set(data["participant_id"].astype(str))
    for k in MODEL_KEYS:
        t = stores[k].table
        rows = np.flatnonzero(
            t["participant_id"].astype(str).isin(analysed).to_numpy() & (_lesion_score(t) > 0)
        )
        classes_k = [str(c) for c in cards[k]["classes"]]
        cidx = [list(cams[k].classes).index(classes_k.index(c)) for c in PANEL_CLASSES[k]]
        for m in methods:
            vals[m].append(np.asarray(cams[k].maps(m, rows, resized=False))[:, cidx].ravel())
    vmax = {}
    for m in methods:
        allv = np.concatenate(vals[m]) if vals[m] else np.zeros(0)
        v = float(np.percentile(allv, 99)) if allv.size else 0.0
        vmax[m] = v if v > 0 else None  # None: the range of the maps shown
    kw = {"classes": classes, "methods": methods, "scale": "raw", "vmin": 0.0, "vmax": vmax}
    return examples, kw


# --------------------------------------------------------------------------- main


def _warnings_for_po(po: pd.DataFrame) -> list[str]:
    out = []
    if po.empty or "brant_omnibus_p" not in po:
        return out
    for _, r in po.iterrows():
        ps = [r.get("brant_feature_p"), r.get("nominal_feature_p")]
        if any(p is not None and np.isfinite(p) and p < 0.05 for p in ps):
            out.append(
                f"{r['hypothesis']} ({r['model']} maps, {r['feature']}): proportional odds "
                f"questionable for the feature (Brant p = {r['brant_feature_p']:.3f}, nominal "
                f"LR p = {r['nominal_feature_p']:.3f}); see secondary_po_checks.csv and read "
                "the common OR as an average over cut-points"
            )
    return out


def run_analysis(cfg: AnalysisConfig) -> dict:
    """Run the whole analysis; returns the output paths and timings."""
    from hypo.features.join import load_model_card, require_held_out
    from hypo.features.pipeline import DEFAULT_CONTROLS, run_features
    from hypo.report.provenance import hash_files
    from hypo.report.writer import Section, Table, write_analysis_report, write_report
    from hypo.stats.registry import verify_lock

    t0 = time.perf_counter()
    cfg = cfg.effective()
    out = Path(cfg.out)
    stage = _stage if cfg.progress else (lambda msg: None)
    # Pre-registration first: nothing below may read an outcome before the lock holds.
    reg = verify_lock(cfg.hypotheses, cfg.lock)
    lock_info = json.loads(Path(cfg.lock).read_text(encoding="utf-8"))
    model_dirs = {
        "stroke": check_model(cfg.stroke_model, "stroke"),
        "mrs": check_model(cfg.mrs_model, "mrs"),
    }
    cards = {k: load_model_card(p) for k, p in model_dirs.items()}
    cohort = resolve_cohort(cfg)
    stage(f"cohort {cohort.cohort_id} ({len(cohort.participants)} patients)")
    report_warnings = []
    synthetic_models = _models_trained_on_synthetic(cards)
    if not cohort.is_synthetic and synthetic_models:
        msg = (
            f"the {' and '.join(synthetic_models)} model(s) were trained on a synthetic cohort "
            f"but {cohort.cohort_id} is not synthetic: their maps of real DWI may mean "
            "little; retrain on your own data (python -m analyses.train_models --cohort ...)"
        )
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)
        report_warnings.append(msg)
    unregistered = sorted({h.method for h in reg.hypotheses.values()} - set(cfg.methods))
    if unregistered:
        report_warnings.append(
            f"--method {' '.join(cfg.methods)} leaves out the registered method(s) "
            f"{unregistered}: the tests use {cfg.methods[0]} instead, an exploratory run"
        )
    if cfg.layer is not None:
        report_warnings.append(
            f"--layer {cfg.layer} overrides the registered layer (the card's cam_layer): an "
            "exploratory run, not the registered analysis"
        )
    timings = {}
    layers = {k: cfg.layer or cards[k].get("cam_layer") for k in MODEL_KEYS}
    work = cache_dir() / "analyses" / "asymmetry_vs_mrs" / cohort.cohort_id
    feats = {}
    model_hashes = {}
    for k in MODEL_KEYS:
        t = time.perf_counter()
        mh = file_hash(model_dirs[k] / "model.keras")
        model_hashes[k] = mh
        stage(f"{k} model {model_dirs[k]} (model.keras sha256 {mh})")
        feats[k] = run_features(
            cohort,
            model_dirs[k],
            work / f"{k}-{mh[:12]}",
            layer=layers[k],
            methods=cfg.methods,
            controls=DEFAULT_CONTROLS,
            random_control=cfg.random_control,
            random_classes=sorted(
                {
                    class_index(cards[k], h.cam_class, h.source)
                    for h in reg.hypotheses.values()
                    if h.model == k
                }
            ),
            progress=cfg.progress,
            seed=cfg.seed,
            stage=stage,
            max_qc_fail_fraction=cfg.max_qc_fail_fraction,
        )
        timings[f"features_{k}_s"] = round(time.perf_counter() - t, 1)
    sources = ["cam", "control_uniform", "control_intensity"]
    if cfg.random_control:
        sources.append("control_random_model")

    stage("analysis table, leakage guard, patient flow")
    table = build_table(feats, reg, cards, layers, cfg.methods, sources)
    require_held_out(table)
    flow, excluded, pop = population_flow(table)
    table["analysis_population"] = pop.to_numpy()
    data = table[pop].reset_index(drop=True)

    t = time.perf_counter()
    stage(f"registered hypotheses on {len(data)} patients x {len(sources)} map sources")
    skey = _statistics_key(data, lock_info, cfg, sources)
    cached = _read_statistics(work / "statistics" / skey)
    if cached is not None:
        stage(f"statistics: reusing {work / 'statistics' / skey}")
        results, truth, sec = cached
    else:
        results = run_hypotheses(data, reg, cfg, sources)
        truth = truth_rows(data, cohort) if cohort.is_synthetic else None
        sec = secondary_analyses(data, reg, cfg)
        _write_statistics(work / "statistics" / skey, results, truth, sec)
    timings["statistics_s"] = round(time.perf_counter() - t, 1)
    timings["statistics_reused"] = cached is not None
    boot = sec["bootstrap"]
    if len(boot) and "boot_OR_low" in boot:
        b = boot.set_index("hypothesis")
        prim = (results["map_source"] == "cam") & (results["analysis"] == "primary")
        for c in ("boot_OR_low", "boot_OR_high"):
            results.loc[prim, c] = results.loc[prim, "hypothesis"].map(b[c]).to_numpy()
    results["true_value"] = np.nan
    results["covered"] = pd.NA
    if truth is not None:
        results = pd.concat([results, truth], ignore_index=True)
    first = ["hypothesis", "model", "feature", "term", "estimate", "se", "OR", "OR_low",
             "OR_high", "p", "q", "n", "direction"]  # fmt: skip
    results = results[first + [c for c in results.columns if c not in first]]

    out.mkdir(parents=True, exist_ok=True)
    write_table_atomic(out / "results.csv", results)
    write_table_atomic(out / "features.csv", table)
    for name, df in sec.items():
        write_table_atomic(out / f"secondary_{name}.csv", df)

    t = time.perf_counter()
    stage("report")
    po_warn = _warnings_for_po(sec["po_checks"])
    examples, panel_kw = cam_examples(cohort, table, pop, feats, cfg, cards)
    primary_feats = [alias(h, "cam") for h in sorted(reg.hypotheses.values(), key=lambda h: h.id)]
    # Tertile bars need three patients and two distinct values of the feature; fewer gives
    # no figure, not an error.
    figure_feats = [
        f for f in primary_feats if data[f].notna().sum() >= 3 and data[f].nunique() >= 2
    ]
    if len(figure_feats) < len(primary_feats):
        report_warnings.append(
            "no outcome figures for "
            + ", ".join(f for f in primary_feats if f not in figure_feats)
            + ": fewer than 3 analysed patients with the feature, or all the same value"
        )
    intro = _intro(cfg, cohort, cards, layers, len(data), truth is not None)
    prov = {
        "cohort": {
            "id": cohort.cohort_id,
            "content_hash": cohort.content_hash(),
            "participants_sha256": file_hash(Path(cohort.root) / "participants.tsv"),
            "synthetic": bool(cohort.is_synthetic),
        },
        "models": {
            k: {
                "path": str(model_dirs[k]),
                "model_keras_sha256": model_hashes[k],
                "card_sha256": file_hash(model_dirs[k] / "card.json"),
                "cam_layer": layers[k],
                "classes": cards[k].get("classes"),
                "trained_on": (cards[k].get("cohort") or {}).get("id"),
            }
            for k in MODEL_KEYS
        },
        "registry": {
            "lock_file": str(cfg.lock),
            "lock_file_sha256": hash_files([cfg.lock])[str(cfg.lock)],
            "registry_sha256": lock_info.get("registry_sha256"),
            "locked_at": lock_info.get("locked_at"),
        },
        "seeds": {
            "bootstrap": cfg.seed,
            "cv_folds": cfg.seed,
            "mice": cfg.seed,
            "random_control": cfg.seed,
            "cohort": ANALYSIS_COHORT["seed"],
        },  # fmt: skip
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "caches": {k: feats[k].table.attrs.get("cam_dirs") for k in MODEL_KEYS},
    }
    # Tests a map source cannot define stay in results.csv; the report lists them once.
    na = results["error"].fillna("").astype(str).str.startswith(NOT_APPLICABLE)
    if na.any():
        intro.append(
            "Not applicable and left out of the tables below (kept in results.csv): "
            + "; ".join(
                sorted({f"{r.hypothesis} on {r.map_source}" for r in results[na].itertuples()})
            )
            + " (the feature is constant or undefined on that control map; see results.csv)."
        )
    paths = write_analysis_report(
        out,
        table,
        results[~na].reset_index(drop=True),
        figure_feats,
        flow=flow,
        excluded=excluded,
        cam_examples=examples or None,
        cam_kwargs=panel_kw,
        provenance=prov,
        intro=intro,
        warnings=report_warnings + po_warn,
        population="analysis_population",
    )
    sections = [
        Section(
            name.replace("_", " ").capitalize(),
            [Table(df, caption=_SECONDARY_CAPTIONS.get(name, name))],
        )
        for name, df in sec.items()
        if len(df)
    ]
    if not len(sec["mice"]):
        sections.append(Section("Mice", ["No covariate is missing in the analysis population: "
                                         "no MICE sensitivity analysis was needed."]))  # fmt: skip
    paths.update(
        {
            f"secondary_{k}": v
            for k, v in write_report(
                out, sections, title="Secondary analyses", stem="secondary"
            ).items()
        }  # fmt: skip
    )
    timings["report_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    history_file = out / "runtime.json"
    history = []
    if history_file.exists():
        try:
            history = json.loads(history_file.read_text()).get("runs", [])
        except (json.JSONDecodeError, AttributeError):
            history = []
    history = [*history[-9:], {"cohort": cohort.cohort_id, **timings}]
    write_json_atomic(history_file, {"runs": history})
    paths["results"] = out / "results.csv"
    paths["features"] = out / "features.csv"
    return {"paths": paths, "timings": timings, "history": history, "n": len(data)}


_SECONDARY_CAPTIONS = {
    "bootstrap": "Patient bootstrap (percentile) 95% CIs of the primary per-SD ORs",
    "po_checks": "Proportional-odds checks per primary fit (Brant omnibus/feature, nominal LR)",
    "spearman": "Spearman partial correlation of each feature with mRS, adjusted for the "
    "primary covariates (q: BH within family)",
    "discrimination": "Cross-validated C-indices: covariates only vs covariates + feature",
    "mice": "MICE sensitivity (Rubin-pooled OR per SD)",
    "outcome_groups": "mRS 0-2 vs 3-6 (Mann-Whitney U, BH within family)",
}


def _intro(cfg, cohort, cards, layers, n, synthetic_truth: bool) -> list[str]:
    s_cls = ", ".join(str(c) for c in cards["stroke"]["classes"])
    m_cls = ", ".join(str(c) for c in cards["mrs"]["classes"])
    text = [
        f"Cohort {cohort.cohort_id}; analysis population: {n} stroke patients with a visible "
        "lesion and a known 3-month mRS, none a training or validation patient of either "
        "model.",
        "Maps used: Grad-CAM of the stroke model's 'stroke' class (classes: "
        f"{s_cls}; layer {layers['stroke']}) and of the mRS model's 'mRS 3-6' class "
        f"(classes: {m_cls}; layer {layers['mrs']}), averaged per patient over the lesion "
        "slices with the map's mass as weight. Why: these are the classes whose evidence the "
        "hypotheses are about, and a patient's lesion slices are where they have non-trivial "
        "predicted probability; the paper calls maps of near-zero-probability classes "
        "artefacts, so the 'no stroke' and 'mRS 0-2' maps of these slices are not tested.",
        "Models: every fit is a proportional-odds model of mRS 0-6 adjusted for age, "
        "pre-stroke mRS, ln(lesion volume + 1) and lesion side (sensitivity: + NIHSS); "
        "features are standardised, so an OR is per SD; OR > 1 means a worse (higher) mRS. "
        "q-values are Benjamini-Hochberg within each family (stroke_maps, mrs_maps) and map "
        "source. Negative controls (map_source control_uniform, control_intensity"
        f"{', control_random_model' if cfg.random_control else ''}) run the same hypotheses "
        "on maps that carry no model evidence.",
        "Read each primary CAM result together with its NIHSS-adjusted sensitivity result: on "
        "the synthetic cohort's conditional null (mRS depends on NIHSS, territory and "
        "treatment, not on swelling) several primary tests reject more often than 5 % while "
        "the sensitivity tests hold 5 % (python -m analyses.calibration; README, 'What the "
        "pipeline can and cannot claim').",
        "Secondary analyses (bootstrap CIs, proportional-odds checks, partial Spearman, "
        "mRS 0-2 vs 3-6, cross-validated C-index, MICE) are in secondary.md / secondary.html "
        "and secondary_*.csv.",
    ]
    if synthetic_truth:
        text.append(
            "Synthetic cohort: rows with hypothesis 'truth' refit the outcome on the "
            "generator's own covariates (true swelling SD, ln(true tissue volume + 1), ...) "
            "and state the generator's coefficient (true_value) and whether the 95% CI covers "
            "it. CAM features measure swelling with error, so they get power, not coverage."
        )
    if cfg.quick:
        text.append("Quick run (--quick): a small cohort and few resamples; not for inference.")
    return text


def _parser() -> argparse.ArgumentParser:
    d = AnalysisConfig()
    p = argparse.ArgumentParser(prog="python -m analyses.asymmetry_vs_mrs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--cohort", type=Path, default=None, help="cohort folder (default: synthetic)")
    p.add_argument("--stroke-model", type=Path, default=d.stroke_model)
    p.add_argument("--mrs-model", type=Path, default=d.mrs_model)
    p.add_argument("--layer", default=None, help="CAM layer (default: each card's cam_layer)")
    p.add_argument("--method", action="append", dest="methods",
                   help="CAM method, repeatable (default gradcam and gradcampp)")  # fmt: skip
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--quick", action="store_true", help="a small run (tests, a first look)")
    p.add_argument("--quick-patients", type=int, default=d.quick_patients)
    p.add_argument("--n-boot", type=int, default=d.n_boot)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-random-control", action="store_true")
    p.add_argument("--hypotheses", type=Path, default=d.hypotheses)
    p.add_argument("--lock", type=Path, default=d.lock)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--max-qc-fail-fraction", type=float, default=None,
                   help="stop when more patients fail the anatomy QC (default 0.2)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    cfg = AnalysisConfig(
        cohort=args.cohort,
        stroke_model=args.stroke_model,
        mrs_model=args.mrs_model,
        layer=args.layer,
        methods=tuple(args.methods or ("gradcam", "gradcampp")),
        out=args.out,
        quick=args.quick,
        quick_patients=args.quick_patients,
        n_boot=args.n_boot,
        seed=args.seed,
        random_control=not args.no_random_control,
        hypotheses=args.hypotheses,
        lock=args.lock,
        progress=not args.quiet,
        max_qc_fail_fraction=args.max_qc_fail_fraction,
    )
    from hypo.features.anatomy_qc import AnatomyQCError
    from hypo.features.join import LeakageError
    from hypo.stats.registry import RegistryLockError

    try:
        res = run_analysis(cfg)
    except (AnalysisError, LeakageError, RegistryLockError, AnatomyQCError) as e:
        print(f"asymmetry_vs_mrs: refused: {e}", file=sys.stderr, flush=True)
        return 2
    tm = res["timings"]
    hist = res["history"]
    # The last run on this cohort that fitted its statistics (not a cached rerun).
    fitted = [h for h in hist[:-1] if h.get("cohort") == hist[-1]["cohort"]]
    fitted = [h for h in fitted if h.get("statistics_reused") is False]
    print(
        f"\nasymmetry_vs_mrs: {res['n']} patients analysed -> {Path(cfg.out)}\n"
        f"  report   {res['paths']['html']}\n"
        f"  results  {res['paths']['results']}\n"
        f"  runtime  this run {tm['total_s']:.0f} s (features: stroke {tm['features_stroke_s']:.0f}"
        f" s, mRS {tm['features_mrs_s']:.0f} s; statistics {tm['statistics_s']:.0f} s; report "
        f"{tm['report_s']:.0f} s{'; statistics from the cache' if tm['statistics_reused'] else ''})"
        + (f"; last run that fitted them {fitted[-1]['total_s']:.0f} s" if fitted else "")
        + f"; targets <= 600 s from nothing / <= 60 s with caches ({Path(cfg.out) / 'runtime.json'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
