"""Reproducibility of explanations (paper appendix, Figure 16): two seeds, one data set.

The paper trained two models "under the same conditions" and showed, by eye, that their
Grad-CAMs of class "Stroke" look alike on three MRIs, while the maps of "no Stroke" --
whose probability was near zero -- looked like artefacts. hypo trains the GAP model twice
on the same patients, split and settings with two training seeds, computes Grad-CAM (and
Grad-CAM++) of every class on every test slice with both, and measures per slice and class:

- ``spearman_raw``: Spearman rank correlation of the two maps at layer resolution (the
  maps as the models made them);
- ``spearman_brain``: the same on the input-size maps, brain pixels only (background
  pixels would agree trivially);
- ``top_k_overlap``: share of the first model's most relevant ``--top-fraction`` of brain
  pixels that are also among the second model's (1 = the same pixels, the fraction itself
  = chance);

then summarises them by class and by the class's predicted probability (mean of the two
models), because a map of a class the model gives ~0 probability has little to explain.

Settings as :mod:`analyses.model_debugging` (CPU default: 96 px, 150 patients of the
development cohort, 5 epochs; ``--full``: 192 px, all patients, 100 epochs; ``--quick``
for tests). Models are cached and resumed like there.

    python -m analyses.reproducibility                   # CPU setting
    python -m analyses.reproducibility --seeds 0 1 --full
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    p = experiment_parser(NAME, __doc__, model=None)
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
