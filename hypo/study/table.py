"""The analysis table and the patient flow of the main study.

:func:`build_table` joins both models' per-patient feature tables into one row per patient
with one column per (registered hypothesis, map source); :func:`population_flow` applies
the inclusion steps in order and counts who each one excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hypo.cohort.layout import side_right
from hypo.report.tables import patient_flow

from .config import (
    AGGREGATION_SUFFIX,
    LOG_VOLUME,
    OUTCOME,
    OUTCOME_CAM_CLASS,
    SIDE_RIGHT,
    StudyError,
)


@dataclass
class AnalysisTable:
    """One row per patient, and where each registered test's column came from.

    Attributes
    ----------
    table : DataFrame
        Participants, image covariates (``log_lesion_volume_ml``, ``lesion_side_right``),
        leakage flags and one column per (hypothesis, map source) named by :func:`alias`.
    columns : dict
        ``(hypothesis id, map source) -> column of the features' wide table``.
    """

    table: pd.DataFrame
    columns: dict[tuple[str, str], str]


def class_index(card: dict, name: str, where: str) -> int:
    """Index of class ``name`` in a model card, or an error naming ``where`` it was asked."""
    classes = [str(c) for c in card.get("classes", [])]
    if name not in classes:
        raise StudyError(f"{where}: class {name!r} is not a class of the model ({classes})")
    return classes.index(name)


def wide_column(feature: str, aggregation: str, source: str, method: str, layer: str, k: int):
    """Column of the joined table (:func:`hypo.features.join.to_wide` naming)."""
    if aggregation not in AGGREGATION_SUFFIX:
        raise StudyError(
            f"aggregation {aggregation!r}: expected one of {sorted(AGGREGATION_SUFFIX)}"
        )
    suffix = AGGREGATION_SUFFIX[aggregation]
    label = "_".join(str(p).replace(" ", "-") for p in (source, method, layer, f"c{k}"))
    return f"{feature}{suffix}__{label}"


def alias(h, source: str) -> str:
    """Short analysis-table column of hypothesis ``h`` on one map source."""
    return f"{h.model}__{h.feature}__{source}"


def cam_method(h, methods) -> str:
    """The CAM method a hypothesis is tested with: its registered one when computed, else
    the first computed (an exploratory run, which the report says)."""
    return h.method if h.method in methods else methods[0]


def map_class_index(h, card: dict) -> int:
    """Class index of a hypothesis's maps: the card's class, or for the outcome model's bag
    CAMs 0 (their one class, the ordinal linear predictor, registered as
    :data:`OUTCOME_CAM_CLASS`)."""
    where = f"hypothesis {h.id} ({h.source})"
    if h.model == "outcome":
        if h.cam_class != OUTCOME_CAM_CLASS:
            raise StudyError(
                f"{where}: class {h.cam_class!r}; the outcome model's bag CAMs explain one "
                f"score, its ordinal linear predictor: class = {OUTCOME_CAM_CLASS!r}"
            )
        return 0
    return class_index(card, h.cam_class, where)


def feature_columns(reg, cards, layers, methods, sources) -> dict[tuple[str, str], str]:
    """``(hypothesis id, map source) -> joined-table column`` for every registered test."""
    out = {}
    for h in reg.hypotheses.values():
        card, layer = cards[h.model], layers[h.model]
        if h.layer not in ("cam_layer", layer):
            raise StudyError(
                f"hypothesis {h.id} ({h.source}) registers layer {h.layer!r} but the {h.model} "
                f"model's CAMs are computed at {layer!r} (the card's cam_layer or --layer)"
            )
        k = map_class_index(h, card)
        for src in sources:
            if src in ("control_uniform", "control_intensity"):
                col = wide_column(h.feature, h.aggregation, src, "control", "image", -1)
            elif src == "control_random_model":
                col = wide_column(h.feature, h.aggregation, src, "gradcam", layer, k)
            else:
                col = wide_column(h.feature, h.aggregation, "cam", cam_method(h, methods), layer, k)
            out[h.id, src] = col
    return out


def outcome_columns(reg, layer: str, methods, sources) -> dict[str, str]:
    """``analysis-table column -> joined-table column`` of the outcome model's maps for
    every registered feature (the features, aggregations and methods the CNNs' hypotheses
    register; the first hypothesis of a feature sets its method): ``outcome__<feature>__cam``
    and each control of ``sources``, whether or not a hypothesis on the outcome model is
    registered (one that is uses the same column)."""
    out = {}
    for h in sorted(reg.hypotheses.values(), key=lambda h: h.id):
        for src in sources:
            name = f"outcome__{h.feature}__{src}"
            if name in out:
                continue
            if src == "cam":
                col = wide_column(h.feature, h.aggregation, "cam", cam_method(h, methods), layer, 0)
            elif src == "control_random_model":
                col = wide_column(h.feature, h.aggregation, src, "gradcam", layer, 0)
            else:
                col = wide_column(h.feature, h.aggregation, src, "control", "image", -1)
            out[name] = col
    return out


def build_table(joined: dict, reg, cards, layers, methods, sources) -> AnalysisTable:
    """One row per patient: participants, image covariates, flags and one column per
    (hypothesis, map source) named by :func:`alias`.

    ``joined`` maps ``"stroke"`` / ``"mrs"`` (and ``"outcome"``, optional) to each model's
    feature run (anything with a ``table`` attribute: :class:`hypo.features.join.JoinResult`).
    With ``"outcome"`` the table also holds :func:`outcome_columns` and
    ``in_training_outcome_model``; every model's flag counts in ``in_model_training``.
    """
    base = joined["stroke"].table
    cols = feature_columns(reg, cards, layers, methods, sources)
    keep = [c for c in base.columns if "__" not in c]
    table = base[keep].copy()
    for key in joined:
        t = joined[key].table.set_index("participant_id")
        table[f"in_training_{key}_model"] = (
            table["participant_id"].map(t["in_model_training"]).fillna(False).astype(bool)
        )
    table["in_model_training"] = np.logical_or.reduce(
        [table[f"in_training_{key}_model"].to_numpy() for key in joined]
    )
    for (hid, src), col in cols.items():
        h = reg.hypotheses[hid]
        t = joined[h.model].table.set_index("participant_id")
        if col not in t.columns:
            raise StudyError(
                f"hypothesis {hid} ({h.source}): feature column {col!r} is not in the "
                f"{h.model} model's feature table (layer/method/class not computed?)"
            )
        table[alias(h, src)] = table["participant_id"].map(t[col]).astype(float)
    if "outcome" in joined:
        t = joined["outcome"].table.set_index("participant_id")
        for name, col in outcome_columns(reg, layers["outcome"], methods, sources).items():
            if name in table.columns:
                continue
            if col not in t.columns:
                raise StudyError(
                    f"outcome model maps: feature column {col!r} is not in its feature table "
                    "(layer/method not computed?)"
                )
            table[name] = table["participant_id"].map(t[col]).astype(float)
    vol = pd.to_numeric(table.get("lesion_volume_ml"), errors="coerce")
    table[LOG_VOLUME] = np.log1p(vol.clip(lower=0))
    table[SIDE_RIGHT] = side_right(table["lesion_side"])
    return AnalysisTable(table, cols)


def population_flow(table: pd.DataFrame):
    """Inclusion steps, in order; returns (flow, excluded, boolean population)."""
    stroke = table["group"].astype(str).str.lower().eq("stroke")
    visible = pd.to_numeric(table.get("any_lesion_visible"), errors="coerce").fillna(0) > 0
    has_feat = table["has_features"].astype(bool)
    has_mrs = pd.to_numeric(table[OUTCOME], errors="coerce").notna()
    held_out = ~table["in_model_training"].astype(bool)
    # Patients whose image anatomy failed its QC (anatomy_qc.csv says why) are measured
    # against a wrong brain, midline or ventricles: they leave here, counted.
    qc_ok = (
        table["anatomy_qc_pass"].fillna(True).astype(bool)
        if "anatomy_qc_pass" in table.columns
        else pd.Series(True, index=table.index)
    )
    criteria = [
        ("Stroke patients", stroke.to_numpy(), "not a stroke (TIA / other group)"),
        ("Visible lesion", visible.to_numpy(), "no slice with a visible lesion"),
        ("CAM features", has_feat.to_numpy(), "no slices or maps"),
        ("Anatomy QC passed", qc_ok.to_numpy(), "anatomy QC failed (anatomy_qc_reason)"),
        ("Not a model's training/validation patient", held_out.to_numpy(), "leakage guard"),
        ("3-month mRS known", has_mrs.to_numpy(), "3-month mRS missing"),
    ]
    flow, excluded = patient_flow(table, criteria, start="All participants")
    pop = stroke & visible & has_feat & qc_ok & held_out & has_mrs
    return flow, excluded, pop


def _undefined_reason(h, data: pd.DataFrame, undefined: pd.Series) -> list[tuple[str, pd.Series]]:
    """Why a feature is undefined for a patient: a bilateral lesion has no ipsilateral
    side (asymmetry features); otherwise the map has no mass where the feature looks."""
    if h.feature.startswith("asymmetry") and "lesion_side" in data.columns:
        bilateral = data["lesion_side"].astype(str).eq("bilateral")
        return [
            ("bilateral lesion: no ipsilateral side for an asymmetry", undefined & bilateral),
            (
                "feature undefined: no map mass in the brain or no lesion slice",
                undefined & ~bilateral,
            ),
        ]
    if h.feature.startswith("ventricle"):
        return [("feature undefined: no ventricle on the lesion slices, or no map mass", undefined)]
    return [("feature undefined: no map mass in the brain or no lesion slice", undefined)]


def hypothesis_flow(data: pd.DataFrame, reg) -> pd.DataFrame:
    """Per registered test (CAM maps), from the analysis population to the fitted n.

    One row per step: the feature undefined (with why), then each primary covariate
    missing, then (sensitivity model) each added covariate missing; ``n_remaining`` of the
    last primary step is the primary fit's n in ``results.csv``, and likewise for the
    sensitivity fit.
    """
    rows = []
    for h in sorted(reg.hypotheses.values(), key=lambda h: h.id):
        keep = pd.Series(True, index=data.index)
        rows.append((h.id, "primary", "analysis population", 0, int(keep.sum())))
        undefined = pd.to_numeric(data[alias(h, "cam")], errors="coerce").isna()
        for reason, out in _undefined_reason(h, data, undefined):
            n = int((keep & out).sum())
            keep &= ~out
            if n:
                rows.append((h.id, "primary", reason, n, int(keep.sum())))
        for analysis, covs in (
            ("primary", h.covariates),
            ("sensitivity", h.sensitivity_covariates),
        ):
            for c in covs:
                missing = (
                    pd.to_numeric(data[c], errors="coerce").isna()
                    if c in data.columns
                    else pd.Series(True, index=data.index)
                )
                n = int((keep & missing).sum())
                keep &= ~missing
                rows.append((h.id, analysis, f"{c} missing", n, int(keep.sum())))
    cols = ["hypothesis", "analysis", "step", "n_excluded", "n_remaining"]
    return pd.DataFrame(rows, columns=cols)


def hypothesis_flow_summary(flow: pd.DataFrame) -> pd.DataFrame:
    """:func:`hypothesis_flow` in one row per test (hypothesis x analysis): the population,
    who was left out and why (steps that left someone out), and the fitted n."""
    rows = []
    for hid, g in flow.groupby("hypothesis", sort=False):
        population = int(g["n_remaining"].iloc[0])
        for analysis in ("primary", "sensitivity"):
            upto = g.iloc[: int(np.flatnonzero(g["analysis"].eq(analysis))[-1]) + 1]
            if not g["analysis"].eq(analysis).any():
                continue
            out = upto[upto["n_excluded"] > 0]
            why = "; ".join(f"{r.step}: {r.n_excluded}" for r in out.itertuples()) or "none"
            rows.append((hid, analysis, population, why, int(upto["n_remaining"].iloc[-1])))
    cols = ["hypothesis", "analysis", "population", "left out (why: n)", "n fitted"]
    return pd.DataFrame(rows, columns=cols)
