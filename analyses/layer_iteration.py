"""Evaluation-layer iteration: at which depth do CAMs explain best? (paper 4.1.3, Figure 10).

The paper computed a Grad-CAM of one slice with a visible lesion at every evaluable layer
of its baseline model (70 of 81 layers), showed the convolutional ones (Figure 10) and
read off by eye that the lesion is already found after five convolutions and that maps
blur in the deepest layers.

hypo draws the same figure for chosen slices (slices x layers, Grad-CAM by default) and
measures, over every held-out lesion slice of a cohort and at every layer with spatial
output (:func:`hypo.cam.spatial_layers`, one forward and backward pass for all layers via
:func:`hypo.cam.layer_sweep`):

* ``relevance_mass``: share of the map's mass inside the brain that lies on the lesion;
* ``pointing_game``: the map's maximum inside the brain lies on the lesion;
* ``outside_brain_mass``: share of the map's mass outside the brain;

as a curve over depth, per CAM method, with 95% patient-cluster bootstrap intervals, and
the chance level of both lesion measures (the lesion's share of the brain: what a uniform
map scores). The class explained is the model's last class ("stroke" for the stroke
model) unless ``--class-index`` says otherwise.

    python -m analyses.layer_iteration               # analysis cohort, stroke model
    python -m analyses.layer_iteration --quick       # 12 synthetic patients, seconds
    python -m analyses.layer_iteration --slices sub-004:16 sub-007:14 --figure-layers all
"""

from __future__ import annotations

from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.layer_iteration import NAME, LayerIterationConfig, run


def parse(argv=None):
    p = experiment_parser(NAME, __doc__)
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
