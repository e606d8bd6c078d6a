"""Make the embedded default cohorts and their slice stores, and say what was made.

``python -m analyses.prepare_default [--quick] [--size 128]``

1. generates the synthetic development cohort (511 patients) and the independent analysis
   cohort (200 patients, other seed) under ``hypo.paths.data_dir()`` unless they exist;
2. loads and validates both;
3. builds their slice stores with the paper's preprocessing (cached under
   ``hypo.paths.cache_dir()``);
4. writes a montage of the analysis cohort to ``<HYPO_DATA>/montage.png`` (``--montage
   reports/montage/montage.png`` regenerates the README's figure).

Every step is skipped when its output is already there, so a second run is quick.
``--quick`` makes tiny cohorts instead (for tests and a first look).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypo.paths import ANALYSIS_COHORT, DEV_COHORT, data_dir, default_cohort_dir


def _ensure_cohort(out: Path, n: int, seed: int, workers: int | None) -> float:
    from hypo.cohort.synthetic import generate_cohort

    t0 = time.perf_counter()
    generate_cohort(out, n_patients=n, seed=seed, workers=workers, progress=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analyses.prepare_default", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny cohorts (8 and 6 patients)")
    ap.add_argument("--size", type=int, default=128, help="slice size in pixels (paper: 192)")
    ap.add_argument("--workers", type=int, default=None, help="generator processes")
    ap.add_argument(
        "--montage",
        default=None,
        help="montage PNG (default HYPO_DATA/montage.png; the README's figure is "
        "reports/montage/montage.png, rewritten only when named here)",
    )
    args = ap.parse_args(argv)
    args.montage = args.montage or str(data_dir() / "montage.png")

    from hypo.cohort import load
    from hypo.preprocess import PreprocessConfig, build_slice_store
    from hypo.report.montage import write_montage

    if args.quick:
        specs = [
            ("dev", data_dir() / "synthetic" / "quick-dev", 8, DEV_COHORT["seed"]),
            ("analysis", data_dir() / "synthetic" / "quick-analysis", 6, ANALYSIS_COHORT["seed"]),
        ]
    else:
        specs = [
            ("dev", default_cohort_dir("dev"), DEV_COHORT["patients"], DEV_COHORT["seed"]),
            (
                "analysis",
                default_cohort_dir("analysis"),
                ANALYSIS_COHORT["patients"],
                ANALYSIS_COHORT["seed"],
            ),
        ]
    config = PreprocessConfig(size=args.size)
    lines = []
    cohorts = {}
    for name, path, n, seed in specs:
        gen_s = _ensure_cohort(path, n, seed, args.workers)
        cohort = load(path)
        t0 = time.perf_counter()
        store = build_slice_store(cohort, config)
        store_s = time.perf_counter() - t0
        t = store.table
        lesion = int((t["lesion_visible"] == 1).sum())
        groups = cohort.participants["group"].value_counts().to_dict()
        lines.append(
            f"{name:9s} {cohort.root}\n"
            f"          {len(cohort.participant_ids())} patients {groups}, generated/checked in "
            f"{gen_s:.1f} s\n"
            f"          slice store {store.path}\n"
            f"          {len(t)} slices ({lesion} with a visible lesion) at "
            f"{config.size}x{config.size}, built/loaded in {store_s:.1f} s"
        )
        cohorts[name] = cohort
    montage = write_montage(cohorts["analysis"], args.montage)
    print("\nhypo default data are ready:")
    print("\n".join(lines))
    print(f"montage   {montage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
