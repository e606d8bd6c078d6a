"""Loading a cohort: validate it (remembering a clean full validation), then open it.

Kept apart from :mod:`hypo.cohort.io` (the readers) and :mod:`hypo.cohort.validation` (the
checks, which use the readers) so that neither imports the other in a cycle.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hypo._util import stable_hash, write_text_atomic
from hypo.cohort import layout
from hypo.cohort.io import (
    PARTICIPANT_ID_PATTERN,
    Cohort,
    CohortError,
    WindowConfig,
    column_map,
    content_hash,
    read_participants,
)
from hypo.cohort.validation import validate
from hypo.paths import cache_dir


def load(
    path: str | os.PathLike,
    *,
    skip_invalid: bool = False,
    min_lesion_area_mm2: float = 10.0,
    window: WindowConfig | None = None,
    check_voxels: bool = True,
    columns: Mapping[str, str] | None = None,
) -> Cohort:
    """Open a cohort folder in the hypo layout after validating it.

    Parameters
    ----------
    path : path-like
        The cohort folder (see :mod:`hypo.cohort.layout`).
    skip_invalid : bool
        If False (default), any problem raises :class:`CohortError` listing all of them.
        If True, patients with problems are left out, each reported as a warning and in
        ``Cohort.skipped``; problems of the whole cohort (e.g. a missing column) still raise.
    min_lesion_area_mm2 : float
        Smallest lesion cross-section (mm^2) for a slice to count as ``lesion_visible``
        when labels are derived from masks (default 10 mm^2).
    window : WindowConfig, optional
        Intensity window applied by :meth:`Cohort.dwi` (default ``WindowConfig()``).
    check_voxels : bool
        Read every voxel during validation (truncated files, NaN/inf, empty volumes).
        False checks headers only, which is much faster but misses those problems.
        A clean full validation is remembered under ``cache_dir()/cohort_validation``
        keyed by :func:`content_hash`, so loading the same unchanged cohort again skips it.
    columns : mapping, optional
        hypo column name -> the cohort's own (``{"mrs_3months": "mRS_90d"}``), on top of
        the cohort's ``hypo_columns.json`` sidecar.

    Returns
    -------
    Cohort
    """
    root = Path(path)
    if min_lesion_area_mm2 < 0:
        raise ValueError(f"min_lesion_area_mm2 = {min_lesion_area_mm2}; expected >= 0 mm^2")
    # A column map changes what the table means: it joins the key of the remembered
    # validation and the cohort id (unchanged for a cohort without one).
    mapping = column_map(root, columns)
    digest = content_hash(root)
    if mapping:
        digest = stable_hash([digest, sorted(mapping.items())], 16)
    if check_voxels and _validated_before(digest):
        problems = []
    else:
        problems = validate(root, check_voxels=check_voxels, columns=columns)
        if check_voxels and not problems:
            _remember_validated(digest)
    cohort_level = [p for p in problems if p.participant_id is None]
    if problems and (not skip_invalid or cohort_level):
        what = "cohort-level problems" if skip_invalid else "problems"
        raise CohortError(
            f"{root}: {len(cohort_level if skip_invalid else problems)} {what}"
            + (
                ""
                if skip_invalid
                else "; pass skip_invalid=True (--skip-invalid on the command line) to leave bad "
                "patients out"
            ),
            cohort_level if skip_invalid else problems,
        )
    participants = read_participants(root, columns)
    bad = {p.participant_id for p in problems}
    for p in problems:
        warnings.warn(f"skipping {p}", stacklevel=2)
    well_formed = [
        isinstance(i, str) and bool(PARTICIPANT_ID_PATTERN.match(i)) for i in participants.index
    ]
    participants = participants[~participants.index.isin(bad) & np.asarray(well_formed, bool)]
    if participants.empty:
        raise CohortError(f"{root}: every patient has a problem; nothing left to load", problems)
    return Cohort(
        root=root,
        cohort_id=f"{root.resolve().name}-{digest[:8]}",
        participants=participants,
        skipped=list(problems),
        is_synthetic=(root / layout.GENERATOR).is_file(),
        min_lesion_area_mm2=float(min_lesion_area_mm2),
        window=window or WindowConfig(),
    )


#: Bump when validation rules change, so cached verdicts of older rules are not trusted.
VALIDATION_RULES_VERSION = 1


def _validation_stamp(digest: str) -> Path:
    return cache_dir() / "cohort_validation" / f"v{VALIDATION_RULES_VERSION}-{digest}.ok"


def _validated_before(digest: str) -> bool:
    """A full validation of exactly these inputs (same content hash) found no problem."""
    return _validation_stamp(digest).is_file()


def _remember_validated(digest: str) -> None:
    # Only clean verdicts are cached: problem reports are always computed afresh.

    try:
        write_text_atomic(_validation_stamp(digest), "validated, no problems\n")
    except OSError:
        pass  # a read-only cache only costs the next load() another validation
