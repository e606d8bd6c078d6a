"""Cropping: do CAMs spill less outside the brain when the brain is cropped? (paper 4.1.2,
Figure 9).

The paper compared Grad-CAM and Grad-CAM++ maps of slices with and without its brain crop
(threshold, contours, crop to their extrema, bicubic resize back) and saw "significantly
fewer regions outside the brain" highlighted with the crop -- by eye, on example slices --
and adopted the crop for all further results.

hypo measures it on every held-out lesion slice of a cohort, paired: the same slice
(``participant_id``, ``slice``) preprocessed with and without the crop (same size, same
normalisation), the same model applied to both, and per map

* ``outside_brain_mass``: share of the map's mass outside the brain (brain mask carried
  through each store's own geometry: ground truth on a synthetic cohort, else the
  image-derived brain of :mod:`hypo.features.anatomy`);
* ``lesion_mass``: share of the map's mass on the lesion (relevance mass accuracy, whole
  image) and ``lesion_mass_brain`` (inside the brain only);
* ``pointing_game``: the map's maximum lies on the lesion;
* ``probability``: the predicted probability of the class.

Each measure is compared cropped minus uncropped with Wilcoxon signed-rank tests
(scipy.stats.wilcoxon) over slices and, because a patient's slices are not independent,
over per-patient mean differences (the primary test); the mean difference carries a 95%
patient-cluster bootstrap interval.

Caveat stated in every report: the shipped models were trained on cropped slices only, so
uncropped slices are also a shift of the input distribution; a change in the maps mixes
"less background to highlight" with "an input the model never saw".

    python -m analyses.cropping                 # analysis cohort, shipped stroke model
    python -m analyses.cropping --quick         # 12 synthetic patients, seconds
"""

from __future__ import annotations

from analyses._experiment import (
    add_cam_options,
    cam_config,
    experiment_parser,
    run_cli,
    settings_of,
)
from hypo.study.experiments.cropping import NAME, CroppingConfig, run


def parse(argv=None):
    p = experiment_parser(NAME, __doc__)
    add_cam_options(p, CroppingConfig(), what="slice pairs")
    args = p.parse_args(argv)
    return args, cam_config(args, CroppingConfig)


def main(argv=None) -> int:
    args, cfg = parse(argv)
    return run_cli(NAME, lambda: run(settings_of(args), cfg))


if __name__ == "__main__":
    raise SystemExit(main())
