"""Settings and fixed names of the main study (CAM features vs the 3-month mRS).

One :class:`StudyConfig` describes a run of :func:`hypo.study.run_study`; its defaults are
the embedded default analysis (the synthetic analysis cohort, the shipped models, the
registered hypotheses of the current registry version, ``analyses/registry/<version>/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from hypo.cohort.requirements import Requirements
from hypo.paths import (  # noqa: F401 -- re-exported: the study's registry names
    REGISTRY_ROOT,
    REGISTRY_VERSION,
    REPO_ROOT,
    registry_dir,
    registry_version_of,
)

HYPOTHESES_DIR = registry_dir() / "hypotheses"
LOCK_FILE = registry_dir() / "lock.json"
STROKE_MODEL = REPO_ROOT / "models" / "stroke-gap-128"
MRS_MODEL = REPO_ROOT / "models" / "mrs-gap-128"
#: The patient-level outcome model (issue 16): a third map source (bag CAMs).
OUTCOME_MODEL = REPO_ROOT / "models" / "outcome-mil-128"
#: The one class of the outcome model's bag CAMs: its ordinal linear predictor (a
#: registered hypothesis on ``model = "outcome"`` names it as its ``class``).
OUTCOME_CAM_CLASS = "eta"
OUTCOME = "mrs_3months"
#: Primary covariates of every registered hypothesis (the registry files name them).
LOG_VOLUME = "log_lesion_volume_ml"
SIDE_RIGHT = "lesion_side_right"
#: Suffix of the patient feature table per registered aggregation.
AGGREGATION_SUFFIX = {
    "lesion_slices_map_mass_weighted_mean": "_lesion",
    "all_slices_map_mass_weighted_mean": "_all",
}
MODEL_KEYS = ("stroke", "mrs", "outcome")
CONTROL_SOURCES = ("control_uniform", "control_intensity", "control_random_model")
QUICK_PATIENTS = 30
#: Classes shown in the CAM panels, per model (both classes of each, as the paper's
#: Figures 11 and 14 do).
PANEL_CLASSES = {"stroke": ("no stroke", "stroke"), "mrs": ("mRS 0-2", "mRS 3-6")}


#: What the main study needs of a researcher's cohort (checked by ``--check`` and before
#: every run on ``--cohort``; the test suite checks that it covers the registry's
#: participants.tsv covariates).
REQUIREMENTS = Requirements(
    analysis="asymmetry_vs_mrs",
    columns={
        OUTCOME: "the outcome of every registered test",
        "age": "a primary covariate of every registered test",
        "mrs_before": "a primary covariate of every registered test",
        "nihss_baseline": "a primary covariate of every registered test (registry v2)",
    },
    lesion_masks="lesion volume and side are primary covariates, and the maps are measured "
    "against the lesion",
    outcome=OUTCOME,
    min_patients=3,
)


class StudyError(RuntimeError):
    """The study cannot run as asked (a missing model, an unusable cohort)."""


@dataclass
class StudyConfig:
    """Settings of one run (defaults: the embedded default analysis).

    Attributes
    ----------
    cohort : path or None
        Cohort folder; None = the default synthetic analysis cohort (generated if missing),
        or with ``quick`` a small synthetic cohort of ``quick_patients`` patients.
    stroke_model, mrs_model : path
        Model folders (``model.keras`` + ``card.json``).
    outcome_model : path or None
        The patient-level outcome model (``head.json`` + ``card.json``, its encoder beside
        it); its bag CAMs are a third map source with columns ``outcome__<feature>__cam``
        (and the image-made controls). None switches it off.
    outcome_layer : str or None
        Layer of the outcome model's bag CAMs; None = ``layer``, else its card's
        ``cam_layer``.
    layer : str or None
        CAM layer for both models; None = each card's ``cam_layer`` (the registered one).
    methods : tuple of str
        CAM methods computed; the registered primary method must be among them.
    out : path
        Report folder.
    quick : bool
        A small run (tests, a first look): small cohort, few bootstrap resamples, no
        randomised-model control, few CAM panels.
    n_boot : int
        Patient bootstrap resamples for the primary ORs (paper-style 200).
    seed : int
        Seed of the bootstrap, cross-validation folds, MICE and the randomised control.
    random_control : bool
        Grad-CAM of the randomised-weights model as a third negative control.
    cv_splits : int
        Folds of the cross-validated C-index.
    mice_m : int
        Imputations of the MICE sensitivity analysis (only when covariates are missing).
    n_panels : int
        Example slices in the CAM panels.
    hypotheses, lock : path
        Registry folder and its lock file.
    progress : bool
        Progress bars and stage lines on stderr.
    columns : dict
        hypo column name -> the cohort's own (e.g. ``{"mrs_3months": "mRS_90d"}``), on top
        of the cohort's ``hypo_columns.json``.
    max_qc_fail_fraction : float or None
        The features stage stops when a larger share of patients fail the anatomy QC
        (None: :class:`hypo.features.anatomy_qc.AnatomyQCConfig`'s default, 0.2); patients
        that fail are excluded in the patient flow with the QC's reason.
    """

    cohort: Path | None = None
    stroke_model: Path = STROKE_MODEL
    mrs_model: Path = MRS_MODEL
    outcome_model: Path | None = OUTCOME_MODEL
    outcome_layer: str | None = None
    layer: str | None = None
    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    out: Path = REPO_ROOT / "reports" / "asymmetry_vs_mrs"
    quick: bool = False
    quick_patients: int = QUICK_PATIENTS
    n_boot: int = 200
    seed: int = 0
    random_control: bool = True
    cv_splits: int = 5
    mice_m: int = 20
    n_panels: int = 3
    hypotheses: Path = HYPOTHESES_DIR
    lock: Path = LOCK_FILE
    progress: bool = True
    columns: dict = field(default_factory=dict)
    max_qc_fail_fraction: float | None = None
    extra: dict = field(default_factory=dict)

    def effective(self) -> StudyConfig:
        """The configuration actually run (``quick`` shrinks the expensive parts)."""
        if not self.quick:
            return self
        return replace(
            self,
            n_boot=min(self.n_boot, 20),
            random_control=False,
            mice_m=min(self.mice_m, 5),
            n_panels=min(self.n_panels, 2),
            cv_splits=min(self.cv_splits, 3),
        )

    def model_dirs(self) -> dict[str, Path]:
        """``{"stroke": folder, "mrs": folder, "outcome": folder}`` (no ``"outcome"`` when
        ``outcome_model`` is None)."""
        out = {"stroke": Path(self.stroke_model), "mrs": Path(self.mrs_model)}
        if self.outcome_model is not None:
            out["outcome"] = Path(self.outcome_model)
        return out
