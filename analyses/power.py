"""Positive controls of the main analysis: power curves, type-I error, minimum detectable effect.

    python -m analyses.power [--features reports/asymmetry_vs_mrs/features.csv]
        [--registry v2] [--compare v1] [--effects 1.25 1.5 2 3]
        [--n-null 1000] [--n-power 200] [--map-sets K] [--workers N] [--engine process|dask]
        [--out reports/power] [--write-power-table] [--quick]

On the synthetic analysis cohort the images and every CNN's maps stay fixed while the
3-month mRS is redrawn from the generator under the complete null, the conditional null and
a grid of planted swelling effects (OR per SD of swelling). Every registered test, the
oracle fit on the generator's truth and the image signs of swelling (sulcal effacement,
ventricle compression) are refitted on each redraw. With ``--map-sets K`` the outcome
model's maps join as a nested design: per condition, K redraws of the development outcomes,
the ordinal head refitted on each, maps and features of the analysis cohort, then the
outcome redraws of the analysis cohort split over the K map sets. See
:mod:`hypo.study.power`.

Map sets hold Grad-CAM, Grad-CAM++ and LayerCAM at three layers and LayerCAM fused over
them (:mod:`hypo.cam.fusion`), each candidate its own BH family.

Outputs in ``--out``: ``power.csv``, ``type_I.csv``, ``mde.csv``, ``partial_correlations.csv``,
``ladder.csv``, ``effect_ladder.csv``, ``figures/``, ``report.md``/``report.html``; with map
sets also ``layer_choice.csv``, ``map_set_partial_correlations.csv`` (each map feature and
the refitted head's linear predictor against true swelling, per map set) and
``encoder_information.csv`` (what the head's inputs carry of swelling at all). With
``--write-power-table`` the primary tests' power is also written to
``analyses/power/<registry-version>.csv``, which the main report reads to print beside
every null result the power that test had.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hypo.paths import REPO_ROOT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analyses.power", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--features", type=Path,
                   default=REPO_ROOT / "reports" / "asymmetry_vs_mrs" / "features.csv")  # fmt: skip
    p.add_argument("--cohort", type=Path, default=None,
                   help="synthetic analysis cohort (default: the embedded one)")  # fmt: skip
    p.add_argument("--registry", default=None, help="registry version under test (default: "
                   "the main study's)")  # fmt: skip
    p.add_argument(
        "--compare",
        nargs="*",
        default=["v1"],
        help="older registry versions refitted on the same replicates",
    )
    p.add_argument("--effects", type=float, nargs="+", default=[1.25, 1.5, 2.0, 3.0])
    p.add_argument("--n-null", type=int, default=1000, help="outcome redraws per null")
    p.add_argument("--n-power", type=int, default=200, help="outcome redraws per planted effect")
    p.add_argument("--map-sets", type=int, default=0, help="outcome-model map sets per "
                   "condition (0: the outcome model's maps are not part of the run)")  # fmt: skip
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--engine", choices=["process", "dask"], default="process")
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "power")
    p.add_argument(
        "--write-power-table",
        action="store_true",
        help="(re)write analyses/power/<registry-version>.csv",
    )
    p.add_argument("--quick", action="store_true", help="few replicates (a first look, tests)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    from analyses._cli import run_logged

    def body(log) -> int:
        from hypo.study.power import PowerError, run_power_study

        def say(m):
            log(m)
            if not args.quiet:
                print(f"[power] {m}", file=sys.stderr, flush=True)

        try:
            res = run_power_study(args, say)
        except PowerError as e:
            print(f"power: refused: {e}", file=sys.stderr, flush=True)
            return 2
        print("\n".join(["", f"power -> {args.out}", *res.closing]))
        return 0

    return run_logged("power", body)


if __name__ == "__main__":
    raise SystemExit(main())
