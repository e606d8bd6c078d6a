"""The paper's CNNs: architectures, labels, patient-level splits, training, MC dropout,
evaluation and model cards (issue 3).

Entry points::

    from hypo.nets import build_model, cam_layer_name, train_on_store, mc_predict
    from hypo.nets import evaluate, save_model, load_model
"""

from hypo.nets.architectures import ARCHITECTURES, build_model, cam_layer_name
from hypo.nets.data import AugmentConfig
from hypo.nets.evaluation import evaluate, evaluate_mrs, evaluate_stroke
from hypo.nets.io import load_model, make_card, save_model
from hypo.nets.labels import MRS_CLASSES, STROKE_CLASSES, mrs_labels, stroke_labels
from hypo.nets.mc_dropout import mc_predict
from hypo.nets.splits import PatientSplit, patient_split
from hypo.nets.training import TrainConfig, train, train_on_store

__all__ = [
    "ARCHITECTURES",
    "AugmentConfig",
    "MRS_CLASSES",
    "PatientSplit",
    "STROKE_CLASSES",
    "TrainConfig",
    "build_model",
    "cam_layer_name",
    "evaluate",
    "evaluate_mrs",
    "evaluate_stroke",
    "load_model",
    "make_card",
    "mc_predict",
    "mrs_labels",
    "patient_split",
    "save_model",
    "stroke_labels",
    "train",
    "train_on_store",
]
