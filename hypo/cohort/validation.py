"""Check a cohort folder against the hypo layout and report every problem at once.

:func:`validate` never raises for a bad cohort: it returns a list of
:class:`~hypo.cohort.io.Problem`, one per thing wrong, each naming the patient, the file
or column, what is wrong and what was expected. :func:`hypo.cohort.load` turns that list
into a :class:`~hypo.cohort.io.CohortError` (or skips the patients concerned).

What is checked
---------------
participants.tsv
    present and readable; required columns (:data:`REQUIRED_COLUMNS`); ids of the form
    ``sub-<letters and digits>``, each once; ``group`` one of ``stroke`` / ``TIA``
    (case-insensitive); mRS columns integers 0-6; NIHSS columns integers 0-42; age 0-120
    years (missing values allowed everywhere except ids and group).

    ``group`` is required because every hypo analysis needs it: it is the target of the
    stroke-vs-TIA model and the stratification key of the patient-level train/test
    split. Importers of sources without a TIA arm (ISLES) write ``group = stroke``.
Images
    every patient in the table has a DWI file and every DWI folder has a row; each file
    opens, is 3D (a 4D file with one volume is accepted and squeezed), has a finite,
    invertible affine and positive voxel sizes; with ``check_voxels`` every voxel is read
    (catching truncated ``.nii.gz`` files), must be finite and must not all be equal.
Masks
    a lesion or truth mask must open and sit on exactly its image's grid (same shape,
    affines equal within 1e-3 mm); masks of patients not in the table are reported. With
    ``check_voxels`` lesion masks are read in full (truncation, NaN/inf); truth masks of
    synthetic cohorts get the header checks only.
slice_labels.tsv
    columns ``participant_id, slice, lesion_visible``; known patients; integer slices
    inside the volume; labels 0/1; no slice twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from hypo.cohort import layout
from hypo.cohort.io import (
    AFFINE_ATOL_MM,
    GROUPS,
    PARTICIPANT_ID_PATTERN,
    CohortError,
    Problem,
    apply_column_map,
    column_map,
    read_image,
    read_table,
    to_canonical_shape,
)

#: Columns participants.tsv must have (see the module docstring for why ``group``).
REQUIRED_COLUMNS = layout.REQUIRED_COLUMNS

#: Integer-valued clinical scores and their allowed range (inclusive).
SCORE_RANGES = {
    "mrs_before": (0, 6),
    "mrs_3months": (0, 6),
    "nihss_baseline": (0, 42),
    "nihss_24h": (0, 42),
    "nihss_3months": (0, 42),
}
#: Real-valued clinical columns and their plausible range (inclusive).
VALUE_RANGES = {"age": (0.0, 120.0)}

SLICE_LABEL_COLUMNS = ("participant_id", "slice", "lesion_visible")


def validate(
    path: str | os.PathLike,
    *,
    check_voxels: bool = True,
    workers: int | None = None,
    columns: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem of the cohort at ``path``; an empty list means it loads cleanly.

    Parameters
    ----------
    path : path-like
        Cohort folder in the hypo layout.
    check_voxels : bool
        Read every voxel of every image (finds truncated files, NaN/inf and empty
        volumes). False reads headers only.
    workers : int, optional
        Threads used to read images (decompression releases the GIL); default: up to 4.
    columns : mapping, optional
        hypo column name -> the cohort's own, on top of ``hypo_columns.json``
        (:func:`hypo.cohort.io.column_map`).

    Returns
    -------
    list of Problem
        Problems of the whole cohort (``participant_id`` None) first, then per patient.
    """
    root = Path(path)
    if not root.is_dir():
        return [Problem(None, str(root), "is not a folder", "a cohort folder in the hypo layout")]
    table_path = root / layout.PARTICIPANTS
    if not table_path.is_file():
        return [
            Problem(
                None,
                layout.PARTICIPANTS,
                "is missing",
                "a tab-separated patient table with a participant_id column",
            )
        ]
    try:
        table = read_table(table_path)
        mapping = column_map(root, columns)
    except CohortError as exc:
        return [Problem(None, layout.COLUMN_MAP, str(exc), "a JSON object of column names")]
    except Exception as exc:  # noqa: BLE001 - any parse failure is a problem to report
        return [Problem(None, layout.PARTICIPANTS, f"cannot be read ({exc})", "a valid TSV")]

    problems: list[Problem] = apply_column_map(table, mapping)
    problems += _check_columns(table)
    if "participant_id" not in table.columns:
        return problems
    if table.empty:
        problems.append(Problem(None, layout.PARTICIPANTS, "has no rows", "at least one patient"))
    ids_problems, valid_ids = _check_ids(table)
    problems += ids_problems
    problems += _check_clinical(table)

    dwi_dirs = {p.name for p in root.glob("sub-*") if p.is_dir()}
    listed = set(table["participant_id"].dropna().astype(str))
    for pid in sorted(dwi_dirs - listed):
        problems.append(
            Problem(
                pid,
                _rel(layout.dwi_path(root, pid), root),
                "has images but no row in participants.tsv",
                "every patient folder listed in participants.tsv",
            )
        )
    mask_root = root / "derivatives" / "lesion_masks"
    for pid in sorted({p.name for p in mask_root.glob("sub-*")} - listed):
        problems.append(
            Problem(
                pid,
                _rel(mask_root / pid, root),
                "has a lesion mask but no row in participants.tsv",
                "masks only for patients listed in participants.tsv",
            )
        )

    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = list(pool.map(lambda pid: _check_patient(root, pid, check_voxels), valid_ids))
    n_slices = {}
    for pid, (patient_problems, n) in zip(valid_ids, results):
        problems += patient_problems
        if n is not None:
            n_slices[pid] = n

    labels_path = root / layout.SLICE_LABELS
    if labels_path.is_file():
        problems += _check_slice_labels(labels_path, listed, n_slices)

    return sorted(problems, key=lambda p: (p.participant_id is not None, p.participant_id or ""))


# --------------------------------------------------------------------------- table


def _check_columns(table: pd.DataFrame) -> list[Problem]:
    return [
        Problem(
            None,
            f"{layout.PARTICIPANTS}:{col}",
            "column is missing",
            f"columns {', '.join(REQUIRED_COLUMNS)} (found {', '.join(table.columns)})",
        )
        for col in REQUIRED_COLUMNS
        if col not in table.columns
    ]


def _check_ids(table: pd.DataFrame) -> tuple[list[Problem], list[str]]:
    """Malformed and duplicate ids; returns the ids that are well formed and unique."""
    problems = []
    where = f"{layout.PARTICIPANTS}:participant_id"
    ids = table["participant_id"]
    for row, pid in enumerate(ids, start=2):  # row 1 is the header line
        if not isinstance(pid, str) or not PARTICIPANT_ID_PATTERN.match(pid):
            problems.append(
                Problem(
                    pid if isinstance(pid, str) else f"<row {row}>",
                    where,
                    f"malformed id {pid!r} on line {row}",
                    "'sub-' followed by letters and digits only, e.g. sub-0042",
                )
            )
    counts = ids.dropna().value_counts()
    for pid, k in counts[counts > 1].items():
        problems.append(Problem(str(pid), where, f"id appears {k} times", "each patient once"))
    valid = [
        pid
        for pid in ids
        if isinstance(pid, str) and PARTICIPANT_ID_PATTERN.match(pid) and counts[pid] == 1
    ]
    return problems, valid


def _check_clinical(table: pd.DataFrame) -> list[Problem]:
    problems = []
    ids = table["participant_id"].astype(str)
    if "group" in table.columns:
        allowed = {g.lower() for g in GROUPS}
        for pid, value in zip(ids, table["group"]):
            if not isinstance(value, str) or value.lower() not in allowed:
                problems.append(
                    Problem(
                        pid,
                        f"{layout.PARTICIPANTS}:group",
                        f"group is {value!r}",
                        f"one of {', '.join(GROUPS)}",
                    )
                )
    for col, (lo, hi) in {**SCORE_RANGES, **VALUE_RANGES}.items():
        if col not in table.columns:
            continue
        integer = col in SCORE_RANGES
        numbers = pd.to_numeric(table[col], errors="coerce")
        for pid, raw, x in zip(ids, table[col], numbers):
            if pd.isna(raw):
                continue
            bad = pd.isna(x) or not lo <= x <= hi or (integer and float(x) != round(float(x)))
            if bad:
                kind = "an integer" if integer else "a number"
                problems.append(
                    Problem(
                        pid,
                        f"{layout.PARTICIPANTS}:{col}",
                        f"{col} is {raw!r}",
                        f"{kind} from {lo} to {hi} or n/a",
                    )
                )
    return problems


# --------------------------------------------------------------------------- images


def _check_patient(root: Path, pid: str, check_voxels: bool) -> tuple[list[Problem], int | None]:
    """Problems of one patient's files, and the number of axial slices of the DWI."""
    dwi = layout.dwi_path(root, pid)
    if not dwi.is_file():
        return [
            Problem(pid, _rel(dwi, root), "DWI file is missing", "a 3D NIfTI at this path")
        ], None
    problems, img = _check_image(root, pid, dwi, check_voxels, kind="DWI")
    if img is None:
        return problems, None
    n_slices = to_canonical_shape(img)[2]
    # Truth masks get header checks only: five per synthetic patient would more than double
    # the time of a full check, and the generator that wrote them tests its own output.
    masks = [(layout.lesion_mask_path(root, pid), "lesion mask", check_voxels)]
    masks += [
        (layout.truth_mask_path(root, pid, lab), f"{lab} truth mask", False)
        for lab in layout.TRUTH_LABELS
    ]
    for path, kind, read_voxels in masks:
        if not path.is_file():
            continue
        mask_problems, mask = _check_image(root, pid, path, read_voxels, kind=kind, mask=True)
        problems += mask_problems
        if mask is None:
            continue
        if mask.shape != img.shape:
            problems.append(
                Problem(
                    pid,
                    _rel(path, root),
                    f"{kind} has shape {mask.shape}",
                    f"the shape of its DWI {img.shape}",
                )
            )
        elif not np.allclose(mask.affine, img.affine, atol=AFFINE_ATOL_MM):
            worst = float(np.abs(mask.affine - img.affine).max())
            problems.append(
                Problem(
                    pid,
                    _rel(path, root),
                    f"{kind} affine differs from its DWI by up to {worst:.4g} mm",
                    f"the DWI affine within {AFFINE_ATOL_MM} mm",
                )
            )
    return problems, n_slices


def _check_image(root: Path, pid: str, path: Path, check_voxels: bool, *, kind: str, mask=False):
    """Open one NIfTI; returns (problems, image or None when it cannot be used)."""
    where = _rel(path, root)
    try:
        img = read_image(path)
    except ValueError as exc:
        if "expected a 3D volume" in str(exc):
            shape = getattr(_safe_load(path), "shape", "?")
            return [Problem(pid, where, f"{kind} has shape {shape}", "a 3D volume")], None
        return [Problem(pid, where, f"{kind} is unreadable ({exc})", "a valid NIfTI file")], None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for broken files
        return [Problem(pid, where, f"{kind} is unreadable ({exc})", "a valid NIfTI file")], None
    problems = []
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        problems.append(
            Problem(pid, where, f"{kind} affine is singular or not finite", "an invertible affine")
        )
        return problems, None
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    if not np.all(zooms > 0):
        problems.append(
            Problem(pid, where, f"{kind} voxel sizes are {zooms.tolist()} mm", "positive sizes")
        )
    if not check_voxels:
        return problems, img
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, OSError, ...
        problems.append(
            Problem(
                pid,
                where,
                f"{kind} voxels cannot be read, the file is truncated or corrupt "
                f"({type(exc).__name__}: {exc})",
                "a complete NIfTI file",
            )
        )
        return problems, None
    if np.issubdtype(data.dtype, np.floating):
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if n_bad:
            problems.append(
                Problem(pid, where, f"{kind} has {n_bad} NaN/inf voxels", "finite values only")
            )
            return problems, img
    if not mask and data.size and data.min() == data.max():
        problems.append(
            Problem(
                pid,
                where,
                f"{kind} is empty: every voxel equals {data.flat[0]!r}",
                "an image with contrast",
            )
        )
    return problems, img


def _safe_load(path: Path):

    try:
        return nib.load(path)
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- slice labels


def _check_slice_labels(path: Path, listed: set[str], n_slices: dict[str, int]) -> list[Problem]:
    where = layout.SLICE_LABELS
    try:
        labels = read_table(path)
    except Exception as exc:  # noqa: BLE001
        return [Problem(None, where, f"cannot be read ({exc})", "a valid TSV")]
    missing = [c for c in SLICE_LABEL_COLUMNS if c not in labels.columns]
    if missing:
        return [
            Problem(
                None,
                f"{where}:{col}",
                "column is missing",
                f"columns {', '.join(SLICE_LABEL_COLUMNS)}",
            )
            for col in missing
        ]
    problems = []
    slices = pd.to_numeric(labels["slice"], errors="coerce")
    visible = pd.to_numeric(labels["lesion_visible"], errors="coerce")
    reported_unknown = set()
    for line, (pid, raw_slice, k, raw_vis, v) in enumerate(
        zip(labels["participant_id"], labels["slice"], slices, labels["lesion_visible"], visible),
        start=2,
    ):
        pid = str(pid)
        if pid not in listed:
            if pid not in reported_unknown:
                reported_unknown.add(pid)
                problems.append(
                    Problem(
                        pid,
                        where,
                        "has slice labels but no row in participants.tsv",
                        "labels only for listed patients",
                    )
                )
            continue
        n = n_slices.get(pid)
        if pd.isna(k) or k != round(k) or (n is not None and not 0 <= k < n):
            rng = f"0 to {n - 1}" if n is not None else "0 or more"
            problems.append(
                Problem(
                    pid,
                    f"{where}:slice",
                    f"slice {raw_slice!r} on line {line}",
                    f"an integer {rng}",
                )
            )
        if pd.isna(v) or v not in (0, 1):
            problems.append(
                Problem(
                    pid,
                    f"{where}:lesion_visible",
                    f"lesion_visible {raw_vis!r} on line {line}",
                    "0 or 1",
                )
            )
    dup = labels[labels.duplicated(["participant_id", "slice"], keep="first")]
    for pid, k in zip(dup["participant_id"], dup["slice"]):
        problems.append(
            Problem(str(pid), f"{where}:slice", f"slice {k} is labelled twice", "one row per slice")
        )
    return problems


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def summary_line(path: str | os.PathLike, problems: list[Problem]) -> str:
    """One line stating whether a cohort validated and how many patients it has."""
    root = Path(path)
    try:
        n = len(read_table(root / layout.PARTICIPANTS))
    except Exception:  # noqa: BLE001
        n = 0
    if not problems:
        return f"OK: {root} - {n} patients, no problems"
    pids = {p.participant_id for p in problems if p.participant_id is not None}
    return (
        f"{len(problems)} problem(s) in {root}: {len(pids)} participant id(s) concerned; "
        f"{n} rows in participants.tsv"
    )
