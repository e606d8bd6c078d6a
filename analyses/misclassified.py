"""What the stroke model gets "wrong": missed lesions and TIA slices it calls stroke.

What the paper did (section 4.1, Figures 12 and 13): it showed a few lesion slices the
model called "no stroke" (stroke probability 18-33 %) whose Grad-CAM / Grad-CAM++ maps
still pointed at the lesion, and two TIA patients (131, 135) whose slices the model called
stroke with 66 % and 99 %; a neurologist then found real infarcts there: the labels, not
the model, were wrong. Both were judged by eye on hand-picked examples.

What hypo measures instead, on slices of patients the model never trained or validated on:

* False negatives (lesion slice, p(stroke) < threshold): how many, and whether the
  stroke-class Grad-CAM still points into the lesion (pointing game, relevance mass in
  the lesion), next to the same numbers on correctly found lesion slices.
* TIA patients: per patient the maximum stroke probability over its slices; a patient is
  "called stroke" when it reaches the threshold. On a synthetic cohort the generator
  planted reader-missed infarcts in some TIA patients (``truth().mislabelled_tia == 1``):
  the share of those the model calls stroke (its sensitivity for label errors) against the
  share of clean TIA patients it calls stroke (false alarms), each with a Wilson interval,
  and whether the called slice holds the planted lesion.
* Panels of the most confident false negatives and TIA-called-stroke slices (one slice per
  patient), with the lesion outlined (the planted one on a synthetic cohort).

Run: ``python -m analyses.misclassified`` (default: synthetic analysis cohort,
``models/stroke-gap-128``); ``--quick`` for a small run; ``--cohort DIR`` for your own data.
"""

from __future__ import annotations

from analyses._experiment import experiment_parser, run_cli, settings_of
from hypo.study.experiments.misclassified import NAME, QUICK, MisclassifiedConfig, run


def main(argv=None) -> int:
    p = experiment_parser(NAME, __doc__)
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
