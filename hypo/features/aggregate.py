"""Per-patient aggregation of slice features, data dictionary, feature correlations.

A patient's map feature is the **map-mass-weighted mean** of the slice values (weight =
the map's mass over the slice's brain, ``map_mass_brain``): slices the model attends to
count more, slices with an empty map not at all. Two versions are kept: over all brain
slices (suffix ``_all``) and over lesion slices only (suffix ``_lesion``), each with its
slice count. Image covariates (lesion volume and side, ventricle asymmetry, septum shift)
are patient sums or area-weighted means, identical for every map of the patient.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import write_table_atomic, write_text_atomic
from hypo.features.maps import FEATURE_DICTIONARY, lesion_side

#: Slice features averaged per patient (map-mass weighted).
MAP_FEATURES = (
    "relevance_mass_lesion",
    "pointing_game_hit",
    "relevance_rank_accuracy",
    "top_iou_lesion",
    "asymmetry_index",
    "asymmetry_abs",
    "asymmetry_ipsi_contra",
    "ventricle_density_ratio",
    "edge_density_ratio",
    "outside_density_ratio",
    "ventricle_mass_fraction",
    "edge_mass_fraction",
    "outside_mass_fraction",
    "entropy_norm",
    "top_share",
)
MAP_KEYS = ("map_source", "method", "layer", "class_index")
_DEF = {c: (d, u) for c, d, u in FEATURE_DICTIONARY}

PATIENT_DICTIONARY: list[tuple[str, str, str]] = [
    ("cohort_id", "cohort identifier (two synthetic cohorts both number patients from 1)", "id"),
    ("participant_id", "patient identifier", "id"),
    ("map_source", _DEF["map_source"][0], "label"),
    ("method", _DEF["method"][0], "label"),
    ("layer", _DEF["layer"][0], "label"),
    ("class_index", _DEF["class_index"][0], "index"),
    ("cell_mm", _DEF["cell_mm"][0], "mm"),
    ("n_slices", "slices of the patient with an image-derived brain", "count"),
    ("n_lesion_slices", "slices with a lesion (lesion_source)", "count"),
    ("map_mass_brain", "sum of map mass over the patient's brain slices", "map units"),
    ("lesion_volume_ml", "lesion volume: sum of slice areas x slice thickness", "mL"),
    ("lesion_image_volume_ml", "image-derived lesion volume (check column)", "mL"),
    (
        "lesion_side",
        "left / right (>= 90 % of lesion voxels on one side), bilateral, none",
        "label",
    ),
    ("lesion_left_fraction", "share of lesion voxels in the patient's left hemisphere", "fraction"),
    ("brain_volume_ml", "image-derived brain volume over the stored slices", "mL"),
    ("ventricle_volume_ml", "image-derived ventricle volume", "mL"),
    (
        "ventricle_asymmetry",
        "(L - R) / (L + R) of ventricle volumes; > 0 = right ventricle smaller",
        "-1..1",
    ),
    (
        "septum_shift_mm",
        "ventricle-area-weighted mean of the slices' septum shift from the symmetry "
        "midline, + towards the patient's left",
        "mm",
    ),
    ("midline_angle_deg", "median midline angle over the patient's slices", "degrees"),
    (
        "sulcal_effacement",
        "image sign of swelling: perilesional band minus its mirror across the midline, "
        "in brain intensity SDs, + = effaced sulci (hypo.features.swelling)",
        "SD",
    ),
    (
        "ventricle_compression",
        "image sign of swelling: (contra - ipsi) / (contra + ipsi) of ventricle areas, "
        "+ = lesion-side ventricle smaller (hypo.features.swelling)",
        "-1..1",
    ),
    ("any_lesion_visible", "1 if any slice carries the reader's lesion_visible label", "0/1"),
]
for _f in MAP_FEATURES:
    _d, _u = _DEF[_f]
    PATIENT_DICTIONARY.append(
        (f"{_f}_all", f"map-mass-weighted mean over the patient's brain slices of: {_d}", _u)
    )
    PATIENT_DICTIONARY.append(
        (f"{_f}_lesion", f"map-mass-weighted mean over the patient's lesion slices of: {_d}", _u)
    )


def _weighted(df: pd.DataFrame, keys: list[str], weight: np.ndarray, sel: np.ndarray, suffix):
    parts = {}
    for f in MAP_FEATURES:
        x = df[f].to_numpy(float)
        ok = sel & np.isfinite(x) & (weight > 0)
        parts[f + "_wx"] = np.where(ok, weight * np.where(ok, x, 0.0), 0.0)
        parts[f + "_w"] = np.where(ok, weight, 0.0)
    tmp = pd.DataFrame(parts)
    for k in keys:
        tmp[k] = df[k].to_numpy()
    s = tmp.groupby(keys, sort=True, dropna=False).sum()
    out = pd.DataFrame(index=s.index)
    for f in MAP_FEATURES:
        w = s[f + "_w"].to_numpy()
        out[f + suffix] = np.divide(
            s[f + "_wx"].to_numpy(), w, out=np.full(len(w), np.nan), where=w > 0
        )
    return out


def aggregate_patients(slice_features: pd.DataFrame, cohort_id: str | None = None) -> pd.DataFrame:
    """Per-patient table from per-slice features (:func:`hypo.features.maps.features_for_store`).

    Parameters
    ----------
    slice_features : DataFrame
        One row per slice x map (``participant_id``, ``map_source``, ``method``, ``layer``,
        ``class_index`` and the feature and covariate columns).
    cohort_id : str, optional
        Added as the ``cohort_id`` column (the leakage guard keys on it); taken from the
        table's own ``cohort_id`` column when it has one.

    Returns
    -------
    DataFrame, one row per patient x map, columns of :data:`PATIENT_DICTIONARY`.
    """
    need = ["participant_id", *MAP_KEYS, "map_mass_brain", "lesion_area_mm2", "store_index"]
    missing = [c for c in need + list(MAP_FEATURES) if c not in slice_features.columns]
    if missing:
        raise ValueError(f"slice feature table lacks columns {missing}")
    df = slice_features.reset_index(drop=True)
    if cohort_id is None:
        if "cohort_id" not in df.columns:
            raise ValueError("no cohort_id: pass cohort_id= or give the table a cohort_id column")
    else:
        df = df.assign(cohort_id=cohort_id)
    keys = ["cohort_id", "participant_id", *MAP_KEYS]
    w = df["map_mass_brain"].to_numpy(float)
    brain = (
        df["brain_area_mm2"].to_numpy(float) > 0
        if "brain_area_mm2" in df
        else np.ones(len(df), bool)
    )
    les = df["lesion_area_mm2"].to_numpy(float) > 0
    g = df.assign(_brain=brain, _les=les).groupby(keys, sort=True, dropna=False)
    base = pd.DataFrame(
        {
            "cell_mm": g["cell_mm"].mean(),
            "n_slices": g["_brain"].sum().astype(int),
            "n_lesion_slices": g["_les"].sum().astype(int),
            "map_mass_brain": g["map_mass_brain"].sum(),
        }
    )
    out = base.join(_weighted(df, keys, w, brain, "_all")).join(
        _weighted(df, keys, w, brain & les, "_lesion")
    )
    out = out.reset_index()
    cov = patient_covariates(df)
    return out.merge(cov, on=["cohort_id", "participant_id"], how="left", validate="m:1")


def patient_covariates(df: pd.DataFrame) -> pd.DataFrame:
    """Image covariates per patient from one map's slice rows (they repeat across maps)."""
    one = df.drop_duplicates(["cohort_id", "participant_id", "store_index"])
    thick = one["slice_thickness_mm"].to_numpy(float) if "slice_thickness_mm" in one else 1.0
    t = pd.DataFrame(
        {
            "cohort_id": one["cohort_id"].to_numpy(),
            "participant_id": one["participant_id"].to_numpy(),
            "lesion_volume_ml": one["lesion_volume_ml"].to_numpy(float),
            "lesion_image_volume_ml": one["lesion_image_area_mm2"].to_numpy(float) * thick / 1e3,
            "l": one["lesion_left_px"].to_numpy(float),
            "r": one["lesion_right_px"].to_numpy(float),
            "brain_volume_ml": one["brain_area_mm2"].to_numpy(float) * thick / 1e3,
            "vl": one["ventricle_area_left_mm2"].to_numpy(float) * thick / 1e3,
            "vr": one["ventricle_area_right_mm2"].to_numpy(float) * thick / 1e3,
        }
    )
    va = t["vl"] + t["vr"]
    shift = one["septum_shift_mm"].to_numpy(float)
    ok = np.isfinite(shift) & (va.to_numpy() > 0)
    t["_sw"] = np.where(ok, va, 0.0)
    t["_sx"] = np.where(ok, va * np.where(ok, shift, 0), 0.0)
    t["midline_angle_deg"] = one["midline_angle_deg"].to_numpy(float)
    if "lesion_visible" in one:
        t["any_lesion_visible"] = pd.to_numeric(one["lesion_visible"], errors="coerce").to_numpy()
    g = t.groupby(["cohort_id", "participant_id"], sort=True)
    s = g[["lesion_volume_ml", "lesion_image_volume_ml", "l", "r", "brain_volume_ml", "vl", "vr",
           "_sw", "_sx"]].sum()  # fmt: skip
    out = pd.DataFrame(index=s.index)
    out["lesion_volume_ml"] = s["lesion_volume_ml"]
    out["lesion_image_volume_ml"] = s["lesion_image_volume_ml"]
    out["lesion_side"] = lesion_side(s["l"], s["r"])
    tot = s["l"] + s["r"]
    out["lesion_left_fraction"] = np.where(tot > 0, s["l"] / tot.where(tot > 0, 1), np.nan)
    out["brain_volume_ml"] = s["brain_volume_ml"]
    out["ventricle_volume_ml"] = s["vl"] + s["vr"]
    vt = s["vl"] + s["vr"]
    out["ventricle_asymmetry"] = np.where(vt > 0, (s["vl"] - s["vr"]) / vt.where(vt > 0, 1), np.nan)
    out["septum_shift_mm"] = np.where(
        s["_sw"] > 0, s["_sx"] / s["_sw"].where(s["_sw"] > 0, 1), np.nan
    )
    out["midline_angle_deg"] = g["midline_angle_deg"].median()
    if "any_lesion_visible" in t:
        out["any_lesion_visible"] = g["any_lesion_visible"].max()
    return out.reset_index()


def data_dictionary(columns) -> pd.DataFrame:
    """(column, definition, unit) for ``columns``; unknown columns are listed as such."""
    known = {c: (d, u) for c, d, u in PATIENT_DICTIONARY + FEATURE_DICTIONARY}
    rows = []
    for c in columns:
        base = c.split("__", 1)[0]
        d, u = known.get(c, known.get(base, ("(not documented)", "")))
        if "__" in c:
            d = f"{d} [map: {c.split('__', 1)[1]}]"
        rows.append({"column": c, "definition": d, "unit": u})
    return pd.DataFrame(rows)


def feature_correlation(table: pd.DataFrame, columns=None) -> pd.DataFrame:
    """Spearman correlation matrix of numeric feature columns (pairwise complete)."""
    if columns is None:
        columns = [
            c
            for c in table.columns
            if pd.api.types.is_numeric_dtype(table[c])
            and c not in ("class_index",)
            and table[c].nunique(dropna=True) > 1
        ]
    return table[list(columns)].corr(method="spearman")


def write_patient_tables(
    table: pd.DataFrame, out_dir: str | os.PathLike, name: str = "patient_features"
) -> dict[str, Path]:
    """Write ``<name>.parquet/.csv``, the data dictionary (CSV + Markdown) and the Spearman
    correlation matrix (CSV) into ``out_dir``, each atomically."""
    out = Path(out_dir)
    paths = {
        "parquet": write_table_atomic(out / f"{name}.parquet", table),
        "csv": write_table_atomic(out / f"{name}.csv", table),
    }
    dic = data_dictionary(table.columns)
    paths["dictionary_csv"] = write_table_atomic(out / f"{name}_dictionary.csv", dic)
    md = ["| column | definition | unit |", "|---|---|---|"]
    md += [f"| `{r.column}` | {r.definition} | {r.unit} |" for r in dic.itertuples()]
    note = (
        "\n\nNote: a CAM cell at the evaluation layer is `cell_mm` wide (about 12 mm at the "
        "last block of the GAP model). Bands narrower than a cell (the cortical-edge band, "
        "thin ventricles) are resolved only by the map's interpolation, so their densities "
        "mostly measure interpolation.\n"
    )
    paths["dictionary_md"] = write_text_atomic(out / f"{name}_dictionary.md", "\n".join(md) + note)
    corr = feature_correlation(table)
    paths["correlation"] = write_table_atomic(
        out / f"{name}_spearman.csv", corr.reset_index(names="feature")
    )
    return paths
