"""Cohorts: read, validate and import DWI cohorts in the hypo layout.

``import hypo.cohort`` stays light (NumPy, pandas, nibabel): the importers (h5py) load on
first use, and the synthetic generator is only imported by its CLI subcommand.

Public API
----------
load(path, *, skip_invalid=False, min_lesion_area_mm2=10.0) -> Cohort
validate(path) -> list[Problem]
import_paper_hdf5(h5_path, clinical_csv, out_dir, voxel_mm=(1.0, 1.0, 6.0)) -> Path
import_isles2022(root, out_dir) -> Path
Cohort, Volume, Problem, CohortError, WindowConfig
"""

from hypo.cohort.io import Cohort, CohortError, Problem, Volume, WindowConfig
from hypo.cohort.loading import load
from hypo.cohort.validation import validate

__all__ = [
    "Cohort",
    "CohortError",
    "Problem",
    "Volume",
    "WindowConfig",
    "import_isles2022",
    "import_paper_hdf5",
    "load",
    "validate",
]


def __getattr__(name):
    if name in ("import_paper_hdf5", "import_isles2022"):
        from hypo.cohort import importers

        return getattr(importers, name)
    raise AttributeError(f"module 'hypo.cohort' has no attribute {name!r}")
