"""Mirroring: is the CAM of a mirrored slice the mirrored CAM? (paper 4.1.1, Figure 8).

The paper passed one slice with an evident lesion, and the same slice mirrored on the
vertical axis, through the baseline model and judged *by eye* that the Grad-CAM and
Grad-CAM++ maps of the class "stroke" were "approximately mirrored" -- evidence that the
CAM code was right and that the maps' tendency to sit on one side was no implementation
error.

hypo measures it over every held-out lesion slice of a cohort, per CAM method and class:

* ``pearson`` / ``spearman``: correlation between the CAM of the mirrored slice and the
  mirrored CAM of the original (1 = perfectly mirror-equivariant explanation);
* ``ai_original`` / ``ai_mirrored``: the CAM's hemispheric asymmetry index
  ``(L - R) / (L + R)`` (mass on the patient's left minus right),
  of the original map and of the mirrored slice's map flipped back (hemispheres: ground
  truth on a synthetic cohort, else from the image); ``sign_agree`` = the
  two have the same sign, i.e. the map's dominant side follows the anatomy and not a fixed
  side of the image (the bias the paper asked about);
* the predicted probability of each class for both inputs (a mirror-invariant model gives
  the same).

Summaries per method and class carry 95% patient-cluster bootstrap intervals (slices of a
patient are not independent). Flipping is along image columns (np.flip, axis 1 of a slice):
in the radiological view the mirrored slice shows the patient's left on the image's left,
so its L/R markers are swapped in the figure.

    python -m analyses.mirroring                # analysis cohort, shipped stroke model
    python -m analyses.mirroring --quick        # 12 synthetic patients, seconds
    python -m analyses.mirroring --cohort DIR --model DIR
"""

from __future__ import annotations

from analyses._experiment import (
    add_cam_options,
    cam_config,
    experiment_parser,
    run_cli,
    settings_of,
)
from hypo.study.experiments.mirroring import NAME, MirroringConfig, run


def parse(argv=None):
    p = experiment_parser(NAME, __doc__)
    add_cam_options(p, MirroringConfig(), what="lesion slices")
    args = p.parse_args(argv)
    return args, cam_config(args, MirroringConfig)


def main(argv=None) -> int:
    args, cfg = parse(argv)
    return run_cli(NAME, lambda: run(settings_of(args), cfg))


if __name__ == "__main__":
    raise SystemExit(main())
