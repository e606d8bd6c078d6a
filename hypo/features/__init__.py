"""From CAMs to interpretable numbers: anatomy, map features, controls, patients, join.

Pipeline (each stage cached; ``python -m hypo.features`` runs them all)::

    anatomy = anatomy_for_store(store)                   # image-derived, cached beside it
    qc = anatomy_qc(anatomy, store); check_anatomy_qc(qc)  # per patient; stops when many fail
    slices = features_for_store(store, anatomy, cams)    # one row per slice x map
    patients = aggregate_patients(slices, cohort_id)     # map-mass-weighted means
    joined = join_participants(patients, cohort.participants, cohort_id=...,
                               model_cards="models/gap")  # report + leakage flag
    require_held_out(joined.table)                       # analyses refuse training patients

Conventions: 2D slices are radiological (column 0 = patient's right); hemisphere 1 =
patient's left, 2 = right; ``asymmetry_index`` = (L - R) / (L + R), L = patient's left.
"""

from hypo.features.aggregate import (
    PATIENT_DICTIONARY,
    aggregate_patients,
    data_dictionary,
    feature_correlation,
    write_patient_tables,
)
from hypo.features.anatomy import Anatomy, AnatomyConfig, anatomy_for_store, compute_anatomy
from hypo.features.anatomy_qc import AnatomyQCConfig, AnatomyQCError, anatomy_qc, check_anatomy_qc
from hypo.features.join import (
    JoinError,
    JoinResult,
    LeakageError,
    flag_training_patients,
    join_participants,
    require_held_out,
    to_wide,
)
from hypo.features.maps import (
    FEATURE_DICTIONARY,
    FeatureConfig,
    control_maps,
    features_for_store,
    image_covariates,
    map_features,
)
from hypo.features.pipeline import FeatureRun, run_features

__all__ = [
    "run_features",
    "FeatureRun",
    "FEATURE_DICTIONARY",
    "PATIENT_DICTIONARY",
    "Anatomy",
    "AnatomyConfig",
    "AnatomyQCConfig",
    "AnatomyQCError",
    "FeatureConfig",
    "JoinError",
    "JoinResult",
    "LeakageError",
    "aggregate_patients",
    "anatomy_for_store",
    "anatomy_qc",
    "check_anatomy_qc",
    "compute_anatomy",
    "control_maps",
    "data_dictionary",
    "feature_correlation",
    "features_for_store",
    "flag_training_patients",
    "image_covariates",
    "join_participants",
    "map_features",
    "require_held_out",
    "to_wide",
    "write_patient_tables",
]
