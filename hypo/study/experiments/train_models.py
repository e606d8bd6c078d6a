"""Train one of the paper's CNNs on a cohort and ship it with its model card.

:func:`train_model` builds (or reuses) the slice store of
:func:`hypo.preprocess.build_slice_store`, splits patients (stratified, seeded), trains with
early stopping and per-epoch checkpoints (``resume`` continues a killed run), evaluates on
the test patients and writes::

    <out>/model.keras  <out>/card.json       the model and its card
    <out>/evaluation*.csv|.md                 test-set tables (paper Tables 2 / 3)
    <out>/run/run.json  <out>/run/log.csv     provenance (written before training), log
    <out>/run/checkpoint/                     removed after success unless keep_checkpoint

``python -m analyses.train_models`` is its command line; the training experiments
(:mod:`~hypo.study.experiments.model_debugging` and its kin) call it directly.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import tensorflow as tf

from hypo import cohort as cohort_io
from hypo.nets.cards import leaked_patients, read_card
from hypo.nets.data import AugmentConfig
from hypo.nets.io import make_card, save_model
from hypo.nets.training import TrainConfig, prepare_store, train_on_store
from hypo.paths import default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.study.assess import evaluate_on_store
from hypo.study.experiments.frame import ExperimentError


@dataclass(frozen=True)
class TrainingRun:
    """One training run (defaults: the paper's code; ``architecture="mrs"`` changes the
    epochs to 400 and the shift to 0.3 unless given).

    Parameters
    ----------
    architecture : str
        :data:`hypo.nets.architectures.ARCHITECTURES` key (not ``gap3d``).
    out : Path
        Model folder, e.g. ``models/<name>``.
    cohort : Path or None
        Cohort folder; None = the synthetic development cohort.
    size, normalization : preprocessing (image size in pixels, ``zscore`` or ``tf``).
    epochs : int or None
        Maximum epochs; None = 100 (mrs: 400).
    augment, horizontal_flip, shift, rotation, zoom : augmentation (``shift`` None = 0.2,
        mrs 0.3; ``rotation`` in degrees; a horizontal flip swaps hemispheres).
    init_from : Path or None
        Model folder whose weights start this run where layers match; refused if it
        trained or validated on one of this run's test patients.
    exclude_test_of : Path or None
        Leave out the test patients of this model folder.
    n_boot : int
        Patient-bootstrap replicates of the evaluation.
    logical_cpus : int or None
        Split the CPU into N logical devices (to try ``strategy="mirrored"``).
    """

    architecture: str
    out: Path
    cohort: Path | None = None
    size: int = 192
    normalization: str = "zscore"
    epochs: int | None = None
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 10
    seed: int = 0
    split_seed: int = 0
    augment: bool = True
    horizontal_flip: bool = False
    shift: float | None = None
    rotation: float = 20.0
    zoom: float = 0.5
    class_weight: bool = True
    negative_fraction: float | None = None
    precision: str = "float32"
    strategy: str | None = None
    logical_cpus: int | None = None
    init_from: Path | None = None
    exclude_test_of: Path | None = None
    aux_lesion_area: float = 0.0
    monitor: str = "val_loss"
    n_boot: int = 2000
    resume: bool = False
    keep_checkpoint: bool = False
    quiet: bool = False

    @property
    def is_mrs(self) -> bool:
        return self.architecture == "mrs"

    def train_config(self) -> TrainConfig:
        """The :class:`hypo.nets.training.TrainConfig` of this run."""
        augment = AugmentConfig(
            enabled=self.augment,
            shift=self.shift if self.shift is not None else (0.3 if self.is_mrs else 0.2),
            rotation_deg=self.rotation,
            zoom=self.zoom,
            horizontal_flip=self.horizontal_flip,
        )
        return TrainConfig(
            architecture=self.architecture,
            epochs=self.epochs or (400 if self.is_mrs else 100),
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            seed=self.seed,
            augment=augment,
            class_weight=self.class_weight,
            negative_fraction=self.negative_fraction,
            precision=self.precision,
            strategy=self.strategy,
            init_weights=str(self.init_from) if self.init_from else None,
            aux_lesion_area=self.aux_lesion_area,
            monitor=self.monitor,
        )


def split_cpu(n: int) -> None:
    """Split the CPU into ``n`` logical TensorFlow devices (before any model is built)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def training_slices(run: TrainingRun):
    """(cohort, slice store) of ``run.cohort`` (default: the development cohort)."""
    cdir = run.cohort or default_cohort_dir("dev")
    if not Path(cdir).exists():
        raise ExperimentError(
            f"cohort folder {cdir} does not exist; make it first (see README) or pass --cohort"
        )
    cohort = cohort_io.load(cdir)
    pre = PreprocessConfig(size=run.size, normalization=run.normalization)
    return cohort, build_slice_store(cohort, pre, progress=not run.quiet)


def check_init_from(run: TrainingRun, store, left_out) -> None:
    """No patient this run tests on may have trained or early-stopped the start model."""
    if not run.init_from:
        return
    _, planned, _ = prepare_store(
        store, run.architecture, run.split_seed, exclude_patients=left_out
    )
    leak = leaked_patients(read_card(run.init_from), {"test_patients": planned.test})
    if leak:
        raise ExperimentError(
            f"--init-from {run.init_from}: that model trained or validated on {len(leak)} of "
            f"this run's test patients (e.g. {leak[:3]}); train it with --exclude-test-of "
            "a model of this split, or drop --init-from"
        )


def train_model(run: TrainingRun, store=None, command: str = "") -> dict:
    """Train, evaluate and save one model; return its card.

    ``store`` injects a ready slice store (tests, the training experiments); ``command``
    is the command line recorded in the card and the run's provenance.
    """
    if run.logical_cpus:
        split_cpu(run.logical_cpus)
    cohort = None
    if store is None:
        cohort, store = training_slices(run)
    config = run.train_config()
    left_out = read_card(run.exclude_test_of)["test_patients"] if run.exclude_test_of else []
    check_init_from(run, store, left_out)
    out = Path(run.out)
    result, labels, split, sl = train_on_store(
        store,
        out / "run",
        config,
        split_seed=run.split_seed,
        resume=run.resume,
        command=command,
        verbose=0 if run.quiet else "auto",
        exclude_patients=left_out,
    )
    model = result.model
    ev = evaluate_on_store(
        model,
        store,
        run.architecture,
        split.test,
        out,
        cohort=cohort,
        train_patients=split.train,
        batch_size=run.batch_size,
        n_boot=run.n_boot,
        seed=run.seed,
    )
    meta = getattr(store, "meta", {}) or {}
    card = make_card(
        run.architecture,
        model,
        sl.classes,
        split=split,
        cohort={
            "id": store.cohort_id,
            "hash": store.cohort_hash,
            "generator_hash": meta.get("generator_hash"),
        },
        preprocessing=asdict(store.config),
        metrics={"test": ev.card_metrics()},
        command=command,
        training=config.to_dict(),
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        class_weights={str(k): v for k, v in result.class_weights.items()},
        excluded_patients=sl.excluded_patients,
        n_excluded_patients=len(sl.excluded_patients),
        label_source="lesion_visible (reader's slice label)",
        init_from=str(run.init_from) if run.init_from else None,
        left_out_patients=sorted(map(str, left_out)),
    )
    save_model(model, out, card)
    if not run.keep_checkpoint:
        shutil.rmtree(out / "run" / "checkpoint", ignore_errors=True)
    m = card["metrics"]["test"]
    print(
        f"{run.architecture}: best epoch {result.best_epoch + 1}/{len(result.history)}, test "
        f"accuracy {m['accuracy']:.4f} {m.get('accuracy_ci')}, NLL {m['nll']:.4f} -> {out}"
    )
    return card
