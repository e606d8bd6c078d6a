"""Model debugging (paper section 4.1.4, Table 2): five architectures, one seed, one split.

Command line of :mod:`hypo.study.experiments.model_debugging` (its docstring is
the ``--help`` text).

    python -m analyses.model_debugging [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hypo.study.experiments.model_debugging as experiment
from analyses._experiment import (  # noqa: E402
    add_setting_options,
    experiment_parser,
    n_boot_of,
    run_cli,
    setting_from_args,
    settings_of,
)
from hypo.study.experiments.model_debugging import (  # noqa: E402
    NAME,
    PAPER_NAMES,
    ModelDebuggingConfig,
    run,
)


def main(argv: list[str] | None = None) -> int:
    p = experiment_parser(NAME, experiment.__doc__, model=None)
    add_setting_options(p)
    p.add_argument(
        "--architectures",
        nargs="+",
        default=None,
        choices=list(PAPER_NAMES),
        help="default: all five that take the size (Herzog: multiples of 64 px)",
    )
    p.add_argument(
        "--cam-slices",
        type=int,
        default=ModelDebuggingConfig.cam_slices,
        help="test lesion slices whose Grad-CAM is scored (seeded draw; 0 = all)",
    )
    p.add_argument(
        "--mprt-slices",
        type=int,
        default=ModelDebuggingConfig.mprt_slices,
        help="test lesion slices of the cascading randomisation",
    )
    args = p.parse_args(argv)

    def call():
        cfg = ModelDebuggingConfig(
            architectures=tuple(args.architectures) if args.architectures else None,
            cam_slices=args.cam_slices,
            mprt_slices=args.mprt_slices,
            n_boot=n_boot_of(args),
            full=args.full,
        )
        run(settings_of(args), setting_from_args(args), cfg)

    return run_cli(NAME, call)


if __name__ == "__main__":
    raise SystemExit(main())
