"""MC-dropout uncertainty against correctness and against how concentrated the CAM is.

Command line of :mod:`hypo.study.experiments.mc_uncertainty` (its docstring is
the ``--help`` text).

    python -m analyses.mc_uncertainty [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import hypo.study.experiments.mc_uncertainty as experiment
from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.mc_uncertainty import NAME, QUICK, McUncertaintyConfig, run


def config_of(args) -> McUncertaintyConfig:
    """The options, with the quick run's or the default's values where not given."""
    base = QUICK if args.quick else McUncertaintyConfig()
    return McUncertaintyConfig(
        T=args.T or base.T,
        patients=args.patients if args.patients is not None else base.patients,
        n_boot=args.n_boot or base.n_boot,
    )


def main(argv=None) -> int:
    p = experiment_parser(NAME, experiment.__doc__)
    p.add_argument(
        "--passes",
        "-T",
        type=int,
        default=None,
        dest="T",
        help="MC-dropout passes (default 20; quick 5; Herzog et al.: 50)",
    )
    p.add_argument(
        "--patients",
        type=int,
        default=None,
        help="seeded sample of held-out patients (default 30; 0 = all; quick all)",
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help="patient-bootstrap replicates (default 1000; quick 30)",
    )
    args = p.parse_args(argv)
    return run_cli(NAME, lambda: run(settings_of(args), config_of(args)))


if __name__ == "__main__":
    raise SystemExit(main())
