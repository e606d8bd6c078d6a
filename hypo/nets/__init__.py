"""The paper's CNNs: architectures, labels, patient-level splits, training, MC dropout,
evaluation and model cards (issue 3).

Entry points::

    from hypo.nets import build_model, cam_layer_name, train_on_store, mc_predict
    from hypo.nets import evaluate, save_model, load_model
"""

from hypo._util import lazy_exports

# Names load on first use: ``hypo.nets.cards`` (reading a model card) must not import
# TensorFlow, which takes 5-10 s on a 2-core machine (a cohort preflight answers first).
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "architectures": ("ARCHITECTURES", "build_model", "cam_layer_name"),
        "data": ("AugmentConfig",),
        "evaluation": ("evaluate", "evaluate_mrs", "evaluate_stroke"),
        "io": ("load_model", "make_card", "save_model"),
        "labels": ("MRS_CLASSES", "STROKE_CLASSES", "mrs_labels", "stroke_labels"),
        "mc_dropout": ("mc_predict",),
        "splits": ("PatientSplit", "patient_split"),
        "training": ("TrainConfig", "train", "train_on_store"),
    },
)
