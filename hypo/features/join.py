"""Join per-patient features with participants.tsv; the leakage guard.

The join never drops anything silently: ids found on only one side, duplicate ids and
missing values are listed in a report table (returned and printed). The joined table is
tidy (one row per patient, map features spread into columns named
``<feature>__<source>_<method>_<layer>_c<class>``) with the flags ``has_features``,
``in_participants``, ``analysis_population`` (stroke patients with a visible lesion and
features) and ``in_model_training``.

Leakage guard: a model's training and validation patients (validation drove early
stopping) are keyed on ``(cohort id, participant_id)``, because two synthetic cohorts both
number their patients from 1. :func:`require_held_out` refuses tables that contain them
unless ``allow_training_patients=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import write_table_atomic
from hypo.features.aggregate import MAP_FEATURES, MAP_KEYS
from hypo.nets.cards import training_patients

KEY = "participant_id"
ISSUES = (
    "only_in_features",
    "only_in_participants",
    "duplicate_in_features",
    "duplicate_in_participants",
    "missing_value",
)


class LeakageError(ValueError):
    """An analysis was given patients a model was trained or validated on."""


class JoinError(ValueError):
    """The tables cannot be joined into one row per patient; ``report`` says why."""

    def __init__(self, message: str, report: pd.DataFrame):
        super().__init__(message)
        self.report = report


@dataclass
class JoinResult:
    """The joined table and the report of every unmatched, duplicate or missing entry."""

    table: pd.DataFrame
    report: pd.DataFrame
    #: Per-patient anatomy QC (:func:`hypo.features.anatomy_qc.anatomy_qc`) when the
    #: features stage computed it; also written as ``anatomy_qc.csv``.
    anatomy_qc: pd.DataFrame | None = None

    def write(self, out_dir: str | os.PathLike, name: str = "features_joined") -> dict[str, Path]:
        """Write ``<name>.parquet``, ``<name>.csv`` and ``<name>_report.csv`` atomically."""
        out = Path(out_dir)
        return {
            "parquet": write_table_atomic(out / f"{name}.parquet", self.table),
            "csv": write_table_atomic(out / f"{name}.csv", self.table),
            "report": write_table_atomic(out / f"{name}_report.csv", self.report),
        }


# --------------------------------------------------------------------------- leakage


def flag_training_patients(table: pd.DataFrame, cards) -> pd.DataFrame:
    """Add ``in_model_training``: the row's (cohort_id, participant_id) trained or validated
    one of the models in ``cards`` (a card, a path, or a list of them).

    A card without a cohort id matches every cohort (the conservative reading).
    """
    if "cohort_id" not in table.columns or KEY not in table.columns:
        raise ValueError("the leakage guard needs columns 'cohort_id' and 'participant_id'")
    cards = cards if isinstance(cards, list | tuple) else [cards]
    flag = np.zeros(len(table), bool)
    cid = table["cohort_id"].astype(str).to_numpy()
    pid = table[KEY].astype(str).to_numpy()
    for card in cards:
        card_cid, pats = training_patients(card)
        same = np.ones(len(table), bool) if card_cid is None else cid == str(card_cid)
        flag |= same & np.isin(pid, list(pats))
    out = table.copy()
    out["in_model_training"] = flag
    return out


def require_held_out(table: pd.DataFrame, allow_training_patients: bool = False) -> pd.DataFrame:
    """Raise :class:`LeakageError` naming the patients flagged ``in_model_training``.

    Call at the start of every analysis. With ``allow_training_patients=True`` the table
    is returned unchanged (the caller takes responsibility).
    """
    if "in_model_training" not in table.columns:
        raise LeakageError(
            "table has no 'in_model_training' column: run flag_training_patients (or "
            "join_participants with model_cards=...) first"
        )
    if allow_training_patients:
        return table
    bad = table.loc[table["in_model_training"].astype(bool)]
    if len(bad):
        ids = sorted({f"{c}:{p}" for c, p in zip(bad.get("cohort_id", ""), bad[KEY])})
        raise LeakageError(
            f"{len(ids)} patient(s) trained or validated the model: {ids[:20]}"
            f"{' ...' if len(ids) > 20 else ''}; drop them (table[~table.in_model_training]) "
            "or pass allow_training_patients=True explicitly"
        )
    return table


# --------------------------------------------------------------------------- wide table


def _map_label(row) -> str:
    parts = [str(row[k]) for k in MAP_KEYS]
    parts[-1] = f"c{parts[-1]}"
    return "_".join(p.replace(" ", "-") for p in parts)


def to_wide(patient_features: pd.DataFrame, features=None) -> pd.DataFrame:
    """One row per (cohort_id, participant_id): map features spread into columns
    ``<feature>__<source>_<method>_<layer>_c<class>``; patient covariates kept once."""

    df = patient_features
    idx = ["cohort_id", KEY]
    for c in idx:
        if c not in df.columns:
            raise ValueError(f"patient feature table lacks column {c!r}")
    if not all(k in df.columns for k in MAP_KEYS):
        return df.copy()
    per_map = [
        c
        for c in df.columns
        if c in ("n_slices", "n_lesion_slices", "map_mass_brain", "cell_mm")
        or any(c == f"{f}_all" or c == f"{f}_lesion" for f in MAP_FEATURES)
    ]
    if features is not None:
        per_map = [c for c in per_map if c in features]
    cov = [c for c in df.columns if c not in per_map and c not in MAP_KEYS and c not in idx]
    label = df.apply(_map_label, axis=1) if len(df) else pd.Series([], dtype=str)
    wide = df.assign(_map=label).pivot_table(
        index=idx, columns="_map", values=per_map, aggfunc="first", dropna=False
    )
    wide.columns = [f"{f}__{m}" for f, m in wide.columns]
    covs = df[idx + cov].drop_duplicates(idx).set_index(idx)
    return covs.join(wide).reset_index()


# --------------------------------------------------------------------------- join


def _participants_frame(participants: pd.DataFrame, key: str) -> pd.DataFrame:
    p = participants
    if key not in p.columns:
        if p.index.name == key:
            p = p.reset_index()
        else:
            raise ValueError(
                f"participant table has no {key!r} column or index (columns: "
                f"{list(p.columns)[:12]}); cannot join"
            )
    p = p.copy()
    p[key] = p[key].astype(str)
    return p


def join_participants(
    patient_features: pd.DataFrame,
    participants: pd.DataFrame,
    *,
    cohort_id: str | None = None,
    model_cards=None,
    key: str = KEY,
    verbose: bool = True,
) -> JoinResult:
    """Join per-patient features with the participant table.

    Parameters
    ----------
    patient_features : DataFrame
        Output of :func:`hypo.features.aggregate.aggregate_patients` (long: one row per
        patient x map) or already one row per patient.
    participants : DataFrame
        ``Cohort.participants`` (index ``participant_id``) or a table with that column.
    cohort_id : str, optional
        Cohort of ``participants``; features from another cohort are refused.
    model_cards : card, path or list, optional
        Adds ``in_model_training`` (see :func:`flag_training_patients`); without cards the
        column is False everywhere and the report says the guard was not applied.
    verbose : bool
        Print the report.

    Returns
    -------
    JoinResult
        ``table`` (one row per patient in either table) and ``report``.
    """
    if key not in patient_features.columns:
        raise ValueError(f"feature table has no {key!r} column; cannot join")
    part = _participants_frame(participants, key)
    feats, cohort = _one_cohort(patient_features, cohort_id, key)
    wide = to_wide(feats)
    report, dup_f, dup_p = _join_report(wide, part, key)
    if len(dup_f) or len(dup_p):
        _print(report, verbose)
        raise JoinError(
            f"duplicate participant ids (features: {list(dup_f)[:10]}, participants: "
            f"{list(dup_p)[:10]}); a tidy join needs one row per patient",
            report,
        )
    clash = [c for c in part.columns if c in wide.columns and c != key]
    part = part.rename(columns={c: f"{c}_participants" for c in clash})
    table = wide.drop(columns=["cohort_id"]).merge(part, on=key, how="outer", indicator=True)
    table.insert(0, "cohort_id", cohort)
    table["has_features"] = table["_merge"].isin(["both", "left_only"])
    table["in_participants"] = table["_merge"].isin(["both", "right_only"])
    table = table.drop(columns="_merge")
    table["analysis_population"] = _stroke(table) & _visible(table) & table["has_features"]
    if model_cards is not None:
        table = flag_training_patients(table, model_cards)
    else:
        table["in_model_training"] = False
        no_card = {"issue": "no_model_card", key: "", "column": "in_model_training",
                   "detail": "leakage guard not applied: no model card given"}  # fmt: skip
        report = pd.concat([report, pd.DataFrame([no_card])], ignore_index=True)
    table = table.sort_values(key, kind="stable").reset_index(drop=True)
    _print(report, verbose)
    return JoinResult(table, report)


def _one_cohort(patient_features: pd.DataFrame, cohort_id, key: str):
    """The feature table with a ``cohort_id`` column, and its one cohort (or an error)."""
    feats = patient_features.copy()
    feats[key] = feats[key].astype(str)
    if "cohort_id" not in feats.columns:
        if cohort_id is None:
            raise ValueError("feature table has no cohort_id column; pass cohort_id=")
        feats["cohort_id"] = cohort_id
    cids = sorted(feats["cohort_id"].astype(str).unique())
    if cohort_id is not None and cids and cids != [str(cohort_id)]:
        raise ValueError(
            f"features come from cohort(s) {cids}; the participant table is cohort {cohort_id!r}"
        )
    if len(cids) > 1:
        raise ValueError(f"features mix cohorts {cids}; join one cohort at a time")
    return feats, cohort_id or (cids[0] if cids else None)


def _join_report(wide: pd.DataFrame, part: pd.DataFrame, key: str):
    """Every duplicate, unmatched and missing entry; and the duplicated ids of each side."""
    issues = []

    def add(issue, ids, column="", detail=""):
        for i in ids:
            issues.append({"issue": issue, key: i, "column": column, "detail": detail})

    dup_f = wide[key][wide[key].duplicated(keep=False)].unique()
    dup_p = part[key][part[key].duplicated(keep=False)].unique()
    add("duplicate_in_features", dup_f, detail="several feature rows for one patient")
    add("duplicate_in_participants", dup_p, detail="several participants.tsv rows")
    fset, pset = set(wide[key]), set(part[key])
    add("only_in_features", sorted(fset - pset), detail="no participants.tsv row")
    add("only_in_participants", sorted(pset - fset), detail="no features (no slices/maps?)")
    for c in part.columns:
        if c == key:
            continue
        miss = part.loc[part[c].isna(), key]
        add("missing_value", miss, column=c, detail="participants.tsv")
    return pd.DataFrame(issues, columns=["issue", key, "column", "detail"]), dup_f, dup_p


def _stroke(table: pd.DataFrame) -> pd.Series:
    if "group" not in table.columns:
        return pd.Series(True, index=table.index)
    return table["group"].astype(str).str.lower().eq("stroke")


def _visible(table: pd.DataFrame) -> pd.Series:
    """A visible lesion: the reader's labels where present, else a lesion volume > 0."""
    if "any_lesion_visible" in table.columns and table["any_lesion_visible"].notna().any():
        return table["any_lesion_visible"].fillna(0).astype(float) > 0
    if "lesion_volume_ml" in table.columns:
        return table["lesion_volume_ml"].fillna(0) > 0
    return pd.Series(False, index=table.index)


def _print(report: pd.DataFrame, verbose: bool) -> None:
    if not verbose:
        return
    if report.empty:
        print("join: every patient matched, no duplicates, no missing values")
        return
    counts = report.groupby(["issue", "column"], dropna=False).size()
    print("join report (issue, column: count):")
    for (issue, col), k in counts.items():
        print(f"  {issue}{' ' + col if col else ''}: {k}")
