"""Reproducibility of explanations (paper appendix, Figure 16): two seeds, one data set.

Command line of :mod:`hypo.study.experiments.reproducibility` (its docstring is
the ``--help`` text).

    python -m analyses.reproducibility [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hypo.study.experiments.reproducibility as experiment
from analyses._experiment import (  # noqa: E402
    add_setting_options,
    experiment_parser,
    n_boot_of,
    run_cli,
    setting_from_args,
    settings_of,
)
from hypo.study.experiments.reproducibility import (  # noqa: E402
    NAME,
    ReproducibilityConfig,
    run,
)

D = ReproducibilityConfig()


def main(argv: list[str] | None = None) -> int:
    p = experiment_parser(NAME, experiment.__doc__, model=None)
    add_setting_options(p)
    p.add_argument(
        "--architecture", default=D.architecture, choices=["gap", "shallow", "dense", "flat"]
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs=2,
        default=list(D.seeds),
        metavar=("A", "B"),
        help="training seeds of the two models (equal seeds: a determinism check)",
    )
    p.add_argument("--methods", nargs="+", default=list(D.methods))
    p.add_argument(
        "--top-fraction",
        type=float,
        default=D.top_fraction,
        help="share of brain pixels in the top-k overlap",
    )
    p.add_argument(
        "--max-slices",
        type=int,
        default=D.max_slices,
        help="test slices compared (seeded draw; 0 = all)",
    )
    args = p.parse_args(argv)

    def call():
        cfg = ReproducibilityConfig(
            architecture=args.architecture,
            seeds=tuple(args.seeds),
            methods=tuple(args.methods),
            top_fraction=args.top_fraction,
            max_slices=args.max_slices,
            n_boot=n_boot_of(args),
            full=args.full,
        )
        run(settings_of(args), setting_from_args(args), cfg)

    return run_cli(NAME, call)


if __name__ == "__main__":
    raise SystemExit(main())
