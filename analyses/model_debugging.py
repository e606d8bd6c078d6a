"""Model debugging (paper section 4.1.4, Table 2): five architectures, one seed, one split.

The paper trained its Herzog baseline and the "Dense", "Flat", "GAP" and "Shallow" models
with the same random seed on the same training, validation and test data, reported
accuracy, sensitivity and specificity (Wilson 95 % intervals), AUC and negative
log-likelihood (Table 2), and judged each model's Grad-CAM "qualitatively good" or "poor"
by eye. hypo measures the explainability instead, on the test patients' lesion slices:

- relevance mass: share of the Grad-CAM of class "stroke" (pre-softmax score, the ReLU
  after the last convolution, resized to the input) that falls inside the lesion mask,
  counting brain pixels only; next to it the share a uniform map would give (the lesion's
  share of the brain), so a number can be read against chance;
- pointing game: does the map's maximum (inside the brain) lie in the lesion; hit rate
  with a Wilson interval;
- MPRT (model-parameter randomisation test, Adebayo et al. 2018): cascading
  randomisation from the output layer down; the Spearman similarity between the map of
  the trained model and that of the fully randomised model should be near 0 (a map that
  survives randomisation explains the image, not the model).

Settings. ``--full`` is the paper's: 192 px, the whole development cohort, up to 100
epochs with early stopping (patience 10), all five architectures -- for a GPU. The
default is a fixed smaller setting for a 2-core CPU: 96 px, 150 patients, 5 epochs, the
four architectures of the paper's Table 2 (Dense, Flat, GAP, Shallow). The Herzog
baseline pools six times and only takes multiples of 64 px, so it joins whenever the size
allows (``--full``, ``--size 128``; about 5x the GAP model's time per step on a CPU).
``--quick`` (tests): the 12-patient synthetic cohort, 64 px, 1 epoch.

Each model is trained by :func:`hypo.study.experiments.train_models.train_model` (split,
class weights, augmentation, checkpoints) into its own folder under the cache, keyed by the settings: a
killed run continues from its last epoch, finished models are reused.

    python -m analyses.model_debugging                   # CPU setting, about an hour
    python -m analyses.model_debugging --full            # GPU
    python -m analyses.model_debugging --cohort DIR      # a researcher's own cohort
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
from hypo.study.experiments.model_debugging import (  # noqa: E402
    NAME,
    PAPER_NAMES,
    ModelDebuggingConfig,
    run,
)


def main(argv: list[str] | None = None) -> int:
    p = experiment_parser(NAME, __doc__, model=None)
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
