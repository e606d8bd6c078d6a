"""The on-disk layout of a hypo cohort (BIDS-flavoured).

::

    DIR/
      participants.tsv                    participant_id (sub-...), clinical columns
      generator.json                      synthetic cohorts only: parameters, outcome model, hash
      slice_labels.tsv                    optional: participant_id, slice, lesion_visible (reader)
      sub-<id>/dwi/sub-<id>_dwi.nii.gz
      derivatives/lesion_masks/sub-<id>/dwi/sub-<id>_label-lesion_mask.nii.gz   (optional)
      derivatives/truth/sub-<id>_label-<lesion|brain|ventricles|cortex|hemisphere>_mask.nii.gz
      derivatives/truth/truth.tsv         synthetic ground truth per patient

``slice`` always counts axial slices in the canonical (RAS+) voxel order, inferior to
superior, starting at 0, whatever the storage order of the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PARTICIPANTS = "participants.tsv"
GENERATOR = "generator.json"
SLICE_LABELS = "slice_labels.tsv"
#: Optional sidecar mapping hypo's column names to a researcher's own, e.g.
#: ``{"mrs_3months": "mRS_90d"}`` (see :func:`hypo.cohort.io.column_map`).
COLUMN_MAP = "hypo_columns.json"
TRUTH_DIR = Path("derivatives") / "truth"
TRUTH_TABLE = TRUTH_DIR / "truth.tsv"
TRUTH_LABELS = ("lesion", "brain", "ventricles", "cortex", "hemisphere")

#: Clinical columns of the paper's table, in the order participants.tsv writes them.
CLINICAL_COLUMNS = (
    "age",
    "sex",
    "group",
    "mrs_before",
    "nihss_baseline",
    "ivt",
    "iat",
    "onset_to_imaging_h",
    "mrs_3months",
    "nihss_24h",
    "nihss_3months",
    "hypertension",
    "diabetes",
    "atrial_fibrillation",
    "smoking",
    "dyslipidemia",
)
REQUIRED_COLUMNS = ("participant_id", "group")


def dwi_path(root: Path, pid: str) -> Path:
    return Path(root) / pid / "dwi" / f"{pid}_dwi.nii.gz"


def lesion_mask_path(root: Path, pid: str) -> Path:
    return (
        Path(root)
        / "derivatives"
        / "lesion_masks"
        / pid
        / "dwi"
        / f"{pid}_label-lesion_mask.nii.gz"
    )


def truth_mask_path(root: Path, pid: str, label: str) -> Path:
    if label not in TRUTH_LABELS:
        raise ValueError(f"unknown truth label {label!r}; expected one of {TRUTH_LABELS}")
    return Path(root) / TRUTH_DIR / f"{pid}_label-{label}_mask.nii.gz"


#: Lesion side on one degree of freedom, as every model of hypo codes it (the generator's
#: outcome and NIHSS models, the registered covariate ``lesion_side_right``, the oracles):
#: the patient's right 1, left 0, a bilateral lesion half.
SIDE_CODE = {"left": 0.0, "right": 1.0, "bilateral": 0.5}


def side_right(sides, unknown: float = np.nan) -> np.ndarray:
    """:data:`SIDE_CODE` of each side label (``unknown`` for anything else: no lesion,
    missing, an unexpected label)."""
    codes = pd.Series(np.asarray(sides, dtype=object)).astype(str).map(SIDE_CODE)
    return codes.fillna(unknown).to_numpy(float)


#: Functional independence at 3 months: mRS 0-2 (good); 3-6 is dependence or death.
MRS_GOOD_MAX = 2


def mrs_poor(mrs, column: str = "mrs_3months") -> np.ndarray:
    """The mRS dichotomy of every model and table of hypo: 1.0 for mRS 3-6, 0.0 for mRS
    0-2, NaN where missing; an error naming ``column`` for a value that is not an integer
    0-6 (such as 9, a common "unknown" code)."""
    m = pd.to_numeric(pd.Series(np.asarray(mrs, dtype=object)), errors="coerce").to_numpy(float)
    bad = ~np.isnan(m) & ((m < 0) | (m > 6) | (m != np.round(m)))
    if bad.any():
        raise ValueError(
            f"{column} has values outside 0-6 (integers expected; missing as empty or n/a): "
            f"{np.unique(m[bad]).tolist()}"
        )
    return np.where(np.isnan(m), np.nan, (m > MRS_GOOD_MAX).astype(float))
