"""Shared plumbing of the paper's experiments (``python -m analyses.<name>``).

Every experiment of the paper's section 4 follows the same frame: a cohort (default: the
synthetic analysis cohort, whose patients no shipped model has seen), a model folder, a
slice store built with the model card's preprocessing, held-out slices only, and a report
folder ``reports/<name>/`` with figures, CSV tables, ``report.md``/``report.html`` and
``provenance.json``. This module holds that frame so each experiment holds only its
science.

    from analyses._experiment import experiment_parser, open_inputs, write_experiment

    p = experiment_parser("mirroring", __doc__)
    args = p.parse_args(argv)
    inp = open_inputs(args)              # cohort, store, model, card, held-out slice rows
    ...
    write_experiment(args.out, "mirroring", tables={"mirroring": df}, sections=[...],
                     config=vars(args), inputs=inp)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import file_hash, write_table_atomic
from hypo.paths import ANALYSIS_COHORT, REPO_ROOT, data_dir, default_cohort_dir

STROKE_MODEL = REPO_ROOT / "models" / "stroke-gap-128"
MRS_MODEL = REPO_ROOT / "models" / "mrs-gap-128"
REPORTS = REPO_ROOT / "reports"
#: Patients of the synthetic cohort a ``--quick`` run generates (seconds, for tests).
QUICK_PATIENTS = 12


class ExperimentError(RuntimeError):
    """An experiment cannot run on these inputs (the message says which and why)."""


def stage(name: str, msg: str, quiet: bool = False) -> None:
    """One progress line on stderr, prefixed with the experiment's name."""
    if not quiet:
        print(f"[{name}] {msg}", file=sys.stderr, flush=True)


def experiment_parser(name: str, doc: str | None, model: Path | None = STROKE_MODEL):
    """An argument parser with the options every experiment shares.

    ``--cohort DIR`` (a researcher's own cohort; default the synthetic analysis cohort),
    ``--model DIR`` (default ``model``), ``--out DIR`` (default ``reports/<name>``),
    ``--quick`` (a small synthetic cohort, for tests), ``--quick-patients``, ``--seed``,
    ``--quiet``. Add experiment-specific options to the returned parser.
    """
    p = argparse.ArgumentParser(
        prog=f"python -m analyses.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cohort", type=Path, default=None, help="cohort folder (default: synthetic)")
    if model is not None:
        p.add_argument("--model", type=Path, default=model, help=f"model folder (default {model})")
    p.add_argument("--out", type=Path, default=REPORTS / name)
    p.add_argument("--quick", action="store_true", help="a small run (tests, a first look)")
    p.add_argument("--quick-patients", type=int, default=QUICK_PATIENTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def add_cam_options(p, defaults, what: str = "lesion slices", layer: bool = True) -> None:
    """The CAM options of the map experiments: ``--methods``, ``--layer``, ``--max-slices``,
    ``--examples`` (``defaults``: the experiment's config dataclass instance)."""
    p.add_argument("--methods", nargs="+", default=list(defaults.methods))
    if layer:
        p.add_argument("--layer", default=None, help="evaluation layer (default: card's cam_layer)")
    p.add_argument("--max-slices", type=int, default=None, help=f"sample at most N {what}")
    p.add_argument("--examples", type=int, default=defaults.n_examples, help="figure slices")


def cam_config(args, config_cls, **fields):
    """``config_cls`` from the options of :func:`add_cam_options` (+ ``fields``); a quick run
    draws 200 bootstrap replicates."""
    d = config_cls()
    kw = dict(methods=tuple(args.methods), max_slices=args.max_slices, n_examples=args.examples,
              seed=args.seed, n_boot=200 if args.quick else d.n_boot)  # fmt: skip
    if hasattr(args, "layer"):
        kw["layer"] = args.layer
    return config_cls(**{**kw, **fields})


def run_cli(name: str, run, args, cfg) -> int:
    """``run(args, cfg)``; an :class:`ExperimentError` becomes a message and exit code 2."""
    try:
        run(args, cfg)
    except ExperimentError as e:
        stage(name, f"error: {e}")
        return 2
    return 0


def resolve_cohort(cohort: Path | None, quick: bool, quick_patients: int, progress: bool = True):
    """Load ``cohort``, or the synthetic analysis cohort (generated when missing).

    ``quick`` generates a small cohort of ``quick_patients`` patients instead (same seed as
    the analysis cohort, its own folder).
    """
    import hypo.cohort as hc

    if cohort is not None:
        root = Path(cohort)
        if not root.is_dir():
            raise ExperimentError(f"--cohort {root}: no such folder")
        return hc.load(root)
    from hypo.cohort.synthetic import generate_cohort

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
    from hypo.features.anatomy import BRAIN, anatomy_for_store

    labels = np.asarray(anatomy_for_store(store, progress=progress).labels[rows])
    return (labels & BRAIN) > 0, "image-derived (hypo.features.anatomy)"


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
        return np.asarray(self.store.images[np.asarray(rows)], dtype=np.float32)[..., None]

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


def open_inputs(args, model_dir: Path | None = None, progress: bool | None = None) -> Inputs:
    """Cohort, slice store (the card's preprocessing), model and held-out rows of ``args``.

    Slices of patients the model trained or validated on (same cohort id) are never
    analysed; they are listed in ``excluded_patients``.
    """
    from hypo.nets.cards import read_card as load_model_card
    from hypo.nets.cards import training_patients
    from hypo.nets.io import load_model
    from hypo.preprocess import PreprocessConfig, build_slice_store

    progress = (not getattr(args, "quiet", False)) if progress is None else progress
    model_dir = check_model_dir(model_dir or args.model)
    card = load_model_card(model_dir)
    cohort = resolve_cohort(args.cohort, args.quick, args.quick_patients, progress)
    pre = dict(card.get("preprocessing") or {})
    config = PreprocessConfig(**pre) if pre else PreprocessConfig()
    store = build_slice_store(cohort, config, progress=progress)
    model = load_model(model_dir, input_shape=(config.size, config.size, 1))
    cid, seen = training_patients(card)
    pids = store.table["participant_id"].astype(str).to_numpy()
    leak = (
        np.isin(pids, list(seen)) if cid in (None, cohort.cohort_id) else np.zeros(len(pids), bool)
    )
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
        The run's settings (e.g. ``vars(args)``), recorded in the provenance.
    inputs : Inputs, optional
        Cohort and model whose hashes go into the provenance.
    started : float, optional
        ``time.perf_counter()`` at the start; the runtime is recorded.
    """
    from hypo.report.provenance import collect_provenance, write_provenance
    from hypo.report.writer import write_report

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
