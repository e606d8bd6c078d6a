"""Class activation maps: engine, layer sweep, cohort streaming, export, metrics, sanity,
faithfulness.

The entry point is :func:`compute`::

    from hypo.cam import compute
    res = compute(model, images)          # Grad-CAM + Grad-CAM++, all classes
    res["gradcam"].shape                  # (n_images, n_classes, 192, 192)
    res.raw["gradcam"].shape              # (n_images, n_classes, 12, 12)
"""

from .engine import (
    METHODS,
    SCORE,
    CamConfig,
    compute,
    compute_with_config,
    default_cam_layer,
    model_hash,
    predict_scores,
    spatial_layers,
)
from .export import export_patient, maps_to_nifti
from .faithfulness import FaithfulnessCurves, deletion_insertion, faithfulness_table, road
from .metrics import localisation_table
from .result import CamResult
from .sanity import cascading_randomisation, negative_controls, precision_effect
from .stream import CamStore, compute_store
from .sweep import layer_sweep

__all__ = [
    "METHODS",
    "SCORE",
    "CamConfig",
    "CamResult",
    "CamStore",
    "FaithfulnessCurves",
    "cascading_randomisation",
    "compute_store",
    "deletion_insertion",
    "faithfulness_table",
    "precision_effect",
    "predict_scores",
    "road",
    "export_patient",
    "layer_sweep",
    "localisation_table",
    "maps_to_nifti",
    "negative_controls",
    "compute",
    "compute_with_config",
    "default_cam_layer",
    "model_hash",
    "spatial_layers",
]
