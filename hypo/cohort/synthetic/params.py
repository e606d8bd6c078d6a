"""Every knob of the synthetic cohort, with defaults from the paper and the stroke literature."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("default", "null", "conditional_null", "nonpo")


@dataclass(frozen=True)
class SynthParams:
    """Parameters of the synthetic stroke DWI cohort.

    Units are in the names (``_mm``, ``_ml``, ``_deg``, ``_h``); shares are fractions of
    patients. Load from JSON with :meth:`from_json` (unknown keys are an error).
    """

    # --- acquisition grid (paper: 21-46 axial slices; in-plane 192 x 192) -----------------
    matrix_choices: tuple = (128, 144, 160, 176, 192)
    fov_mm_range: tuple = (220.0, 240.0)
    slice_thickness_mm_choices: tuple = (3.0, 4.0, 5.0, 6.0)
    slice_thickness_weights: tuple = (0.1, 0.15, 0.45, 0.3)
    n_slices_range: tuple = (21, 46)
    coverage_mm_range: tuple = (135.0, 165.0)
    partial_volume_subsamples: int = 3
    #: Storage voxel orders as scanners export them; the loader must reorient.
    storage_orientations: tuple = ("RAS", "LAS", "LPS")
    storage_orientation_weights: tuple = (0.3, 0.4, 0.3)
    anatomy_resolution_mm: float = 2.0

    # --- head pose and inter-subject anatomy --------------------------------------------
    head_scale_mean: float = 0.93  # the MNI152 brain is larger than the average adult's
    head_scale_sd: float = 0.04
    rotation_sd_deg: tuple = (3.0, 3.0, 4.0)  # about x (pitch), y (roll), z (yaw)
    translation_sd_mm: tuple = (3.0, 4.0, 5.0)
    deformation_sd_mm: float = 2.5
    deformation_spacing_mm: float = 20.0
    #: Ventricle expansion factor per decade of age above 50 (ventricles enlarge with age).
    ventricle_expansion_per_decade: float = 0.05
    ventricle_expansion_sd: float = 0.04
    #: SD of the natural left-right difference in ventricle expansion.
    ventricle_asymmetry_sd: float = 0.04

    # --- DWI b1000 contrast (relative to white matter) ----------------------------------
    gm_wm_ratio_range: tuple = (1.18, 1.38)
    csf_wm_ratio_range: tuple = (0.12, 0.25)
    lesion_ratio_range: tuple = (1.6, 2.8)
    lesion_heterogeneity: float = 0.12
    scalp_wm_ratio: float = 0.08
    wm_signal_range: tuple = (300.0, 800.0)
    snr_wm_range: tuple = (12.0, 28.0)
    bias_field_sd: float = 0.12
    susceptibility_share: float = 0.10

    # --- cohort composition (paper: 511 patients, 355 stroke / 156 TIA) -----------------
    stroke_share: float = 355 / 511
    female_share: float = 309 / 497
    age_beta_a: float = 4.0  # age = age_min + age_span * Beta(a, b): left-skewed
    age_beta_b: float = 2.2
    age_min: float = 21.0
    age_span: float = 76.0
    mrs_before_probs: tuple = (0.74, 0.11, 0.07, 0.05, 0.025, 0.005)
    tia_mislabelled_share: float = 0.08
    tia_mislabelled_volume_ml: tuple = (0.15, 1.5)

    # --- infarcts ----------------------------------------------------------------------
    territory_probs: dict = field(
        default_factory=lambda: {
            "MCA": 0.56,
            "ACA": 0.05,
            "PCA": 0.12,
            "deep": 0.17,
            "posterior_fossa": 0.10,
        }
    )
    multi_territory_share: float = 0.05
    bilateral_share: float = 0.08
    lesion_irregularity: float = 0.9
    lesion_field_sigma_mm: float = 5.0
    lesion_satellites_mean: float = 0.8
    reader_min_area_mm2: float = 10.0

    # --- swelling and mass effect ------------------------------------------------------
    #: swelling_latent = a * ln(volume) + sd * swelling, swelling ~ N(0, 1) per patient.
    swelling_log_volume_coef: float = 0.5
    swelling_sd: float = 1.0
    #: Displacement at the infarct border (mm) for a 50 mL infarct of average swelling.
    mass_effect_mm_at_50ml: float = 2.5
    mass_effect_volume_exponent: float = 0.7
    mass_effect_swelling_coef: float = 0.45
    mass_effect_decay_mm: float = 30.0
    mass_effect_scale: float = 1.0  # 0 switches mass effect off (tests)
    #: Share of CSF next to the infarct replaced by swollen tissue per mm of mass effect.
    effacement_per_mm: float = 0.12
    effacement_sigma_mm: float = 10.0
    #: Share of the ipsilateral ventricle's CSF squeezed out per mm of mass effect, decaying
    #: exponentially with distance from the infarct surface.
    ventricle_effacement_per_mm: float = 0.1
    ventricle_effacement_decay_mm: float = 20.0

    # --- clinical course -------------------------------------------------------------
    nihss_intercept: float = 0.55
    nihss_log_volume_coef: float = 0.45
    #: Right-hemisphere strokes score lower at equal volume (Woo et al. 1999, Stroke 30:2355).
    nihss_right_coef: float = -0.35
    nihss_territory_coef: dict = field(
        default_factory=lambda: {
            "MCA": 0.1,
            "ACA": 0.0,
            "PCA": -0.2,
            "deep": 0.35,
            "posterior_fossa": 0.2,
        }
    )
    nihss_dispersion: float = 3.0
    tia_nihss_mean: float = 0.8
    ivt_window_h: float = 4.5
    mrs_missing_share: float = 29 / 511
    nihss_followup_missing_share: float = 0.08

    # --- outcome: cumulative logit on mRS 0-6, beta > 0 = worse outcome ------------------
    beta_age_per_decade: float = 0.35
    beta_mrs_before: float = 0.55
    beta_female: float = 0.1
    beta_log_volume: float = 0.25  # per ln(mL + 1)
    beta_right_side: float = 0.15
    beta_territory: dict = field(
        default_factory=lambda: {
            "MCA": 0.0,
            "ACA": 0.1,
            "PCA": -0.1,
            "deep": -0.2,
            "posterior_fossa": 0.3,
        }
    )
    beta_nihss: float = 0.13
    beta_ivt: float = -0.3
    beta_iat: float = -0.5
    or_swelling_per_sd: float = 1.5
    #: "nonpo" mode: swelling log-OR at each cut mRS<=j vs >j (j = 0..5): it only matters
    #: for severe disability and death, so proportional odds fails.
    nonpo_swelling_log_or: tuple = (0.0, 0.05, 0.2, 0.55, 0.9, 1.1)
    #: "null" mode: constant log-odds standing in for the dropped image-dependent terms
    #: (NIHSS, volume, treatment), so the marginal mRS distribution stays realistic.
    null_mode_offset: float = 1.1
    #: Cut-points theta_j of logit P(mRS <= j) = theta_j - eta, j = 0..5.
    mrs_thresholds: tuple = (0.8, 1.7, 2.6, 3.5, 4.6, 5.6)

    @classmethod
    def from_dict(cls, d: dict) -> SynthParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown SynthParams field(s) {unknown}; expected a subset of {sorted(names)}"
            )
        conv = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**conv)

    @classmethod
    def from_json(cls, path: str | Path) -> SynthParams:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read SynthParams JSON ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object of SynthParams fields")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> SynthParams:
        def share(name):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SynthParams.{name} = {v}: expected a share in [0, 1]")

        for n in (
            "stroke_share",
            "female_share",
            "tia_mislabelled_share",
            "multi_territory_share",
            "bilateral_share",
            "susceptibility_share",
            "mrs_missing_share",
        ):
            share(n)
        lo, hi = self.n_slices_range
        if not 1 <= lo <= hi:
            raise ValueError(
                f"SynthParams.n_slices_range = {self.n_slices_range}: expected lo <= hi"
            )
        if len(self.mrs_thresholds) != 6 or any(
            b <= a for a, b in zip(self.mrs_thresholds, self.mrs_thresholds[1:])
        ):
            raise ValueError("SynthParams.mrs_thresholds: expected 6 increasing cut-points")
        if set(self.territory_probs) - set(self.nihss_territory_coef):
            raise ValueError("SynthParams.territory_probs names a territory without NIHSS coef")
        if self.partial_volume_subsamples < 1:
            raise ValueError("SynthParams.partial_volume_subsamples: expected >= 1")
        return self
