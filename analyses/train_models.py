"""Train one of the paper's CNNs on a cohort and ship it with its model card.

Command line of :func:`hypo.study.experiments.train_models.train_model` (its module
docstring is the ``--help`` text).

    python -m analyses.train_models --model gap --cohort DIR --size 128 --epochs 30 \\
        --out models/stroke-gap-128
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hypo.study.experiments.train_models as experiment  # noqa: E402
from hypo.nets.architectures import ARCHITECTURES  # noqa: E402
from hypo.study.experiments.frame import ExperimentError  # noqa: E402
from hypo.study.experiments.train_models import TrainingRun, train_model  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analyses.train_models",
        description=experiment.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, choices=[a for a in ARCHITECTURES if a != "gap3d"])
    p.add_argument("--cohort", type=Path, default=None, help="cohort folder (default: dev)")
    p.add_argument("--size", type=int, default=192, help="image size in pixels (paper: 192)")
    p.add_argument("--normalization", default="zscore", choices=["zscore", "tf"])
    p.add_argument("--epochs", type=int, default=None, help="default 100 (mrs: 400)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="weights, dropout, shuffles, augmentation")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--horizontal-flip",
        action="store_true",
        help="mirror left-right in augmentation (swaps hemispheres; off by default)",
    )
    p.add_argument("--shift", type=float, default=None, help="default 0.2 (mrs: 0.3)")
    p.add_argument("--rotation", type=float, default=20.0, help="degrees (paper code: 20)")
    p.add_argument("--zoom", type=float, default=0.5, help="zoom range (paper code: 0.5)")
    p.add_argument("--no-class-weight", action="store_true")
    p.add_argument(
        "--negative-fraction",
        type=float,
        default=None,
        help="keep this fraction of lesion-free training slices",
    )
    p.add_argument(
        "--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"]
    )
    p.add_argument("--strategy", default=None, choices=["mirrored"])
    p.add_argument(
        "--logical-cpus",
        type=int,
        default=None,
        help="split the CPU into N logical devices (to try --strategy mirrored)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="model folder whose weights start this run where layers match (e.g. a "
        "stroke model for the mRS model); refused if it saw a test patient",
    )
    p.add_argument(
        "--exclude-test-of",
        type=Path,
        default=None,
        help="leave out the test patients of this model folder (to train a "
        "backbone for it without touching its test set)",
    )
    p.add_argument(
        "--aux-lesion-area",
        type=float,
        default=0.0,
        help="weight of an auxiliary loss on the log lesion area of each slice (0 = off)",
    )
    p.add_argument(
        "--monitor",
        default="val_loss",
        choices=["val_loss", "val_outcome_auc"],
        help="early stopping / best weights follow this (val_outcome_auc: mrs only)",
    )
    p.add_argument("--n-boot", type=int, default=2000, help="patient bootstrap replicates")
    p.add_argument("--out", type=Path, required=True, help="model folder, e.g. models/<name>")
    p.add_argument("--resume", action="store_true", help="continue from <out>/run/checkpoint")
    p.add_argument("--keep-checkpoint", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_of(args) -> TrainingRun:
    """The :class:`TrainingRun` of parsed ``args``."""
    return TrainingRun(
        architecture=args.model,
        out=args.out,
        cohort=args.cohort,
        size=args.size,
        normalization=args.normalization,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        split_seed=args.split_seed,
        augment=not args.no_augment,
        horizontal_flip=args.horizontal_flip,
        shift=args.shift,
        rotation=args.rotation,
        zoom=args.zoom,
        class_weight=not args.no_class_weight,
        negative_fraction=args.negative_fraction,
        precision=args.precision,
        strategy=args.strategy,
        logical_cpus=args.logical_cpus,
        init_from=args.init_from,
        exclude_test_of=args.exclude_test_of,
        aux_lesion_area=args.aux_lesion_area,
        monitor=args.monitor,
        n_boot=args.n_boot,
        resume=args.resume,
        keep_checkpoint=args.keep_checkpoint,
        quiet=args.quiet,
    )


def main(argv: list[str] | None = None, store=None) -> dict:
    """Run the CLI; ``store`` injects a ready slice store (tests). Returns the card."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    command = "python -m analyses.train_models " + shlex.join(argv)
    try:
        return train_model(run_of(args), store=store, command=command)
    except ExperimentError as e:
        raise SystemExit(str(e)) from e


if __name__ == "__main__":
    main()
