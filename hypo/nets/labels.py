"""Slice labels of the paper's two image-level tasks (paper sections 3.5.1 and 3.5.2).

* Stroke model: ``lesion_visible`` as the cohort gives it -- the reader's label, which
  is what the paper trained on, not the synthetic ground truth.
* mRS model (paper Fig. 6): 0 = no lesion visible on the slice, 1 = lesion slice of a
  patient with 3-month mRS 0-2, 2 = lesion slice of a patient with mRS 3-6. Patients
  without a 3-month mRS are left out and returned, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hypo.cohort.layout import mrs_poor

STROKE_CLASSES = ("no stroke", "stroke")
MRS_CLASSES = ("no stroke", "mRS 0-2", "mRS 3-6")


@dataclass
class SliceLabels:
    """Labels of the slices kept for one task.

    Attributes
    ----------
    index : np.ndarray of int
        Row positions (into the slice table / image array) of the kept slices.
    y : np.ndarray of int
        Class index per kept slice.
    classes : tuple of str
        Class names, index order.
    patients : np.ndarray of str
        ``participant_id`` per kept slice.
    excluded_patients : list of str
        Patients left out (mRS model: no 3-month mRS), sorted.
    """

    index: np.ndarray
    y: np.ndarray
    classes: tuple
    patients: np.ndarray
    excluded_patients: list = field(default_factory=list)

    def counts(self) -> dict:
        """Slices per class name."""
        return {c: int((self.y == k).sum()) for k, c in enumerate(self.classes)}


def _require(table: pd.DataFrame, cols, task: str) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(
            f"{task} labels: the slice table lacks column(s) {missing}; "
            f"it has {list(table.columns)}"
        )


def _lesion_visible(table: pd.DataFrame, task: str) -> np.ndarray:
    _require(table, ["participant_id", "lesion_visible"], task)
    lv = pd.to_numeric(table["lesion_visible"], errors="coerce")
    if lv.isna().all():
        raise ValueError(
            f"{task} labels: the cohort has no lesion labels (lesion_visible is empty for "
            "every slice); the stroke and mRS models need the reader's slice labels"
        )
    if lv.isna().any():
        bad = table.loc[lv.isna(), "participant_id"].unique()[:5].tolist()
        raise ValueError(
            f"{task} labels: lesion_visible is missing on {int(lv.isna().sum())} slices "
            f"(e.g. patients {bad}); expected 0 or 1 on every slice"
        )
    if not lv.isin([0, 1]).all():
        raise ValueError(f"{task} labels: lesion_visible takes values other than 0/1")
    return lv.to_numpy(dtype=int)


def stroke_labels(table: pd.DataFrame) -> SliceLabels:
    """Binary slice labels of the stroke model: the reader's ``lesion_visible``."""
    y = _lesion_visible(table, "stroke")
    return SliceLabels(
        index=np.arange(len(table)),
        y=y,
        classes=STROKE_CLASSES,
        patients=table["participant_id"].astype(str).to_numpy(),
    )


def mrs_group(mrs: pd.Series | np.ndarray) -> np.ndarray:
    """Binarised 3-month mRS: 0 for mRS 0-2, 1 for mRS 3-6, -1 where missing."""
    poor = mrs_poor(mrs)
    return np.where(np.isnan(poor), -1, poor).astype(int)


def mrs_labels(table: pd.DataFrame) -> SliceLabels:
    """Three-class slice labels of the mRS model (paper Fig. 6).

    Patients without ``mrs_3months`` are dropped entirely (all their slices) and listed
    in ``excluded_patients``.
    """
    lv = _lesion_visible(table, "mRS")
    _require(table, ["mrs_3months"], "mRS")
    grp = mrs_group(table["mrs_3months"])
    keep = grp >= 0
    pids = table["participant_id"].astype(str).to_numpy()
    excluded = sorted(set(pids[~keep]))
    y = np.where(lv[keep] == 1, 1 + grp[keep], 0)
    return SliceLabels(
        index=np.flatnonzero(keep),
        y=y.astype(int),
        classes=MRS_CLASSES,
        patients=pids[keep],
        excluded_patients=excluded,
    )


def task_labels(task: str, table: pd.DataFrame) -> SliceLabels:
    """Labels for ``task`` in {"stroke", "mrs"}."""
    if task == "stroke":
        return stroke_labels(table)
    if task == "mrs":
        return mrs_labels(table)
    raise ValueError(f"unknown task {task!r}; expected 'stroke' or 'mrs'")
