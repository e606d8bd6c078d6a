"""The studies as library code: what a notebook imports.

``hypo.study`` sits above every other layer (cohort < preprocess < nets < cam < features <
stats < report < study); ``analyses/*.py`` are thin command lines over it.

    from hypo.study import StudyConfig, run_study

    result = run_study(StudyConfig(quick=True))
    print(result.summary())
    result.write("my-report")
"""

from hypo._util import lazy_exports

# Names load on first use: a command's preflight (``hypo.study.config``) must answer
# before TensorFlow is imported by the study's feature stage.
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "config": ("StudyConfig", "StudyError"),
        "run": ("StudyResult", "run_study"),
        "table": ("AnalysisTable", "build_table", "population_flow"),
    },
)
