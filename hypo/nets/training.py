"""Training of the paper's CNNs: Adam, batch 64, early stopping, resumable checkpoints.

A run folder holds, before the first step, ``run.json`` (configuration, split, class
weights, subsampling, augmentation, cohort and generator hashes); during training
``log.csv`` (Keras ``CSVLogger``) and ``checkpoint/`` (written atomically after every
epoch: all model variables including BatchNorm statistics and dropout seed states, all
optimizer variables, the best weights so far and the early-stopping counters). Because
the data pipeline draws each epoch's order and augmentation from ``(seed, epoch)``
(:mod:`hypo.nets.data`), a run killed after epoch k and resumed ends with the same
weights as one that ran straight through.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from hypo._util import atomic_path, rng_for, write_json_atomic
from hypo.nets.architectures import build_model
from hypo.nets.data import AugmentConfig, make_dataset, steps_per_epoch
from hypo.nets.evaluation import outcome_score
from hypo.nets.io import load_model
from hypo.nets.labels import task_labels
from hypo.nets.splits import PatientSplit, patient_split

#: What early stopping can follow (:attr:`TrainConfig.monitor`); ``+1`` = higher is better.
MONITORS = {"val_loss": -1, "val_outcome_auc": +1}


@dataclass
class TrainConfig:
    """Training settings (defaults from the paper's code).

    Parameters
    ----------
    architecture : str
        Name for :func:`hypo.nets.build_model`.
    epochs : int
        Maximum epochs (paper code: 100 stroke, 400 mRS).
    batch_size : int
        Global batch size (paper: 64).
    learning_rate : float
        Adam learning rate (Keras default 1e-3, as in the paper's code).
    patience : int
        Early stopping: epochs without a lower validation loss before stopping; the best
        epoch's weights are restored.
    seed : int
        Seeds weights, dropout masks, shuffles, augmentation and subsampling.
    dropout : float
        Dropout rate (paper: 0.3).
    augment : AugmentConfig
        Geometric augmentation of training batches (horizontal flip off by default).
    class_weight : bool
        Weight training slices by inverse class frequency ("balanced").
    negative_fraction : float or None
        Keep this fraction of the lesion-free (class 0) training slices, drawn with the
        seed; ``None`` keeps all.
    precision : {"float32", "mixed_bfloat16", "mixed_float16"}
        Keras dtype policy of the body; logits and softmax stay float32.
    strategy : {None, "mirrored"}
        ``"mirrored"`` trains on ``tf.distribute.MirroredStrategy`` over all visible
        devices.
    init_weights : str or None
        A model folder whose weights start this run, layer by layer where name and weight
        shapes agree (e.g. a stroke model's backbone for the mRS model; the class-score
        layer of another class count is left fresh). The caller makes sure that model saw
        none of this run's test patients (``python -m analyses.train_models --init-from``
        refuses otherwise).
    aux_lesion_area : float
        Weight of an auxiliary loss (0 = off): a ``lesion_area`` head (one dense unit on
        the features the class scores read) regresses the log of the reader's lesion
        area on each slice (``log1p`` of mm², standardised on the training slices; mean
        squared error). It exists only while training -- the saved model has the class
        output alone -- and teaches the features the lesion's size, the slice's main
        outcome signal (``hypo.study.oracle``'s lesion-area floor).
    monitor : {"val_loss", "val_outcome_auc"}
        What early stopping and the best weights follow: the validation loss of the class
        output, or (3-class mRS model) the validation AUC of mRS 3-6 against 0-2 on the
        validation lesion slices, ``P(3-6) / (P(0-2) + P(3-6))`` (higher is better).
    deterministic : bool
        Call ``tf.config.experimental.enable_op_determinism()`` (bit-reproducible
        kernels; may be slower on GPUs) and seed Python/NumPy/TF global generators
        (``keras.utils.set_random_seed``); both are process-wide.
    """

    architecture: str = "gap"
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 10
    seed: int = 0
    dropout: float = 0.3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    class_weight: bool = True
    negative_fraction: float | None = None
    precision: str = "float32"
    strategy: str | None = None
    init_weights: str | None = None
    aux_lesion_area: float = 0.0
    monitor: str = "val_loss"
    deterministic: bool = True

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.strategy not in (None, "mirrored"):
            raise ValueError(f"TrainConfig.strategy={self.strategy!r}; expected None or 'mirrored'")
        if self.negative_fraction is not None and not 0 < self.negative_fraction <= 1:
            raise ValueError(
                f"TrainConfig.negative_fraction={self.negative_fraction}; expected (0, 1]"
            )
        if self.monitor not in MONITORS:
            raise ValueError(f"TrainConfig.monitor={self.monitor!r}; expected one of {MONITORS}")
        if self.aux_lesion_area < 0:
            raise ValueError(f"TrainConfig.aux_lesion_area={self.aux_lesion_area}; expected >= 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("TrainConfig: epochs and batch_size must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    out_dir: Path
    class_weights: dict
    n_train_slices: int
    epoch_seconds: list
    final_weights: list


class Interrupt(Exception):
    """Raised by a callback to stop training abruptly (tests kill a run with it)."""


# --------------------------------------------------------------------------- checkpoints


def _values(variables) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in variables]


def _assign(variables, values, what: str, path: Path) -> None:
    if len(variables) != len(values):
        raise ValueError(
            f"{path}: checkpoint has {len(values)} {what} variables, the model "
            f"{len(variables)}; was it written by a different architecture?"
        )
    for v, a in zip(variables, values):
        if tuple(v.shape) != tuple(a.shape):
            raise ValueError(f"{path}: {what} variable {v.path} has shape {v.shape}, not {a.shape}")
        v.assign(a)


class _RunState(keras.callbacks.Callback):
    """Early stopping on validation loss + per-epoch checkpoint of the whole run state."""

    def __init__(
        self,
        ckpt_dir: Path,
        patience: int,
        state: dict | None = None,
        monitor: str = "val_loss",
        log_key: str | None = None,
    ):
        super().__init__()
        self.ckpt_dir = Path(ckpt_dir)
        self.patience = int(patience)
        self.log_key = log_key or monitor
        self.sign = MONITORS[monitor]
        s = state or {}
        # Stored as a loss-like number (lower is better) whatever the monitor.
        self.best = s.get("best", np.inf)
        self.best_epoch = s.get("best_epoch", -1)
        self.wait = s.get("wait", 0)
        self.stopped = s.get("stopped", False)
        self.best_weights = None
        self.epoch_seconds = list(s.get("epoch_seconds", []))
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._t0)
        val = (logs or {}).get(self.log_key)
        if val is None:
            raise ValueError(
                f"training: no {self.log_key} in the logs; a validation set is required"
            )
        val = -self.sign * float(val)
        if val < self.best:
            self.best, self.best_epoch, self.wait = float(val), int(epoch), 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
                self.stopped = True
        self.save(epoch + 1)

    def save(self, next_epoch: int) -> None:
        with atomic_path(self.ckpt_dir) as tmp:
            tmp.mkdir()
            arrays = {f"m{i}": a for i, a in enumerate(_values(self.model.variables))}
            arrays.update(
                {f"o{i}": a for i, a in enumerate(_values(self.model.optimizer.variables))}
            )
            np.savez(tmp / "state.npz", **arrays)
            if self.best_weights is not None:
                np.savez(tmp / "best.npz", **{f"w{i}": a for i, a in enumerate(self.best_weights)})
            (tmp / "state.json").write_text(
                json.dumps(
                    {
                        "next_epoch": int(next_epoch),
                        "best": self.best,
                        "best_epoch": self.best_epoch,
                        "wait": self.wait,
                        "stopped": self.stopped,
                        "n_model_variables": len(self.model.variables),
                        "epoch_seconds": self.epoch_seconds,
                    },
                    indent=2,
                )
            )

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _OutcomeAUC(keras.callbacks.Callback):
    """Adds ``val_outcome_auc`` to the epoch logs: AUC of mRS 3-6 against 0-2 on the
    validation lesion slices (classes 1 and 2), scored ``P(2) / (P(1) + P(2))``."""

    def __init__(self, class_model: keras.Model, dataset, y: np.ndarray):
        super().__init__()
        self.class_model = class_model
        self.dataset = dataset
        self.y = np.asarray(y)

    def on_epoch_end(self, epoch, logs=None):

        score = outcome_score(self.class_model.predict(self.dataset, verbose=0))
        if logs is not None:
            logs["val_outcome_auc"] = float(roc_auc_score(self.y == 2, score))


def with_aux_head(model: keras.Model, seed: int | None = None) -> keras.Model:
    """A training model with ``model``'s class output and a ``lesion_area`` regression
    output (one float32 dense unit on the features the ``logits`` layer reads).

    The layers are shared: training this model trains ``model``, which keeps its single
    output (and is what gets saved).
    """
    feats = model.get_layer("logits").input
    init = keras.initializers.HeNormal(seed=None if seed is None else int(seed) * 1000 + 999)
    area = keras.layers.Dense(1, dtype="float32", name="lesion_area", kernel_initializer=init)(
        feats
    )
    return keras.Model(
        model.inputs, {"probabilities": model.outputs[0], "lesion_area": area}, name=model.name
    )


def _load_checkpoint(model: keras.Model, ckpt: Path) -> tuple[dict, list | None]:
    state = json.loads((ckpt / "state.json").read_text())
    with np.load(ckpt / "state.npz") as z:
        m = [z[f"m{i}"] for i in range(len([k for k in z.files if k.startswith("m")]))]
        o = [z[f"o{i}"] for i in range(len([k for k in z.files if k.startswith("o")]))]
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    _assign(model.variables, m, "model", ckpt)
    _assign(model.optimizer.variables, o, "optimizer", ckpt)
    best = None
    if (ckpt / "best.npz").exists():
        with np.load(ckpt / "best.npz") as z:
            best = [z[f"w{i}"] for i in range(len(z.files))]
    return state, best


# --------------------------------------------------------------------------- training


def class_weights_for(y: np.ndarray, n_classes: int) -> dict:
    """Balanced class weights ``n / (K * n_c)`` (classes absent from ``y`` get 0)."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return {int(k): float(v) for k, v in enumerate(w)}


def subsample_negatives(rows: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Keep ``fraction`` of the class-0 entries of ``rows`` (seeded), all others."""
    neg = rows[y[rows] == 0]
    k = int(round(fraction * len(neg)))
    keep_neg = rng_for(seed, "negative-subsample").choice(neg, size=k, replace=False)
    return np.sort(np.concatenate([rows[y[rows] != 0], keep_neg]))


def _strategy(name: str | None):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(
    images: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    split: PatientSplit,
    out_dir,
    config: TrainConfig | None = None,
    n_classes: int | None = None,
    provenance: dict | None = None,
    resume: bool = False,
    callbacks=(),
    verbose: int | str = "auto",
    aux_targets: np.ndarray | None = None,
) -> TrainResult:
    """Train ``config.architecture`` on the training patients, early-stopped on validation.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W)`` float32 slices (array or memory map). Rows whose label is negative
        are never used.
    labels : np.ndarray of int
        Class per row (``-1`` = not part of this task).
    patient_ids : np.ndarray of str
        ``participant_id`` per row; the split assigns rows through it.
    split : PatientSplit
        Patient-level split; only ``train`` and ``val`` patients are read.
    out_dir : path
        Run folder (``run.json``, ``log.csv``, ``checkpoint/``).
    provenance : dict, optional
        Extra facts recorded in ``run.json`` before training (cohort id/hash, generator
        hash, command line).
    resume : bool
        Continue from ``out_dir/checkpoint`` if present (else start fresh).
    callbacks : sequence of keras.callbacks.Callback
        Called after the run's own checkpointing callback.
    aux_targets : np.ndarray, optional
        Per row, the raw target of the auxiliary ``lesion_area`` output (required when
        ``config.aux_lesion_area > 0``; standardised here on the training rows).

    Returns
    -------
    TrainResult
        ``model`` carries the weights of the epoch with the lowest validation loss.
    """
    config = config or TrainConfig()
    out_dir = Path(out_dir)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(n_classes or (3 if config.architecture == "mrs" else 2))
    train_rows, val_rows = _task_rows(images, labels, patient_ids, split, config, n_classes)
    aux = _standardised_aux(aux_targets, labels, train_rows, val_rows, config)
    cw = class_weights_for(labels[train_rows], n_classes) if config.class_weight else None
    weights = None
    if cw is not None:
        weights = np.zeros(len(labels), dtype=np.float32)
        weights[train_rows] = [cw[int(c)] for c in labels[train_rows]]
    if config.deterministic:
        _deterministic(config.seed)
    ckpt = out_dir / "checkpoint"
    resuming = resume and (ckpt / "state.json").exists()
    if not resuming:
        counts = {"n_train_slices": int(len(train_rows)), "n_val_slices": int(len(val_rows))}
        _start_run_folder(out_dir, config, n_classes, split, counts, cw, provenance)

    input_shape = tuple(images.shape[1:3]) + (1,)
    with _strategy(config.strategy).scope():
        model, fit_model = _compiled_models(
            config, input_shape, n_classes, with_aux=aux is not None
        )
        state, best = None, None
        if resuming:
            state, best = _load_checkpoint(fit_model, ckpt)
        elif config.init_weights:
            _init_from(model, config.init_weights, input_shape)
    first = int(state["next_epoch"]) if state else 0
    run_state = _run_state(ckpt, config, state, best, fit_model, with_aux=aux is not None)

    if first < config.epochs and not run_state.stopped:
        data = _FitData(images, labels, train_rows, val_rows, weights, aux, n_classes)
        own = _outcome_monitor(model, data, config)
        logger = keras.callbacks.CSVLogger(str(out_dir / "log.csv"), append=resuming)
        _fit(fit_model, data, config, first, [*own, run_state, logger, *callbacks], verbose)
    final_weights = model.get_weights()
    run_state.restore_best()
    log = out_dir / "log.csv"
    history = pd.read_csv(log) if log.exists() else pd.DataFrame()
    return TrainResult(
        model=model,
        history=history,
        best_epoch=run_state.best_epoch,
        out_dir=out_dir,
        class_weights=cw or {},
        n_train_slices=int(len(train_rows)),
        epoch_seconds=run_state.epoch_seconds,
        final_weights=final_weights,
    )


def _task_rows(images, labels, patient_ids, split, config, n_classes):
    """Training and validation rows of the task (label >= 0), checked against the split."""
    images_ok = images.ndim in (3, 4) and len(images) == len(labels) == len(patient_ids)
    if not images_ok:
        raise ValueError(
            f"train: images {images.shape}, labels {len(labels)}, patient_ids "
            f"{len(patient_ids)}; expected (n, H, W) images and n labels and n patient ids"
        )
    if labels.max() >= n_classes:
        raise ValueError(f"train: label {labels.max()} but n_classes={n_classes}")
    parts = split.indices(np.asarray(patient_ids).astype(str))
    train_rows = parts["train"][labels[parts["train"]] >= 0]
    val_rows = parts["val"][labels[parts["val"]] >= 0]
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(
            f"train: {len(train_rows)} training and {len(val_rows)} validation slices; "
            "the split's patients do not match patient_ids"
        )
    if set(split.train) & (set(split.val) | set(split.test)):
        raise ValueError("train: a patient is in the training set and in val/test")
    if config.negative_fraction is not None:
        train_rows = subsample_negatives(train_rows, labels, config.negative_fraction, config.seed)
    if config.monitor == "val_outcome_auc" and n_classes != 3:
        raise ValueError("train: monitor='val_outcome_auc' is for the 3-class mRS model")
    return train_rows, val_rows


def _standardised_aux(aux_targets, labels, train_rows, val_rows, config):
    """The auxiliary targets standardised on the training rows (None without the head)."""
    if config.aux_lesion_area <= 0:
        return None
    if aux_targets is None or len(aux_targets) != len(labels):
        raise ValueError(
            f"train: aux_lesion_area={config.aux_lesion_area} needs one aux target per "
            f"row ({len(labels)}); got "
            f"{'none' if aux_targets is None else len(aux_targets)}"
        )
    aux = np.asarray(aux_targets, dtype=np.float64)
    used = np.concatenate([train_rows, val_rows])
    if not np.isfinite(aux[used]).all():
        raise ValueError("train: the aux targets of some training/validation rows are NaN")
    mu, sd = aux[train_rows].mean(), aux[train_rows].std()
    return ((aux - mu) / (sd if sd > 0 else 1.0)).astype(np.float32)


def _run_state(ckpt, config, state, best, fit_model, with_aux: bool) -> _RunState:
    """The checkpointing / early-stopping callback, attached to ``fit_model``."""
    log_key = config.monitor
    if config.monitor == "val_loss" and with_aux:
        log_key = "val_probabilities_loss"  # the class loss, not the sum with the aux loss
    run_state = _RunState(ckpt, config.patience, state, monitor=config.monitor, log_key=log_key)
    run_state.best_weights = best
    # fit() attaches the model to its callbacks; a resumed run with no epoch left never
    # calls fit, and must still restore the best weights.
    run_state.set_model(fit_model)
    return run_state


def _deterministic(seed: int) -> None:
    # Op determinism is process-wide and makes unseeded random ops raise; seeding the
    # global generators keeps later code in the same process (e.g. model.fit with
    # shuffle) working. hypo's own randomness never reads them.
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)


def _start_run_folder(out_dir: Path, config, n_classes, split, counts, cw, provenance) -> None:
    """A fresh run folder: no stale log, ``run.json`` with the settings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "log.csv").unlink(missing_ok=True)
    run = {
        "config": config.to_dict(),
        "n_classes": n_classes,
        "split": split.to_dict(),
        **counts,
        "class_weights": cw,
        "negative_subsampling": config.negative_fraction,
        "horizontal_flip": config.augment.horizontal_flip,
        "provenance": provenance or {},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv,
    }
    write_json_atomic(out_dir / "run.json", run)


def _compiled_models(config, input_shape, n_classes: int, with_aux: bool):
    """``(model, fit_model)``: the class model, and what is fitted (the same model, or the
    model with the training-only lesion-area head)."""
    model = build_model(
        config.architecture,
        input_shape=input_shape,
        n_classes=n_classes,
        dropout=config.dropout,
        seed=config.seed,
        precision=config.precision,
    )
    accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    if not with_aux:
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=[accuracy],
        )
        return model, model
    fit_model = with_aux_head(model, config.seed)
    fit_model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss={
            "probabilities": keras.losses.CategoricalCrossentropy(),
            "lesion_area": keras.losses.MeanSquaredError(),
        },
        loss_weights={"probabilities": 1.0, "lesion_area": float(config.aux_lesion_area)},
        metrics={"probabilities": [accuracy]},
    )
    return model, fit_model


@dataclass
class _FitData:
    """What one training run reads: images, labels, rows, weights and aux targets."""

    images: np.ndarray
    labels: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    weights: np.ndarray | None
    aux: np.ndarray | None
    n_classes: int


def _outcome_monitor(model, data: _FitData, config) -> list:
    """The validation outcome AUC callback of a 3-class model (empty otherwise)."""
    if data.n_classes != 3:
        return []
    labels, val_rows = data.labels, data.val_rows
    lesion_val = val_rows[labels[val_rows] > 0]
    if len(np.unique(labels[lesion_val])) == 2:
        auc_ds = make_dataset(
            data.images, labels, lesion_val, batch_size=config.batch_size, n_classes=3
        )
        return [_OutcomeAUC(model, auc_ds.map(lambda x, y: x), labels[lesion_val])]
    if config.monitor == "val_outcome_auc":
        raise ValueError(
            "train: monitor='val_outcome_auc' needs validation lesion slices of both outcome groups"
        )
    return []


def _fit(fit_model, data: _FitData, config, first: int, callbacks, verbose) -> None:
    """Epochs ``first .. config.epochs`` of ``fit_model`` on the training rows."""
    train_ds = make_dataset(
        data.images,
        data.labels,
        data.train_rows,
        batch_size=config.batch_size,
        n_classes=data.n_classes,
        sample_weight=data.weights,
        shuffle=True,
        augment=config.augment,
        seed=config.seed,
        epochs=(first, config.epochs),
        aux=data.aux,
    )
    val_ds = make_dataset(
        data.images,
        data.labels,
        data.val_rows,
        batch_size=config.batch_size,
        n_classes=data.n_classes,
        aux=data.aux,
    )
    with warnings.catch_warnings():
        # Keras warns when the finite validation set is exhausted; the training set
        # repeats, so the warning never concerns it.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        fit_model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=first,
            steps_per_epoch=steps_per_epoch(len(data.train_rows), config.batch_size),
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )


# --------------------------------------------------------------------------- slice stores


def _init_from(model: keras.Model, path: str, input_shape) -> int:
    """Copy the weights of ``path``'s layers into ``model``'s layers of the same name
    and weight shapes; returns how many layers were copied (ValueError when none)."""

    src = load_model(path, input_shape=input_shape)
    copied = 0
    for layer in model.layers:
        try:
            other = src.get_layer(layer.name)
        except ValueError:
            continue
        mine, theirs = layer.get_weights(), other.get_weights()
        if (
            mine
            and len(mine) == len(theirs)
            and all(a.shape == b.shape for a, b in zip(mine, theirs))
        ):
            layer.set_weights(theirs)
            copied += 1
    if copied == 0:
        raise ValueError(f"init weights {path}: no layer of that model matches this one")
    return copied


def task_of(architecture: str) -> str:
    return "mrs" if architecture == "mrs" else "stroke"


def prepare_store(
    store,
    architecture: str,
    split_seed: int = 0,
    val_size=0.15,
    test_size=0.15,
    exclude_patients=(),
):
    """Labels and patient split for ``architecture`` on a slice store.

    ``exclude_patients`` are left out of the task altogether (label -1, in no split): e.g.
    the test patients of another model whose backbone this run will start from.

    Returns
    -------
    labels : np.ndarray of int
        Class per store row; ``-1`` for rows outside the task (mRS: patients without
        a 3-month mRS).
    split : PatientSplit
    sl : hypo.nets.labels.SliceLabels
    """
    task = task_of(architecture)
    sl = task_labels(task, store.table)
    labels = np.full(len(store.table), -1, dtype=np.int64)
    labels[sl.index] = sl.y
    if len(exclude_patients):
        pid = store.table["participant_id"].astype(str).to_numpy()
        labels[np.isin(pid, [str(p) for p in exclude_patients])] = -1
    table = store.table.iloc[np.flatnonzero(labels >= 0)]
    strat = ("group", "mrs_group") if task == "mrs" else ("group",)
    strat = tuple(c for c in strat if c == "mrs_group" or c in table.columns)
    split = patient_split(table, val_size, test_size, seed=split_seed, stratify=strat)
    return labels, split, sl


def train_on_store(
    store,
    out_dir,
    config: TrainConfig | None = None,
    split_seed: int = 0,
    resume: bool = False,
    command: str | None = None,
    verbose="auto",
    callbacks=(),
    exclude_patients=(),
):
    """Labels, patient split and training on a :class:`hypo.preprocess.SliceStore`.

    Records the store's cohort id, cohort hash and generator hash in ``run.json``
    before training starts. Returns ``(TrainResult, labels, split, slice_labels)``.
    """
    config = config or TrainConfig()
    labels, split, sl = prepare_store(
        store, config.architecture, split_seed, exclude_patients=exclude_patients
    )
    meta = getattr(store, "meta", {}) or {}
    provenance = {
        "cohort_id": store.cohort_id,
        "cohort_hash": store.cohort_hash,
        "generator_hash": meta.get("generator_hash"),
        "slice_store": str(store.path),
        "preprocessing": asdict(store.config),
        "excluded_patients": sl.excluded_patients,
        "left_out_patients": sorted(map(str, exclude_patients)),
        "command": command,
    }
    aux = lesion_area_targets(store.table) if config.aux_lesion_area > 0 else None
    result = train(
        np.asarray(store.images) if not hasattr(store.images, "filename") else store.images,
        labels,
        store.table["participant_id"].astype(str).to_numpy(),
        split,
        out_dir,
        config,
        n_classes=len(sl.classes),
        provenance=provenance,
        resume=resume,
        verbose=verbose,
        callbacks=callbacks,
        aux_targets=aux,
    )
    return result, labels, split, sl


def lesion_area_targets(table: pd.DataFrame) -> np.ndarray:
    """``log1p`` of the reader's lesion area (mm²) per slice, 0 where no lesion is marked:
    the target of :attr:`TrainConfig.aux_lesion_area`."""
    if "lesion_area_mm2" not in table.columns:
        raise ValueError(
            "aux lesion-area loss: the slice table has no lesion_area_mm2 column (the "
            "reader's lesion area per slice, from the cohort's lesion masks); train "
            "without --aux-lesion-area or give the cohort lesion masks"
        )
    area = pd.to_numeric(table["lesion_area_mm2"], errors="coerce").to_numpy(float)
    visible = pd.to_numeric(table.get("lesion_visible", 1), errors="coerce")
    area = np.where(np.asarray(visible) == 0, 0.0, area)
    if np.isnan(area).any():
        bad = table.loc[np.isnan(area), "participant_id"].unique()[:5].tolist()
        raise ValueError(
            f"aux lesion-area loss: lesion_area_mm2 is missing on {int(np.isnan(area).sum())} "
            f"lesion slices (e.g. patients {bad})"
        )
    if (area < 0).any():
        raise ValueError("aux lesion-area loss: lesion_area_mm2 has negative values")
    return np.log1p(area)
