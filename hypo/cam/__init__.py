"""Class activation maps: engine, layer sweep, cohort streaming, export, metrics, sanity,
faithfulness.

The entry point is :func:`compute`::

    from hypo.cam import compute
    res = compute(model, images)          # Grad-CAM + Grad-CAM++, all classes
    res["gradcam"].shape                  # (n_images, n_classes, 192, 192)
    res.raw["gradcam"].shape              # (n_images, n_classes, 12, 12)
"""

from hypo._util import lazy_exports

# Names load on first use: reading a CAM cache (``hypo.cam.stream.CamStore``, e.g. in the
# feature workers) must not import TensorFlow, which takes seconds and hundreds of MB.
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "engine": ("METHODS", "SCORE", "CamConfig", "compute", "compute_with_config",
                   "default_cam_layer", "model_hash", "predict_scores", "spatial_layers"),
        "export": ("export_patient", "maps_to_nifti"),
        "faithfulness": ("FaithfulnessCurves", "deletion_insertion", "faithfulness_table",
                         "road"),
        "metrics": ("localisation_table",),
        "result": ("CamResult",),
        "sanity": ("cascading_randomisation", "negative_controls", "precision_effect"),
        "stream": ("CamStore", "compute_store"),
        "sweep": ("layer_sweep",),
    },
)  # fmt: skip
