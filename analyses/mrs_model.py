"""The mRS model on held-out slices: Table 3 and the CAM panels of Figures 14 and 15.

Command line of :mod:`hypo.study.experiments.mrs_model` (its docstring is
the ``--help`` text).

    python -m analyses.mrs_model [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import hypo.study.experiments.mrs_model as experiment
from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.frame import MRS_MODEL
from hypo.study.experiments.mrs_model import NAME, QUICK, MrsModelConfig, run


def main(argv=None) -> int:
    p = experiment_parser(NAME, experiment.__doc__, model=MRS_MODEL)
    p.add_argument(
        "--examples",
        type=int,
        default=None,
        help="example slices per true class in the panels (default 2; quick 1)",
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help="patient-bootstrap replicates (default 2000; quick 50)",
    )
    args = p.parse_args(argv)
    base = QUICK if args.quick else MrsModelConfig()
    cfg = MrsModelConfig(
        n_examples=args.examples or base.n_examples, n_boot=args.n_boot or base.n_boot
    )
    return run_cli(NAME, lambda: run(settings_of(args), cfg))


if __name__ == "__main__":
    raise SystemExit(main())
