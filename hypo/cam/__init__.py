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
from .result import CamResult

__all__ = [
    "METHODS",
    "SCORE",
    "CamConfig",
    "CamResult",
    "compute",
    "compute_with_config",
    "default_cam_layer",
    "model_hash",
    "spatial_layers",
]
