"""Mirroring: is the CAM of a mirrored slice the mirrored CAM? (paper 4.1.1, Figure 8).

Command line of :mod:`hypo.study.experiments.mirroring` (its docstring is
the ``--help`` text).

    python -m analyses.mirroring [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import hypo.study.experiments.mirroring as experiment
from analyses._experiment import (
    add_cam_options,
    cam_config,
    experiment_parser,
    run_cli,
    settings_of,
)
from hypo.study.experiments.mirroring import NAME, MirroringConfig, run


def parse(argv=None):
    p = experiment_parser(NAME, experiment.__doc__)
    add_cam_options(p, MirroringConfig(), what="lesion slices")
    args = p.parse_args(argv)
    return args, cam_config(args, MirroringConfig)


def main(argv=None) -> int:
    args, cfg = parse(argv)
    return run_cli(NAME, lambda: run(settings_of(args), cfg))


if __name__ == "__main__":
    raise SystemExit(main())
