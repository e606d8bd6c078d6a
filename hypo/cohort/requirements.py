"""What an analysis needs of a cohort, and a preflight that checks it before any work.

The cohort layer knows nothing of analyses: each study declares a :class:`Requirements`
(columns and why, lesion masks or slice labels, a minimum number of usable patients) and
:func:`preflight` checks a cohort folder against it, after the full validation
(:func:`hypo.cohort.validate`). It reads tables and image headers/voxels only (NumPy,
pandas, nibabel): no model, no TensorFlow, so a refusal comes in seconds and names every
missing piece and how to supply it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hypo.cohort import layout
from hypo.cohort.io import Problem, read_participants
from hypo.cohort.validation import validate

__all__ = ["Requirements", "preflight", "format_problems"]


def map_hint(col: str) -> str:
    """How to supply a missing column."""
    return (
        f"a column {col!r}: add it to participants.tsv, or map your own with "
        f'--column {col}=YOUR_COLUMN (or a {layout.COLUMN_MAP} sidecar: {{"{col}": '
        '"YOUR_COLUMN"})'
    )


@dataclass(frozen=True)
class Requirements:
    """What one analysis needs of a cohort.

    Attributes
    ----------
    analysis : str
        The analysis's name (for messages).
    columns : mapping
        participants.tsv column -> why the analysis needs it. Each must exist (after the
        column map) and hold a value for at least one analysable patient.
    lesion_masks : str
        Non-empty: every stroke patient needs a lesion mask (the reason).
    lesion_labels : str
        Non-empty: every patient needs lesion labels, from masks or slice_labels.tsv.
    outcome : str
        Column that makes a patient analysable (with ``group`` stroke); '' for none.
    min_patients : int
        Fewest analysable patients (stroke, with ``outcome`` known) the analysis can use.
    """

    analysis: str
    columns: Mapping[str, str] = field(default_factory=dict)
    lesion_masks: str = ""
    lesion_labels: str = ""
    outcome: str = ""
    min_patients: int = 1


def _columns(part: pd.DataFrame, req: Requirements, usable: pd.Series) -> list[Problem]:
    problems = []
    for col, why in req.columns.items():
        where = f"{layout.PARTICIPANTS}:{col}"
        if col not in part.columns:
            problems.append(Problem(None, where, f"column is missing ({why})",
                                    map_hint(col)))  # fmt: skip
        elif usable.any() and part.loc[usable, col].isna().all():
            problems.append(Problem(None, where, f"no analysable patient has a value ({why})",
                                    "values for the stroke patients with an outcome"))  # fmt: skip
    return problems


def _masks(root: Path, part: pd.DataFrame, req: Requirements) -> list[Problem]:
    stroke = part.index[part["group"].astype(str).str.lower().eq("stroke")]
    labels = root / layout.SLICE_LABELS
    problems = []
    for pid in stroke:
        has_mask = layout.lesion_mask_path(root, pid).is_file()
        if req.lesion_masks and not has_mask:
            problems.append(
                Problem(pid, str(layout.lesion_mask_path(root, pid).relative_to(root)),
                        f"is missing ({req.lesion_masks})",
                        "a lesion mask in the DWI's grid for every stroke patient")
            )  # fmt: skip
    if req.lesion_labels and not labels.is_file():
        unlabelled = [p for p in part.index if not layout.lesion_mask_path(root, p).is_file()]
        if unlabelled:
            problems.append(
                Problem(None, layout.SLICE_LABELS,
                        f"is missing and {len(unlabelled)} patient(s) have no lesion mask "
                        f"(e.g. {', '.join(unlabelled[:3])}): {req.lesion_labels}",
                        "lesion masks (derivatives/lesion_masks/...) or slice_labels.tsv")
            )  # fmt: skip
    return problems


def preflight(
    root: str | os.PathLike,
    req: Requirements,
    columns: Mapping[str, str] | None = None,
    check_voxels: bool = True,
) -> list[Problem]:
    """Every reason the cohort at ``root`` cannot run ``req.analysis``; empty: it can.

    The cohort's own problems (:func:`hypo.cohort.validate`) come first; then what the
    analysis needs: columns (after the column map), lesion masks or labels, enough
    analysable patients.
    """
    root = Path(root)
    problems = validate(root, check_voxels=check_voxels, columns=columns)
    if any(p.participant_id is None for p in problems) or not root.is_dir():
        return problems  # the table itself is unusable: nothing more can be read
    part = read_participants(root, columns)
    usable = part["group"].astype(str).str.lower().eq("stroke")
    if req.outcome and req.outcome in part.columns:
        usable &= part[req.outcome].notna()
    problems += _columns(part, req, usable)
    problems += _masks(root, part, req)
    bad = {p.participant_id for p in problems if p.participant_id is not None}
    n = int((usable & ~part.index.isin(bad)).sum())
    if n < req.min_patients:
        what = f"stroke patients with {req.outcome} known" if req.outcome else "stroke patients"
        problems.append(
            Problem(None, layout.PARTICIPANTS, f"{n} usable {what}",
                    f"at least {req.min_patients} for {req.analysis}")
        )  # fmt: skip
    return problems


def format_problems(problems, limit: int = 25) -> str:
    """One line per problem (the first ``limit``), then how many more."""
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
