"""The mRS model on held-out slices: Table 3 and the CAM panels of Figures 14 and 15.

What the paper did (section 4.2, Table 3, Figures 14/15): a three-class slice model
("no stroke", "mRS 0-2", "mRS 3-6"; a lesion slice takes its patient's 3-month outcome)
reached 92.06 % accuracy on its test set, 99.09 % on slices without a lesion, 70.18 % on
"mRS 0-2" and 58.13 % on "mRS 3-6" (Wilson intervals). Grad-CAM and Grad-CAM++ maps of a
few hand-picked patients were then read by eye: the lesion for a mild stroke (Fig. 14),
deformation and asymmetry away from the lesion for a severe one (Fig. 15).

What hypo measures instead: the same per-class accuracies on slices of patients the model
never trained or validated on, each with a Wilson interval (slices as independent, as the
paper) and a patient-clustered bootstrap interval (slices of a patient are correlated),
the confusion matrix, and the lesion-slice AUC of "mRS 3-6" vs "mRS 0-2". The panels show
examples of every true class picked by a seeded rule (random patients; for a lesion class
the patient's slice with the largest lesion cross-section), not by hand, with the maps of
every class on one shared raw colour scale.

Labels: :func:`hypo.nets.labels.mrs_labels` (0 = no lesion on the slice, 1 = lesion slice
of a patient with mRS 0-2, 2 = lesion slice with mRS 3-6). Patients without a 3-month
mRS are left out and counted, never guessed.

Run: ``python -m analyses.mrs_model`` (default: synthetic analysis cohort,
``models/mrs-gap-128``); ``--quick`` for a small run; ``--cohort DIR`` for your own data.
"""

from __future__ import annotations

from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.frame import MRS_MODEL
from hypo.study.experiments.mrs_model import NAME, QUICK, MrsModelConfig, run


def main(argv=None) -> int:
    p = experiment_parser(NAME, __doc__, model=MRS_MODEL)
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
