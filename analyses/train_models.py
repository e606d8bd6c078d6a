"""Train one of the paper's CNNs on a cohort and ship it with its model card.

    python -m analyses.train_models --model gap --cohort DIR --size 128 --epochs 30 \
        --out models/stroke-gap-128

Builds (or reuses) the slice store of ``hypo.preprocess.build_slice_store``, splits
patients (stratified, seeded), trains with early stopping and per-epoch checkpoints
(``--resume`` continues a killed run), evaluates on the test patients and writes::

    <out>/model.keras  <out>/card.json       the model and its card
    <out>/evaluation*.csv|.md                 test-set tables (paper Tables 2 / 3)
    <out>/run/run.json  <out>/run/log.csv     provenance (written before training), log
    <out>/run/checkpoint/                     removed after success unless --keep-checkpoint
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parser() -> argparse.ArgumentParser:
    from hypo.nets.architectures import ARCHITECTURES

    p = argparse.ArgumentParser(prog="python -m analyses.train_models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
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
    return p  # fmt: skip


def main(argv: list[str] | None = None, store=None) -> dict:
    """Run the CLI; ``store`` injects a ready slice store (tests). Returns the card."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    import tensorflow as tf

    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus
        )

    from hypo.nets.data import AugmentConfig
    from hypo.nets.io import make_card, save_model
    from hypo.nets.training import TrainConfig, train_on_store
    from hypo.study.assess import evaluate_on_store

    command = "python -m analyses.train_models " + shlex.join(argv)
    cohort = None
    if store is None:
        from hypo import cohort as cohort_mod
        from hypo.paths import default_cohort_dir
        from hypo.preprocess import PreprocessConfig, build_slice_store

        cdir = args.cohort or default_cohort_dir("dev")
        if not Path(cdir).exists():
            raise SystemExit(
                f"cohort folder {cdir} does not exist; make it first (see README) or pass --cohort"
            )
        cohort = cohort_mod.load(cdir)
        pre = PreprocessConfig(size=args.size, normalization=args.normalization)
        store = build_slice_store(cohort, pre, progress=not args.quiet)

    mrs = args.model == "mrs"
    augment = AugmentConfig(
        enabled=not args.no_augment,
        shift=args.shift if args.shift is not None else (0.3 if mrs else 0.2),
        rotation_deg=args.rotation,
        zoom=args.zoom,
        horizontal_flip=args.horizontal_flip,
    )
    config = TrainConfig(
        architecture=args.model,
        epochs=args.epochs or (400 if mrs else 100),
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        augment=augment,
        class_weight=not args.no_class_weight,
        negative_fraction=args.negative_fraction,
        precision=args.precision,
        strategy=args.strategy,
        init_weights=str(args.init_from) if args.init_from else None,
        aux_lesion_area=args.aux_lesion_area,
        monitor=args.monitor,
    )
    from hypo.nets.cards import leaked_patients, read_card
    from hypo.nets.training import prepare_store

    left_out = read_card(args.exclude_test_of)["test_patients"] if args.exclude_test_of else []
    if args.init_from:
        # No patient this run tests on may have trained or early-stopped the start model.
        _, planned, _ = prepare_store(store, args.model, args.split_seed, exclude_patients=left_out)
        leak = leaked_patients(read_card(args.init_from), {"test_patients": planned.test})
        if leak:
            raise SystemExit(
                f"--init-from {args.init_from}: that model trained or validated on {len(leak)} of "
                f"this run's test patients (e.g. {leak[:3]}); train it with --exclude-test-of "
                "a model of this split, or drop --init-from"
            )
    run_dir = args.out / "run"
    result, labels, split, sl = train_on_store(
        store,
        run_dir,
        config,
        split_seed=args.split_seed,
        resume=args.resume,
        command=command,
        verbose=0 if args.quiet else "auto",
        exclude_patients=left_out,
    )
    model = result.model
    ev = evaluate_on_store(
        model, store, args.model, split.test, args.out, cohort=cohort,
        train_patients=split.train, batch_size=args.batch_size, n_boot=args.n_boot,
        seed=args.seed,
    )  # fmt: skip
    meta = getattr(store, "meta", {}) or {}
    card = make_card(
        args.model,
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
        init_from=str(args.init_from) if args.init_from else None,
        left_out_patients=sorted(map(str, left_out)),
    )
    save_model(model, args.out, card)
    if not args.keep_checkpoint:
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    m = card["metrics"]["test"]
    print(
        f"{args.model}: best epoch {result.best_epoch + 1}/{len(result.history)}, test accuracy "
        f"{m['accuracy']:.4f} {m.get('accuracy_ci')}, NLL {m['nll']:.4f} -> {args.out}"
    )
    return card


if __name__ == "__main__":
    main()
