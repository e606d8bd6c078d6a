"""3D Grad-CAM on whole volumes (paper appendix "3D XAI", Figure 18).

The paper's appendix showed one stroke patient's 30 axial slices above the 3D model's
Grad-CAM of class "Stroke" and judged by eye that "between axial slice 13 and 23 the
detection seems to be precise". hypo trains the 3D GAP CNN (``gap3d``: in-plane pooling
first, so its last maps keep several slices) on whole DWI volumes resampled to a fixed
grid, and on every test patient with a lesion measures, in 3D and against the lesion mask:

- relevance mass (share of the map inside the lesion, brain voxels only) and pointing
  game of the 3D Grad-CAM (trilinear to the grid);
- the same for the 2D model's per-slice Grad-CAMs stacked into a volume (each slice's
  map taken back through its crop/resize to the native slice, then through the same
  resampling as the volume), so both maps are scored on the same voxels and masks;
- the voxelwise Spearman correlation of the two maps inside the brain.

A per-slice montage of one test patient (image, 3D map, stacked 2D maps) stands in for
Figure 18. The 3D model is trained on the development cohort; when the 2D model was
trained on the same cohort, its card's test patients are the test patients here and its
training/validation patients the only ones the 3D model trains on, so neither model has
seen a test volume.

Settings. Default (2-core CPU): grid 64 x 64 x 32 voxels, 200 patients for training and
validation, 10 epochs. ``--full``: 128 x 128 x 32 (the original group's 3D input was
128 x 128 x 28), all patients, up to 100 epochs (GPU). ``--quick``: 32 x 32 x 8, 1 epoch.

    python -m analyses.cam3d
    python -m analyses.cam3d --full
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from analyses._experiment import experiment_parser, run_cli, settings_of  # noqa: E402
from hypo.study.experiments.cam3d import NAME, run, volume_setting  # noqa: E402
from hypo.study.experiments.frame import STROKE_MODEL  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = experiment_parser(NAME, __doc__, model=STROKE_MODEL)
    p.add_argument("--full", action="store_true", help="128x128x32, all patients, 100 epochs")
    p.add_argument("--grid", type=int, nargs=3, default=None, metavar=("ROWS", "COLS", "SLICES"))
    p.add_argument("--patients", type=int, default=None, help="training+validation (0 = all)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=None)
    args = p.parse_args(argv)
    n_boot = args.n_boot if args.n_boot is not None else (50 if args.quick else 2000)

    def call():
        s = volume_setting(
            quick=args.quick,
            full=args.full,
            seed=args.seed,
            grid=args.grid,
            patients=args.patients,
            epochs=args.epochs,
        )
        run(settings_of(args), s, split_seed=args.split_seed, n_boot=n_boot)

    return run_cli(NAME, call)


if __name__ == "__main__":
    raise SystemExit(main())
