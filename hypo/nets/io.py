"""Saving and loading hypo models with their model cards.

A model folder holds ``model.keras`` (architecture + weights, no optimizer state, so it
stays small) and ``card.json`` (what the model is, what it was trained on, how well it
did, and the command that retrains it). Models load with ``safe_mode=True``: hypo
models use only built-in Keras layers, so no Lambda layers or pickles are involved.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

from hypo._util import atomic_path, weights_hash, write_json_atomic
from hypo._util import library_versions as _versions
from hypo.nets.architectures import (
    ARCHITECTURES,
    SIZE_FREE,
    build_model,
    cam_layer_name,
    check_input_shape,
)
from hypo.nets.cards import CARD_FILE, read_card

# The outcome model's layers (BagPooling, OrdinalOutput) are registered on import, so that
# its bag model loads with safe_mode=True.
from hypo.nets.outcome import BAG_ARCHITECTURE, DEFAULT_EMBEDDING_LAYER, OrdinalHead

MODEL_FILE = "model.keras"
REQUIRED_CARD_FIELDS = ("architecture", "input_shape", "classes")
CARD_FIELDS = (
    "architecture",
    "input_shape",
    "classes",
    "cohort",
    "train_patients",
    "val_patients",
    "test_patients",
    "split_seed",
    "preprocessing",
    "cam_layer",
    "versions",
    "metrics",
    "command",
)


def library_versions() -> dict:
    """Versions of the libraries that shape a model's numbers (recorded in its card)."""
    return _versions(("hypo", "keras", "tensorflow", "numpy", "scikit-learn", "python"))


def _validate_card(card: dict, where) -> None:
    if not isinstance(card, dict):
        raise ValueError(f"{where}: model card must be a dict, got {type(card).__name__}")
    missing = [k for k in REQUIRED_CARD_FIELDS if k not in card]
    if missing:
        raise ValueError(f"{where}: model card lacks field(s) {missing}")
    known = (*ARCHITECTURES, BAG_ARCHITECTURE)
    if card["architecture"] not in known:
        raise ValueError(
            f"{where}: unknown architecture {card['architecture']!r} in the model card; "
            f"expected one of {known}"
        )


def save_model(model: keras.Model, out_dir, card: dict) -> Path:
    """Write ``out_dir/model.keras`` (no optimizer) and ``out_dir/card.json`` atomically.

    ``card`` needs at least ``architecture``, ``input_shape`` and ``classes``; the
    library versions and the CAM layer are filled in when absent.
    """

    out_dir = Path(out_dir)
    card = dict(card)
    card.setdefault("input_shape", list(model.input_shape[1:]))
    card.setdefault("cam_layer", cam_layer_name(model))
    card.setdefault("versions", library_versions())
    _validate_card(card, out_dir)
    n_out = model.output_shape[-1]
    if len(card["classes"]) != n_out:
        raise ValueError(
            f"{out_dir}: card names {len(card['classes'])} classes, the model outputs {n_out}"
        )
    # A twin built from the config is uncompiled, so the file carries no optimizer state.
    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        bare.save(tmp)
    write_json_atomic(out_dir / CARD_FILE, card)
    return out_dir


def load_model(path_or_dir, input_shape=None) -> keras.Model:
    """Load a hypo model with ``safe_mode=True`` and attach its card as ``model.hypo_card``.

    Parameters
    ----------
    path_or_dir : path
        A model folder (``model.keras`` + ``card.json``) or the ``.keras`` file itself.
    input_shape : tuple of int, optional
        Run the model at another input size: GAP architectures are rebuilt at that size
        with the same weights (any size their poolings divide); Flatten architectures
        only take their training size. Raises ``ValueError`` otherwise.
    """
    p = Path(path_or_dir)
    model_file = p / MODEL_FILE if p.is_dir() else p
    if not model_file.exists():
        raise FileNotFoundError(f"{model_file}: no such model file")
    if not zipfile.is_zipfile(model_file):
        raise ValueError(f"{model_file}: not a Keras model file (.keras is a zip archive)")
    card = read_card(model_file)
    _validate_card(card, model_file.parent / CARD_FILE)
    try:
        model = keras.models.load_model(model_file, compile=False, safe_mode=True)
    except Exception as e:
        raise ValueError(f"{model_file}: Keras could not load it as a model ({e})") from e
    if model.output_shape[-1] != len(card["classes"]):
        raise ValueError(
            f"{model_file}: the model outputs {model.output_shape[-1]} classes, its card "
            f"names {len(card['classes'])}"
        )
    if card["architecture"] == BAG_ARCHITECTURE:
        if input_shape is not None:
            raise ValueError(f"{model_file}: a bag model takes its encoder's slice size only")
        object.__setattr__(model, "hypo_card", card)
        return model
    built = tuple(int(s) for s in model.input_shape[1:])
    if input_shape is not None and tuple(int(s) for s in input_shape) != built:
        arch = card["architecture"]
        check_input_shape(arch, input_shape, build_shape=built)
        if arch not in SIZE_FREE:  # pragma: no cover - check_input_shape raised already
            raise ValueError(f"{model_file}: {arch!r} takes only {built}")
        resized = build_model(
            arch,
            input_shape=tuple(input_shape),
            n_classes=model.output_shape[-1],
            dropout=_dropout_rate(model),
        )
        resized.set_weights(model.get_weights())
        model = resized
    # Bypass Keras attribute tracking so the card stays a plain, JSON-ready dict.
    object.__setattr__(model, "hypo_card", card)
    return model


def _dropout_rate(model: keras.Model) -> float:
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    return float(rates[0]) if rates else 0.0


def make_card(
    architecture: str,
    model: keras.Model,
    classes,
    split=None,
    cohort: dict | None = None,
    preprocessing: dict | None = None,
    metrics: dict | None = None,
    command: str | None = None,
    **extra,
) -> dict:
    """Assemble a model card from the run's parts (fields listed in ``CARD_FIELDS``)."""

    card = {
        "architecture": architecture,
        "input_shape": [int(s) for s in model.input_shape[1:]],
        "n_parameters": int(model.count_params()),
        "classes": list(classes),
        "cohort": cohort or {},
        "train_patients": list(split.train) if split is not None else [],
        "val_patients": list(split.val) if split is not None else [],
        "test_patients": list(split.test) if split is not None else [],
        "split_seed": split.seed if split is not None else None,
        "preprocessing": preprocessing or {},
        "cam_layer": cam_layer_name(model),
        "versions": library_versions(),
        "metrics": metrics or {},
        "command": command,
    }
    card.update(extra)
    return card


# --------------------------------------------------------------------------- shipped model

#: The file of a saved outcome model holding its heads (beside ``card.json``).
HEAD_FILE = "head.json"


@dataclass
class OutcomeModel:
    """A saved outcome model (``head.json`` + ``card.json``), ready for bag CAMs.

    Attributes
    ----------
    folder : Path
    card : dict
        Its card (``train_patients`` = every development patient the head or the encoder
        saw; ``cam_layer``; ``l2``; ``pooling``; ``encoder``).
    encoder : keras.Model
        The frozen slice encoder (the model whose weights hash the card records).
    encoder_dir : Path
        Where the encoder was loaded from.
    head : OrdinalHead
        The image head (pooled embedding, then the lesion extent).
    pooling : str
    embedding_layer : str
    """

    folder: Path
    card: dict
    encoder: object
    encoder_dir: Path
    head: OrdinalHead
    pooling: str
    embedding_layer: str

    @property
    def cam_layer(self) -> str:
        return self.card.get("cam_layer") or (self.encoder.hypo_card or {}).get("cam_layer")


def _encoder_candidates(folder: Path, recorded: str | None, encoder) -> list[Path]:
    from hypo.paths import REPO_ROOT

    if encoder is not None:
        return [Path(encoder)]
    if not recorded:
        return []
    rec = Path(recorded)
    # A sibling of the outcome model first (shipped models live side by side, and the card
    # may record the absolute path of the checkout that trained it), then the path itself.
    out = [folder.parent / rec.name, rec if rec.is_absolute() else REPO_ROOT / rec]
    return list(dict.fromkeys(out))


def load_outcome_model(folder, encoder=None) -> OutcomeModel:
    """Load a saved outcome model: ``head.json``, ``card.json`` and the card's encoder.

    The encoder is found as ``encoder`` (a model folder) when given, else as a sibling of
    ``folder`` named like the card's ``encoder.model``, else at that path; its weights hash
    must equal the card's ``encoder.weights_hash`` (the head was fitted on that encoder's
    embeddings). Raises ``FileNotFoundError``/``ValueError`` naming the file that is
    missing or does not match.
    """
    folder = Path(folder)
    missing = [f for f in (HEAD_FILE, "card.json") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"outcome model {folder}: missing {missing} (train it with python -m "
            "analyses.outcome_model --out DIR)"
        )
    card = read_card(folder)
    heads = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
    for k in ("image", "pooling"):
        if k not in heads:
            raise ValueError(f"{folder / HEAD_FILE}: no {k!r} entry")
    head = OrdinalHead.from_dict(heads["image"], str(folder / HEAD_FILE))
    enc = card.get("encoder") or {}
    want = enc.get("weights_hash")
    tried = []
    for cand in _encoder_candidates(folder, enc.get("model"), encoder):
        if not (cand / "model.keras").is_file():
            tried.append(f"{cand} (no model.keras)")
            continue
        model = load_model(cand)
        got = weights_hash(model)
        if want is None or got == want:
            return OutcomeModel(folder, card, model, cand, head, heads["pooling"],
                                heads.get("embedding_layer", DEFAULT_EMBEDDING_LAYER))  # fmt: skip
        tried.append(f"{cand} (weights hash {got})")
    raise FileNotFoundError(
        f"outcome model {folder}: no encoder with weights hash {want} (card.json encoder."
        f"weights_hash); tried {tried or 'nothing: the card names no encoder.model'}"
    )
