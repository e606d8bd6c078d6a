"""What the stroke model gets "wrong": missed lesions and TIA slices it calls stroke.

Command line of :mod:`hypo.study.experiments.misclassified` (its docstring is
the ``--help`` text).

    python -m analyses.misclassified [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import hypo.study.experiments.misclassified as experiment
from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.misclassified import NAME, QUICK, MisclassifiedConfig, run


def main(argv=None) -> int:
    p = experiment_parser(NAME, experiment.__doc__)
    p.add_argument(
        "--threshold",
        type=float,
        default=MisclassifiedConfig.threshold,
        help="decision threshold on p(stroke) (default 0.5, as the paper)",
    )
    p.add_argument(
        "--examples", type=int, default=None, help="slices per panel figure (default 6; quick 2)"
    )
    args = p.parse_args(argv)
    base = QUICK if args.quick else MisclassifiedConfig()
    return run_cli(
        NAME,
        lambda: run(
            settings_of(args),
            MisclassifiedConfig(args.threshold, args.examples or base.n_examples),
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
