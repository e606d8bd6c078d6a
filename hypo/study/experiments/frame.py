"""The frame every experiment of the paper's section 4 shares.

A cohort (default: the synthetic analysis cohort, whose patients no shipped model has
seen), a model folder, a slice store built with the model card's preprocessing, held-out
slices only, and a report folder with figures, CSV tables, ``report.md``/``report.html``
and ``provenance.json``. Each experiment module holds only its science::

    from hypo.study.experiments.frame import RunSettings, open_inputs, write_experiment

    settings = RunSettings(out=Path("reports/mirroring"), quick=True)
    inputs = open_inputs(settings)       # cohort, store, model, card, held-out slice rows
    ...
    write_experiment(settings.out, "mirroring", tables={"mirroring": df}, sections=[...],
                     config=settings.record_of(cfg), inputs=inputs)

Names: ``model_dir`` is a model folder (``model.keras`` + ``card.json``), ``model`` the
loaded Keras model, ``card`` its model card (a dict).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import hypo.cohort as hc
from hypo._util import file_hash, write_table_atomic
from hypo.cohort.orientation import axial_slices
from hypo.cohort.requirements import Requirements, format_problems, preflight
from hypo.cohort.synthetic import generate_cohort
from hypo.features.anatomy import BRAIN, anatomy_for_store
from hypo.nets.cards import leaked_patients, read_card
from hypo.nets.io import load_model
from hypo.paths import ANALYSIS_COHORT, REPO_ROOT, data_dir, default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.report.cam_panels import METHOD_NAMES, CamExample, write_cam_panels
from hypo.report.provenance import collect_provenance, write_provenance
from hypo.report.writer import write_report

STROKE_MODEL = REPO_ROOT / "models" / "stroke-gap-128"
MRS_MODEL = REPO_ROOT / "models" / "mrs-gap-128"
REPORTS = REPO_ROOT / "reports"
#: Patients of the synthetic cohort a ``quick`` run generates (seconds, for tests).
QUICK_PATIENTS = 12
#: CAM methods of the paper's panels (hypo.cam engine keys).
PANEL_METHODS = ("gradcam", "gradcampp")
SYNTHETIC_WARNING = (
    "Synthetic cohort: the slices are generated phantoms, not patients; the numbers "
    "describe the model on this phantom, not on clinical DWI."
)
QUICK_WARNING = "Quick run (--quick): a small cohort; not for inference."


#: What every map experiment needs of a researcher's cohort (checked before the model).
REQUIREMENTS = Requirements(
    analysis="the paper's experiments",
    lesion_labels="the experiments measure the maps of lesion slices",
)


class ExperimentError(RuntimeError):
    """An experiment cannot run on these inputs (the message says which and why)."""


def stage(name: str, msg: str, quiet: bool = False) -> None:
    """One progress line on stderr, prefixed with the experiment's name."""
    if not quiet:
        print(f"[{name}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunSettings:
    """Where an experiment reads and writes: the settings every experiment shares.

    Parameters
    ----------
    out : Path
        Report folder.
    model_dir : Path or None
        Model folder (``model.keras`` + ``card.json``); None for experiments that train
        their own models.
    cohort : Path or None
        A researcher's cohort folder; None = the synthetic analysis cohort (generated when
        missing) or, with ``quick``, a small synthetic cohort.
    quick : bool
        A small run (tests, a first look).
    quick_patients : int
        Patients of the quick cohort.
    seed : int
        Seed of samples, bootstraps and training.
    quiet : bool
        No progress lines.
    record : mapping, optional
        The settings written into ``provenance.json`` (a command line passes its parsed
        options); default: these fields.
    """

    out: Path
    model_dir: Path | None = None
    cohort: Path | None = None
    quick: bool = False
    quick_patients: int = QUICK_PATIENTS
    seed: int = 0
    quiet: bool = False
    record: Mapping | None = field(default=None, compare=False)

    @property
    def progress(self) -> bool:
        return not self.quiet

    def say(self, name: str):
        """A progress printer ``say(msg)`` for experiment ``name``."""
        return lambda msg: stage(name, msg, self.quiet)

    def settings_record(self) -> dict:
        """The run's settings as recorded in the provenance."""
        if self.record is not None:
            return dict(self.record)
        return {k: v for k, v in asdict(self).items() if k != "record"}

    def record_of(self, cfg=None, **more) -> dict:
        """:meth:`settings_record` plus an experiment config dataclass and ``more``."""
        return {**self.settings_record(), **(asdict(cfg) if cfg is not None else {}), **more}

    def warnings(self, cohort) -> list[str]:
        """The synthetic-cohort and quick-run warnings that apply."""
        out = [SYNTHETIC_WARNING] if getattr(cohort, "is_synthetic", False) else []
        return out + ([QUICK_WARNING] if self.quick else [])


def resolve_cohort(cohort: Path | None, quick: bool, quick_patients: int, progress: bool = True):
    """Load ``cohort``, or the synthetic analysis cohort (generated when missing).

    ``quick`` generates a small cohort of ``quick_patients`` patients instead (same seed as
    the analysis cohort, its own folder).
    """
    if cohort is not None:
        root = Path(cohort)
        if not root.is_dir():
            raise ExperimentError(f"--cohort {root}: no such folder")
        problems = preflight(root, REQUIREMENTS)
        if problems:
            raise ExperimentError(
                f"cohort {root} cannot run the paper's experiments ({len(problems)} "
                f"problem(s)):\n{format_problems(problems)}"
            )
        return hc.load(root)
    seed = ANALYSIS_COHORT["seed"]
    if quick:
        n = int(quick_patients)
        root = data_dir() / "synthetic" / f"quick-analysis-n{n}-s{seed}"
    else:
        n = ANALYSIS_COHORT["patients"]
        root = default_cohort_dir("analysis")
    generate_cohort(root, n_patients=n, seed=seed, progress=progress)
    return hc.load(root)


def check_model_dir(path: Path) -> Path:
    """A model folder with ``model.keras`` and ``card.json``, or an error saying how to
    make one."""
    path = Path(path)
    missing = [f for f in ("model.keras", "card.json") if not (path / f).is_file()]
    if missing:
        raise ExperimentError(
            f"model {path}: missing {missing}; train one with `python -m analyses.train_models "
            "--model gap --out DIR` or pass --model DIR"
        )
    return path


def store_brain(store, rows, progress: bool = False, derive: bool = True):
    """Brain masks of store ``rows`` (bool) and where they come from.

    The ground truth on a synthetic cohort; otherwise the image-derived brain of
    :func:`hypo.features.anatomy.anatomy_for_store` (computed once per store and cached),
    or ``(None, "none")`` when ``derive`` is False.
    """
    rows = np.asarray(rows)
    if "truth_brain" in store.masks:
        return np.asarray(store.masks["truth_brain"][rows]).astype(bool), "ground truth"
    if not derive:
        return None, "none"
    labels = np.asarray(anatomy_for_store(store, progress=progress).labels[rows])
    return (labels & BRAIN) > 0, "image-derived (hypo.features.anatomy)"


def store_images(store, rows) -> np.ndarray:
    """Model-ready images ``(n, size, size, 1)`` float32 of store ``rows``."""
    return np.asarray(store.images[np.asarray(rows)], dtype=np.float32)[..., None]


@dataclass
class Inputs:
    """What an experiment reads: cohort, slice store, model, card and held-out rows."""

    cohort: object
    store: object
    model: object
    card: dict
    model_dir: Path
    #: Store row indices of slices of patients the model neither trained nor validated on.
    held_out: np.ndarray
    #: Patients left out because the model trained or validated on them.
    excluded_patients: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.store.config.size)

    @property
    def classes(self) -> list[str]:
        """The model card's class names."""
        return [str(c) for c in self.card.get("classes", [])]

    @property
    def cam_layer(self) -> str | None:
        """The model card's CAM layer (None: the engine's default, the last activation)."""
        return self.card.get("cam_layer")

    def rows(self, lesion: bool | None = None) -> np.ndarray:
        """Held-out store rows; ``lesion=True`` only slices whose lesion mask is non-empty
        (ground truth or the cohort's mask), ``False`` only those without."""
        idx = self.held_out
        if lesion is None:
            return idx
        m = self.lesion_masks(idx).reshape(len(idx), -1).any(axis=1)
        return idx[m if lesion else ~m]

    def images(self, rows: np.ndarray) -> np.ndarray:
        """Model-ready images ``(n, size, size, 1)`` float32 of store ``rows``."""
        return store_images(self.store, rows)

    def lesion_masks(self, rows: np.ndarray) -> np.ndarray:
        """Lesion masks of store ``rows`` (bool); an error if the cohort has none."""
        if "lesion" not in self.store.masks:
            raise ExperimentError(
                f"cohort {self.store.cohort_id}: no lesion masks; this experiment measures "
                "explanations against lesion masks (derivatives/lesion_masks/...)"
            )
        return np.asarray(self.store.masks["lesion"][np.asarray(rows)]).astype(bool)

    def brain_masks(self, rows: np.ndarray) -> np.ndarray | None:
        """Ground-truth brain masks of store ``rows`` (bool) on a synthetic cohort, else None
        (then :func:`store_brain` gives the image-derived brain)."""
        return store_brain(self.store, rows, derive=False)[0]


def card_cohort_id(card: dict) -> str | None:
    """The id of the cohort a model card's model was trained on (None: not recorded)."""
    for f in ("train_patients", "val_patients"):
        if f not in card:
            raise ExperimentError(f"model card lacks {f!r}; cannot guard against leakage")
    cohort = card.get("cohort") or {}
    cid = cohort.get("id") if isinstance(cohort, dict) else None
    return cid or card.get("cohort_id")


def open_inputs(settings: RunSettings, model_dir: Path | None = None) -> Inputs:
    """Cohort, slice store (the card's preprocessing), model and held-out rows.

    Slices of patients the model trained or validated on (same cohort id, or a card without
    one) are never analysed; they are listed in ``excluded_patients``.
    """
    progress = settings.progress
    model_dir = check_model_dir(model_dir or settings.model_dir)
    card = read_card(model_dir)
    cohort = resolve_cohort(settings.cohort, settings.quick, settings.quick_patients, progress)
    pre = dict(card.get("preprocessing") or {})
    config = PreprocessConfig(**pre) if pre else PreprocessConfig()
    store = build_slice_store(cohort, config, progress=progress)
    model = load_model(model_dir, input_shape=(config.size, config.size, 1))
    pids = store.table["participant_id"].astype(str).to_numpy()
    cid = card_cohort_id(card)
    seen = (
        leaked_patients(card, {"test_patients": sorted(set(pids))})
        if cid in (None, cohort.cohort_id)
        else []
    )
    leak = np.isin(pids, seen)
    return Inputs(
        cohort=cohort,
        store=store,
        model=model,
        card=card,
        model_dir=model_dir,
        held_out=np.flatnonzero(~leak),
        excluded_patients=sorted(set(pids[leak])),
    )


def write_experiment(
    out: str | os.PathLike,
    name: str,
    tables: Mapping[str, pd.DataFrame],
    sections: Sequence,
    config: Mapping | None = None,
    inputs: Inputs | None = None,
    intro: Sequence[str] = (),
    warnings: Sequence[str] = (),
    extra_provenance: Mapping | None = None,
    started: float | None = None,
) -> dict[str, Path]:
    """Write ``<name>.csv`` tables, ``report.md``/``report.html`` and ``provenance.json``.

    Parameters
    ----------
    tables : mapping
        ``{stem: DataFrame}``, each written as ``<out>/<stem>.csv``.
    sections : sequence
        Report sections as :func:`hypo.report.writer.write_report` takes them; figure paths
        relative to ``out``.
    config : mapping
        The run's settings, recorded in the provenance.
    inputs : Inputs, optional
        Cohort and model whose hashes go into the provenance.
    started : float, optional
        ``time.perf_counter()`` at the start; the runtime is recorded.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, df in tables.items():
        paths[stem] = write_table_atomic(out / f"{stem}.csv", df)
    paths.update(write_report(out, sections, title=f"hypo: {name}", intro=intro, warnings=warnings))
    parts = {"experiment": name, "config": dict(config or {})}
    if inputs is not None:
        parts["cohort"] = {
            "id": inputs.store.cohort_id,
            "content_hash": inputs.store.cohort_hash,
            "slice_store": str(inputs.store.path.name),
            "excluded_training_patients": len(inputs.excluded_patients),
        }
        parts["model"] = {
            "path": str(inputs.model_dir),
            "sha256": file_hash(inputs.model_dir / "model.keras"),
            "architecture": inputs.card.get("architecture"),
        }
    if started is not None:
        parts["runtime_s"] = round(time.perf_counter() - started, 2)
    parts.update(extra_provenance or {})
    paths["provenance"] = write_provenance(out / "provenance.json", collect_provenance(**parts))
    return paths


# --------------------------------------------------------------------------- shared helpers


def predict_proba(inp: Inputs, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(n, n_classes)`` of store ``rows``, read in chunks so a large
    store never sits in memory at once."""
    rows = np.asarray(rows)
    out = []
    for s in range(0, len(rows), 4 * batch_size):
        x = inp.images(rows[s : s + 4 * batch_size])
        out.append(np.asarray(inp.model.predict(x, batch_size=batch_size, verbose=0)))
    k = int(inp.model.output_shape[-1])
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, k))


def method_names(methods) -> str:
    """The paper's names of CAM methods, comma-separated."""
    return ", ".join(METHOD_NAMES.get(m, m) for m in methods)


def setting_lines(inp: Inputs, what: str, extra: list[str] | None = None) -> list[str]:
    """Report paragraphs stating cohort, model and (for synthetic data) that it is synthetic."""
    store = inp.store
    n_pat = store.table["participant_id"].iloc[inp.held_out].nunique()
    lines = [
        f"Setting: cohort `{store.cohort_id}`; {what}; {len(inp.held_out)} held-out slices of "
        f"{n_pat} patients at {inp.size} px. Model `{inp.model_dir}` "
        f"({inp.card.get('architecture')}, classes {list(inp.card.get('classes', []))}); "
        f"{len(inp.excluded_patients)} patient(s) left out because the model trained or "
        "validated on them.",
    ]
    if getattr(inp.cohort, "is_synthetic", False):
        lines.append(
            "This cohort is SYNTHETIC (generated by hypo.cohort.synthetic): the numbers "
            "describe the method on simulated images, not patients."
        )
    return lines + list(extra or [])


def shown(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """``df`` with floats rounded for the report (the CSV keeps full precision)."""
    return df.round(digits)


def largest_lesions(inp: Inputs, rows: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` largest lesions among store ``rows``, one per patient (sorted;
    ties by row)."""
    area = inp.lesion_masks(rows).reshape(len(rows), -1).sum(axis=1)
    pids = inp.store.table["participant_id"].astype(str).to_numpy()[rows]
    t = pd.DataFrame({"row": rows, "pid": pids, "area": area})
    t = t.sort_values(["area", "row"], ascending=[False, True]).drop_duplicates("pid")
    return np.sort(t["row"].to_numpy()[:n])


def cam_examples(inp: Inputs, rows, cams, class_names, model_label="", lesion_masks=None):
    """:class:`hypo.report.cam_panels.CamExample` of store ``rows`` from a CamResult.

    ``cams`` was computed on ``inp.images(rows)`` for every class (all methods of
    :data:`PANEL_METHODS` present); the maps are keyed ``(method, class name)``.
    ``lesion_masks`` (one per row) default to the store's lesion masks when it has them.
    """
    table = inp.store.table
    if lesion_masks is None and "lesion" in inp.store.masks:
        lesion_masks = inp.lesion_masks(rows)
    volumes: dict[str, np.ndarray] = {}
    examples = []
    for i, r in enumerate(np.asarray(rows)):
        pid = str(table["participant_id"].iloc[r])
        sl = int(table["slice"].iloc[r])
        if pid not in volumes:
            volumes[pid] = axial_slices(inp.cohort.dwi(pid).data)
        maps, probs = {}, {}
        for pos, c in enumerate(cams.classes):
            name = str(class_names[c])
            probs[name] = float(cams.probabilities[i, c])
            for m in cams.methods:
                maps[m, name] = np.asarray(cams[m][i, pos], float)
        mrs = pd.to_numeric(pd.Series([table["mrs_3months"].iloc[r]]), errors="coerce").iloc[0]
        examples.append(
            CamExample(
                participant_id=pid,
                image_native=np.asarray(volumes[pid][sl], float),
                image_preprocessed=np.asarray(inp.store.images[r], float),
                maps=maps,
                probabilities=probs,
                slice_index=sl,
                mrs_3months=float(mrs),
                lesion_mask=None if lesion_masks is None else np.asarray(lesion_masks[i]),
                model=model_label,
            )
        )
    return examples


def write_method_panels(out: Path, stem: str, examples, classes, title: str) -> list[tuple]:
    """One panel figure per CAM method: ``figures/<stem>_<method>.png``.

    Raw Grad-CAM and Grad-CAM++ maps differ in scale by orders of magnitude, so each
    method gets its own figure with one raw colour scale shared by its classes and rows
    (a shared scale across methods would leave one of them blank). Returns
    ``[(relative path, method display name), ...]``.
    """
    paths = []
    for m in PANEL_METHODS:
        rel = f"figures/{stem}_{m}.png"
        name = METHOD_NAMES.get(m, m)
        write_cam_panels(
            Path(out) / rel,
            examples,
            classes=classes,
            methods=(m,),
            scale="raw",
            title=f"{title}: {name}",
        )
        paths.append((rel, name))
    return paths
