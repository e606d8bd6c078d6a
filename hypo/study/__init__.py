"""The studies as library code: what a notebook imports.

``hypo.study`` sits above every other layer (cohort < preprocess < nets < cam < features <
stats < report < study); ``analyses/*.py`` are thin command lines over it.

    from hypo.study import StudyConfig, run_study

    result = run_study(StudyConfig(quick=True))
    print(result.summary())
    result.write("my-report")
"""

from .config import StudyConfig, StudyError
from .run import StudyResult, run_study
from .table import AnalysisTable, build_table, population_flow

__all__ = [
    "AnalysisTable",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "build_table",
    "population_flow",
    "run_study",
]
