"""Command-line plumbing of the paper's experiments (``python -m analyses.<name>``).

The experiments themselves are library code in :mod:`hypo.study.experiments` (one module
per experiment, the shared frame in :mod:`hypo.study.experiments.frame`); this module
holds what only a command line needs: the options every experiment shares, their
translation into :class:`~hypo.study.experiments.frame.RunSettings`, and the exit code of
an :class:`~hypo.study.experiments.frame.ExperimentError`::

    from analyses._experiment import experiment_parser, run_cli, settings_of
    from hypo.study.experiments import mirroring

    p = experiment_parser("mirroring", __doc__)
    args = p.parse_args(argv)
    return run_cli("mirroring", lambda: mirroring.run(settings_of(args), cfg))
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hypo.study.experiments.frame import (
    MRS_MODEL,
    QUICK_PATIENTS,
    REPORTS,
    STROKE_MODEL,
    ExperimentError,
    RunSettings,
    stage,
    write_experiment,
)
from hypo.study.experiments.training import CPU, TrainingSetting, training_setting

__all__ = [
    "ExperimentError",
    "MRS_MODEL",
    "REPORTS",
    "STROKE_MODEL",
    "add_cam_options",
    "add_setting_options",
    "cam_config",
    "experiment_parser",
    "n_boot_of",
    "run_cli",
    "settings_of",
    "setting_from_args",
    "stage",
    "write_experiment",
]


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


def settings_of(args) -> RunSettings:
    """The shared settings of parsed ``args``; the provenance records every option."""
    return RunSettings(
        out=Path(args.out),
        model_dir=getattr(args, "model", None),
        cohort=args.cohort,
        quick=bool(args.quick),
        quick_patients=int(args.quick_patients),
        seed=int(args.seed),
        quiet=bool(args.quiet),
        record=vars(args),
    )


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
    kw = dict(
        methods=tuple(args.methods),
        max_slices=args.max_slices,
        n_examples=args.examples,
        seed=args.seed,
        n_boot=200 if args.quick else d.n_boot,
    )
    if hasattr(args, "layer"):
        kw["layer"] = args.layer
    return config_cls(**{**kw, **fields})


def add_setting_options(p, default: TrainingSetting = CPU) -> None:
    """``--full``, ``--size``, ``--patients``, ``--epochs``, ``--patience``, ``--batch-size``,
    ``--split-seed``, ``--n-boot``, ``--precision`` (the training experiments)."""
    p.add_argument(
        "--full", action="store_true", help="the paper's setting: 192 px, all patients, 100 epochs"
    )
    p.add_argument("--size", type=int, default=None, help=f"pixels (default {default.size})")
    p.add_argument(
        "--patients",
        type=int,
        default=None,
        help=f"patients of the cohort (default {default.patients}; 0 = all)",
    )
    p.add_argument("--epochs", type=int, default=None, help=f"default {default.epochs}")
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates (default 2000)")
    p.add_argument(
        "--precision",
        default=None,
        choices=["float32", "mixed_bfloat16"],
        help="training precision (default float32)",
    )


def setting_from_args(args, default: TrainingSetting = CPU) -> TrainingSetting:
    """The :class:`TrainingSetting` of ``--quick``/``--full``/default plus explicit options."""
    return training_setting(
        default,
        quick=args.quick,
        full=args.full,
        seed=args.seed,
        split_seed=args.split_seed,
        size=args.size,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        patients=args.patients,
        precision=getattr(args, "precision", None),
    )


def n_boot_of(args) -> int:
    """``--n-boot``, or 50 on a quick run and 2000 otherwise."""
    return int(args.n_boot) if args.n_boot is not None else (50 if args.quick else 2000)


def run_cli(name: str, call) -> int:
    """``call()``; an :class:`ExperimentError` (or a bad value or missing file) becomes a
    message on stderr and exit code 2."""
    try:
        call()
    except (ExperimentError, ValueError, FileNotFoundError) as e:
        stage(name, f"error: {e}")
        return 2
    return 0
