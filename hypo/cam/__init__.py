"""Class activation maps: engine, layer sweep, cohort streaming, export, metrics, sanity.

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
    spatial_layers,
)
from .export import export_patient, maps_to_nifti
from .metrics import localisation_table
from .result import CamResult
from .sanity import cascading_randomisation, negative_controls
from .stream import CamStore, compute_store
from .sweep import layer_sweep

__all__ = [
    "METHODS",
    "SCORE",
    "CamConfig",
    "CamResult",
    "CamStore",
    "cascading_randomisation",
    "compute_store",
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
