"""What the training experiments share (model debugging, reproducibility, 3D CAMs).

They train their own models instead of reading a shipped one: a :class:`TrainingSetting`
(the 2-core CPU default, the paper's ``FULL`` setting, the ``QUICK`` test setting), a
training cohort and slice store, and models trained by
:func:`hypo.study.experiments.train_models.train_model` into cache folders keyed by
everything they depend on, so a killed run continues and finished models are reused.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import hypo.cohort as hc
from hypo._util import rng_for, stable_hash, write_json_atomic
from hypo.cam.sanity import spearman_per_map
from hypo.cohort.orientation import axial_slice
from hypo.cohort.synthetic import generate_cohort
from hypo.nets.cards import read_card
from hypo.nets.io import load_model
from hypo.nets.labels import task_labels
from hypo.paths import DEV_COHORT, cache_dir, default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.study.experiments.frame import ExperimentError, RunSettings, resolve_cohort
from hypo.study.experiments.train_models import TrainingRun, train_model


@dataclass
class TrainingSetting:
    """How the experiment's models are trained (defaults: the 2-core CPU setting).

    Parameters
    ----------
    size : int
        Image height and width in pixels (paper: 192).
    patients : int or None
        Patients drawn from the cohort (stratified by group, seeded); None = all.
    epochs : int
        Maximum epochs (paper code: 100).
    patience : int
        Early-stopping patience in epochs (paper code: 10).
    batch_size : int
        Slices per batch (paper: 64).
    seed : int
        Seed of weights, dropout, shuffles and augmentation (the same for every model).
    split_seed : int
        Seed of the patient-level train/validation/test split (70/15/15).
    patient_seed : int
        Seed of the patient subset.
    precision : str
        Keras mixed-precision policy of training (``float32``; ``mixed_bfloat16`` trains
        ~1.6x faster on a CPU with AVX512-BF16). CAMs and evaluation stay float32.
    """

    size: int = 96
    patients: int | None = 150
    epochs: int = 5
    patience: int = 10
    batch_size: int = 64
    seed: int = 0
    split_seed: int = 0
    patient_seed: int = 0
    precision: str = "float32"

    def identity(self) -> dict:
        """The fields that make a trained model; float32 precision is left out so that
        models trained before the field existed keep their keys."""
        d = asdict(self)
        if d["precision"] == "float32":
            del d["precision"]
        return d

    def key(self, cohort_hash: str, architecture: str, seed: int | None = None) -> dict:
        """Everything a trained model depends on (its cache folder's name hashes this)."""
        d = self.identity()
        d.update(cohort_hash=cohort_hash, architecture=architecture)
        if seed is not None:
            d["seed"] = int(seed)
        return d


#: The 2-core CPU setting (default), the paper's setting (GPU) and the test setting.
CPU = TrainingSetting()
FULL = TrainingSetting(size=192, patients=None, epochs=100, patience=10)
QUICK = TrainingSetting(size=64, patients=None, epochs=1, patience=10)


def training_setting(
    default: TrainingSetting = CPU,
    quick: bool = False,
    full: bool = False,
    seed: int = 0,
    split_seed: int = 0,
    patients: int | None = None,
    precision: str | None = None,
    **sizes,
) -> TrainingSetting:
    """``QUICK``, ``FULL`` or ``default``, with the given fields replaced.

    ``sizes``: ``size``, ``epochs``, ``patience``, ``batch_size`` (None keeps the base's);
    ``patients`` 0 means all patients.
    """
    if quick and full:
        raise ExperimentError("--quick and --full exclude each other")
    base = QUICK if quick else FULL if full else default
    s = replace(base, seed=int(seed), split_seed=int(split_seed))
    for opt, v in sizes.items():
        if v is not None:
            setattr(s, opt, int(v))
    if patients is not None:
        s.patients = None if patients == 0 else int(patients)
    if precision:
        s.precision = precision
    return s


def mode_label(settings: RunSettings, full: bool, cpu: str) -> str:
    """``--quick (test setting)``, ``--full (paper setting)`` or ``cpu``."""
    if settings.quick:
        return "--quick (test setting)"
    return "--full (paper setting)" if full else cpu


@dataclass
class Member:
    """One trained model of an experiment."""

    label: str
    architecture: str
    seed: int
    model_dir: Path
    model: object
    card: dict
    reused: bool = False
    extra: dict = field(default_factory=dict)


def training_cohort(settings: RunSettings):
    """The cohort models are trained on: ``settings.cohort``, the quick cohort, or the
    synthetic development cohort (generated when missing)."""
    if settings.cohort is not None or settings.quick:
        return resolve_cohort(
            settings.cohort, settings.quick, settings.quick_patients, settings.progress
        )
    root = default_cohort_dir("dev")
    generate_cohort(
        root, n_patients=DEV_COHORT["patients"], seed=DEV_COHORT["seed"], progress=settings.progress
    )
    return hc.load(root)


def select_patients(cohort, n: int | None, seed: int = 0) -> list[str] | None:
    """``n`` patients of ``cohort``, the same share of each ``group`` as the cohort
    (seeded); None when ``n`` is None or not smaller than the cohort."""
    pids = np.asarray(cohort.participant_ids())
    if n is None or n >= len(pids):
        return None
    if n < 10:
        raise ExperimentError(f"--patients {n}: at least 10 are needed for a 70/15/15 split")
    groups = (
        cohort.participants["group"].astype(str).reindex(pids).fillna("n/a").to_numpy()
        if "group" in cohort.participants.columns
        else np.full(len(pids), "all")
    )
    rng = rng_for(seed, "patient-subset")
    chosen = []
    uniq, counts = np.unique(groups, return_counts=True)
    quota = np.floor(counts * n / len(pids)).astype(int)
    # Largest remainders get the patients the floors left over.
    rest = n - quota.sum()
    order = np.argsort(-(counts * n / len(pids) - quota), kind="stable")
    quota[order[:rest]] += 1
    for g, q in zip(uniq, quota):
        members = pids[groups == g]
        chosen.extend(rng.choice(members, size=int(q), replace=False).tolist())
    return sorted(chosen)


def training_store(cohort, setting: TrainingSetting, progress: bool = True):
    """Slice store of the setting's patients at the setting's size (cached)."""
    pids = select_patients(cohort, setting.patients, setting.patient_seed)
    return build_slice_store(
        cohort, PreprocessConfig(size=setting.size), progress=progress, participants=pids
    )


#: Experiments share trained models: ``reproducibility``'s first seed is
#: ``model_debugging``'s GAP model when store, setting and seed agree.
SHARED_MODELS = "trained_models"


def models_root(store, setting: TrainingSetting) -> Path:
    """Cache folder of the experiments' trained models for this store and setting; one
    sub-folder per ``<architecture>-seed<seed>`` (see :func:`member_model_dir`)."""
    key = stable_hash({"store": store.path.name, **setting.identity()}, 12)
    return cache_dir() / "analyses" / SHARED_MODELS / f"{store.cohort_id}-{key}"


def member_model_dir(root: Path, architecture: str, seed: int) -> Path:
    return root / f"{architecture}-seed{seed}"


def train_member(
    store,
    model_dir: Path,
    architecture: str,
    setting: TrainingSetting,
    seed: int | None = None,
    n_boot: int = 200,
    quiet: bool = False,
    label: str | None = None,
) -> Member:
    """Train ``architecture`` on ``store`` with :func:`train_model`, or reuse the finished
    model in ``model_dir``.

    A model counts as finished when ``model_dir/done.json`` holds this setting's key; an
    unfinished folder is resumed from its last checkpoint.
    """
    seed = setting.seed if seed is None else int(seed)
    key = setting.key(store.cohort_hash, architecture, seed)
    model_dir = Path(model_dir)
    label = label or architecture
    done = model_dir / "done.json"
    if done.is_file() and (model_dir / "model.keras").is_file():
        if json.loads(done.read_text()).get("key") == key:
            model, card = load_model(model_dir), read_card(model_dir)
            return Member(label, architecture, seed, model_dir, model, card, reused=True)
    run = TrainingRun(
        architecture=architecture,
        out=model_dir,
        size=setting.size,
        epochs=setting.epochs,
        patience=setting.patience,
        batch_size=setting.batch_size,
        seed=seed,
        split_seed=setting.split_seed,
        n_boot=n_boot,
        precision=setting.precision,
        resume=True,
        quiet=quiet,
    )
    argv = [
        "--model",
        architecture,
        "--size",
        str(setting.size),
        "--epochs",
        str(setting.epochs),
        "--patience",
        str(setting.patience),
        "--batch-size",
        str(setting.batch_size),
        "--seed",
        str(seed),
        "--split-seed",
        str(setting.split_seed),
        "--n-boot",
        str(n_boot),
        "--precision",
        setting.precision,
        "--out",
        str(model_dir),
        "--resume",
    ] + (["--quiet"] if quiet else [])
    t0 = time.perf_counter()
    # train_model reports on stdout; an experiment keeps stdout free and logs to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        train_model(run, store=store, command="python -m analyses.train_models " + shlex.join(argv))
    write_json_atomic(done, {"key": key, "train_seconds": round(time.perf_counter() - t0, 1)})
    return Member(label, architecture, seed, model_dir, load_model(model_dir), read_card(model_dir))


def test_rows(store, card: dict) -> tuple[np.ndarray, np.ndarray]:
    """Store rows of the card's test patients and their stroke labels (reader's label)."""
    sl = task_labels("stroke", store.table)
    labels = np.full(len(store.table), -1, dtype=np.int64)
    labels[sl.index] = sl.y
    pid = store.table["participant_id"].astype(str).to_numpy()
    rows = np.flatnonzero(np.isin(pid, list(card["test_patients"])) & (labels >= 0))
    if len(rows) == 0:
        raise ExperimentError("the models' test patients have no labelled slice in the store")
    return rows, labels[rows]


def native_slice(cohort, pid: str, k: int) -> np.ndarray:
    """Native axial slice ``k`` of a patient (0-255, radiological view)."""
    return axial_slice(cohort.dwi(pid).data, int(k))


def describe_setting(cohort, store, setting: TrainingSetting, card: dict) -> str:
    """One paragraph naming cohort, patients, split sizes, image size and epochs."""
    synthetic = " (synthetic: generated by hypo, not patient data)" if cohort.is_synthetic else ""
    n_pat = store.table["participant_id"].nunique()
    return (
        f"Cohort `{cohort.cohort_id}`{synthetic}; {n_pat} patients "
        f"({'all' if setting.patients is None else 'a seeded, group-stratified subset'}), "
        f"{len(store.table)} slices at {setting.size} px. Patient-level split (seed "
        f"{setting.split_seed}): {len(card['train_patients'])} training, "
        f"{len(card['val_patients'])} validation, {len(card['test_patients'])} test patients. "
        f"Up to {setting.epochs} epochs (early stopping, patience {setting.patience}), "
        f"batch {setting.batch_size}, training seed {setting.seed}, {setting.precision}."
    )


def spearman_in_region(a, b, region) -> np.ndarray:
    """Spearman correlation of matching maps over each map's ``region`` pixels."""
    n = len(a)
    a = np.asarray(a, np.float64).reshape(n, -1)
    b = np.asarray(b, np.float64).reshape(n, -1)
    r = np.asarray(region, bool).reshape(n, -1)
    return np.array([spearman_per_map(a[i, r[i]][None], b[i, r[i]][None])[0] for i in range(n)])
