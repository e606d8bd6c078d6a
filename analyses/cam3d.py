"""3D Grad-CAM on whole volumes (paper appendix "3D XAI", Figure 18).

Command line of :mod:`hypo.study.experiments.cam3d` (its docstring is
the ``--help`` text).

    python -m analyses.cam3d [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hypo.study.experiments.cam3d as experiment
from analyses._experiment import experiment_parser, run_cli, settings_of  # noqa: E402
from hypo.study.experiments.cam3d import NAME, run, volume_setting  # noqa: E402
from hypo.study.experiments.frame import STROKE_MODEL  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = experiment_parser(NAME, experiment.__doc__, model=STROKE_MODEL)
    p.add_argument("--full", action="store_true", help="128x128x32, all patients, 100 epochs")
    p.add_argument("--grid", type=int, nargs=3, default=None, metavar=("ROWS", "COLS", "SLICES"))
    p.add_argument("--patients", type=int, default=None, help="training+validation (0 = all)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=None)
    args = p.parse_args(argv)
    n_boot = args.n_boot if args.n_boot is not None else (50 if args.quick else 2000)

    def call():
        s = volume_setting(
            quick=args.quick,
            full=args.full,
            seed=args.seed,
            grid=args.grid,
            patients=args.patients,
            epochs=args.epochs,
        )
        run(settings_of(args), s, split_seed=args.split_seed, n_boot=n_boot)

    return run_cli(NAME, call)


if __name__ == "__main__":
    raise SystemExit(main())
