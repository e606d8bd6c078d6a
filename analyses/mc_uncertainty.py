"""MC-dropout uncertainty against correctness and against how concentrated the CAM is.

What the literature did: Herzog et al. (2020), whose model the paper starts from (section
2 and 3.4), made the stroke slice model Bayesian with Monte Carlo dropout and showed that
its uncertainty flags the predictions that are wrong; the paper itself did not measure
uncertainty, and read the maps of uncertain misclassified slices by eye (Figure 12: "the
model is uncertain since the probability ... is between 18 % and 33 %").

What hypo measures, on slices of patients the model never trained or validated on:

* ``T`` stochastic passes with only the dropout layers active
  (:func:`hypo.nets.mc_dropout.mc_predict`): predictive entropy, mutual information,
  variation ratio and total variance per slice; the prediction is the argmax of the
  predictive mean.
* Uncertainty for errors: the ROC AUC of each uncertainty for "this prediction is wrong"
  (0.5 = no better than chance, 1 = every error is more uncertain than every correct
  prediction), with a patient-clustered bootstrap interval. The deterministic model's
  ``1 - max softmax`` is the baseline any MC measure should beat.
* Uncertainty and the map: the Spearman correlation of each uncertainty with the
  concentration of the predicted class's Grad-CAM (``entropy_norm`` and ``top_share`` of
  :mod:`hypo.features.maps`, on the image-derived brain), with a patient-clustered
  bootstrap interval. A diffuse map (high entropy, low top share) on uncertain slices
  would say the map carries the uncertainty too.

Labels: the reader's slice labels (stroke model) or the 3-class mRS labels (a 3-class
model; patients without mRS are left out). The default analyses a seeded sample of
patients to fit the CPU budget (``--patients 0`` for all).

Run: ``python -m analyses.mc_uncertainty`` (default: synthetic analysis cohort,
``models/stroke-gap-128``); ``--quick`` for a small run; ``--cohort DIR`` for your own data.
"""

from __future__ import annotations

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
    p = experiment_parser(NAME, __doc__)
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
