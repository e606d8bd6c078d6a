"""Cropping: do CAMs spill less outside the brain when the brain is cropped? (paper 4.1.2,
Figure 9).

Command line of :mod:`hypo.study.experiments.cropping` (its docstring is
the ``--help`` text).

    python -m analyses.cropping [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import hypo.study.experiments.cropping as experiment
from analyses._experiment import (
    add_cam_options,
    cam_config,
    experiment_parser,
    run_cli,
    settings_of,
)
from hypo.study.experiments.cropping import NAME, CroppingConfig, run


def parse(argv=None):
    p = experiment_parser(NAME, experiment.__doc__)
    add_cam_options(p, CroppingConfig(), what="slice pairs")
    args = p.parse_args(argv)
    return args, cam_config(args, CroppingConfig)


def main(argv=None) -> int:
    args, cfg = parse(argv)
    return run_cli(NAME, lambda: run(settings_of(args), cfg))


if __name__ == "__main__":
    raise SystemExit(main())
