"""Cohort -> slice store -> CAMs -> anatomy -> features -> patient table -> join.

    python -m hypo.features --cohort DIR --model models/gap --out DIR
        [--layer NAME] [--method gradcam --method gradcampp] [--size 192]
        [--controls control_uniform,control_intensity] [--random-control]
        [--allow-training-patients]

Every stage is cached and resumable: the slice store (per cohort content and
preprocessing), the CAMs (chunked, :func:`hypo.cam.stream.compute_store`), the anatomy
(beside the store), the slice features (``slice_features.parquet`` with the key of its
inputs). Outputs under ``--out``: ``slice_features.parquet``, ``patient_features.*``
(+ data dictionary and Spearman matrix), ``features_joined.{parquet,csv}`` and
``features_joined_report.csv``, ``run.json``. The work is done by
:func:`hypo.features.pipeline.run_features`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hypo.features", description=__doc__)
    ap.add_argument("--cohort", required=True, type=Path)
    ap.add_argument("--model", required=True, type=Path, help="model folder (model.keras + card)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--layer", default=None, help="CAM layer (default: the card's cam_layer)")
    ap.add_argument("--method", action="append", dest="methods", help="repeatable")
    ap.add_argument("--size", type=int, default=None, help="slice size (default: the card's)")
    ap.add_argument("--controls", default="control_uniform,control_intensity")
    ap.add_argument("--random-control", action="store_true", help="Grad-CAM of a randomised model")
    ap.add_argument("--seed", type=int, default=0, help="seed of the randomised control")
    ap.add_argument("--allow-training-patients", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--max-qc-fail-fraction", type=float, default=None,
                    help="stop when more patients fail the anatomy QC (default 0.2)")  # fmt: skip
    args = ap.parse_args(argv)

    from hypo.features.pipeline import DEFAULT_METHODS, run_features

    run_features(
        args.cohort,
        args.model,
        args.out,
        layer=args.layer,
        methods=tuple(args.methods or DEFAULT_METHODS),
        controls=tuple(c for c in args.controls.split(",") if c),
        random_control=args.random_control,
        progress=not args.quiet,
        size=args.size,
        seed=args.seed,
        allow_training_patients=args.allow_training_patients,
        run_info={"argv": sys.argv if argv is None else list(argv)},
        max_qc_fail_fraction=args.max_qc_fail_fraction,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
