"""Evaluation-layer iteration: at which depth do CAMs explain best? (paper 4.1.3, Figure 10).

Command line of :mod:`hypo.study.experiments.layer_iteration` (its docstring is
the ``--help`` text).

    python -m analyses.layer_iteration [--quick] [--cohort DIR] [--out DIR]
"""

from __future__ import annotations

import hypo.study.experiments.layer_iteration as experiment
from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.layer_iteration import NAME, LayerIterationConfig, run


def parse(argv=None):
    p = experiment_parser(NAME, experiment.__doc__)
    d = LayerIterationConfig()
    p.add_argument("--methods", nargs="+", default=list(d.methods))
    p.add_argument("--figure-method", default=d.figure_method)
    p.add_argument("--layers", nargs="+", default=None, help="default: every spatial layer")
    p.add_argument(
        "--figure-layers",
        nargs="+",
        default=[d.figure_layers],
        help="'conv' (paper's Figure 10), 'all', or layer names",
    )
    p.add_argument("--class-index", type=int, default=None, help="default: the last class")
    p.add_argument("--slices", nargs="+", default=[], help="figure slices, participant_id:slice")
    p.add_argument(
        "--examples", type=int, default=d.n_examples, help="figure slices if no --slices"
    )
    p.add_argument("--max-slices", type=int, default=None, help="sample at most N lesion slices")
    args = p.parse_args(argv)
    fl = args.figure_layers
    cfg = LayerIterationConfig(
        methods=tuple(args.methods),
        figure_method=args.figure_method,
        layers=tuple(args.layers) if args.layers else None,
        figure_layers=fl[0] if len(fl) == 1 and fl[0] in ("conv", "all") else tuple(fl),
        class_index=args.class_index,
        slices=tuple(args.slices),
        n_examples=args.examples,
        max_slices=args.max_slices,
        seed=args.seed,
        n_boot=200 if args.quick else d.n_boot,
    )
    return args, cfg


def main(argv=None) -> int:
    args, cfg = parse(argv)
    return run_cli(NAME, lambda: run(settings_of(args), cfg))


if __name__ == "__main__":
    raise SystemExit(main())
