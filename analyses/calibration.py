"""Falsification harness: does the pipeline's statistics keep its promises where the truth
is known?

    python -m analyses.calibration [--features reports/asymmetry_vs_mrs/features.csv]
        [--n-replicates 1000] [--replicates 2] [--workers N] [--engine process|dask]
        [--out reports/calibration] [--quick]

The paper (section 1.2) cites the criticism that explanation maps are unfalsifiable (Rudin
2019; Leavitt and Morcos 2020) and reads its maps by eye. On hypo's synthetic cohorts the
outcome model is known, so the pipeline's claims about CAM features can be tested:

1. Type-I error. Cheap replicates keep the main analysis's patient table (CAM features,
   covariates) fixed and redraw the 3-month mRS from the generator's outcome model in its
   complete null (mRS depends on age, pre-stroke mRS and sex only), its conditional null
   (mRS depends on lesion volume, side, territory, age, NIHSS and treatment, not on
   swelling: the realistic danger is residual confounding, since map asymmetry and overlap
   grow with volume) and its non-proportional-odds mode. Every registered hypothesis is
   refitted; rejection rates at alpha 0.05 per hypothesis, family-wise (any p < 0.05) and
   after BH (any q < 0.05), with Wilson Monte-Carlo CIs.
2. Power and bias with the effect fixed in advance: OR 1.5 per SD of swelling at fixed
   lesion volume. Power of each CAM-feature hypothesis; bias and 95 % CI coverage for the
   oracle fit on the generator's truth (swelling, ln lesion volume), the only place the
   estimand is defined; power of the oracle swelling test by cohort size.
3. Full replicates (``--replicates N``): new seeded cohorts through the main analysis's
   own functions (generation, CAMs, features, registered fits); few on a CPU, with CIs.
4. Leakage: the mRS model's P(mRS 3-6) against mRS on its own training patients and on
   held-out patients of the development cohort, and the guard's refusal message.

Outputs in ``--out``: ``rejection_rates.csv``, ``family_rates.csv``, ``truth_summary.csv``,
``power_by_size.csv``, ``full_replicates.csv``, ``leakage.csv``, ``figures/``, ``report.md``
/ ``report.html``, ``provenance.json``; replicate rows under ``replicates/`` (resumable: a
rerun computes only missing chunks).
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path

from analyses._experiment import REPORTS, experiment_parser, stage, write_experiment
from hypo.paths import default_cohort_dir
from hypo.study.calibration import (
    FULL_PATIENTS,
    NAME,
    CalibrationError,
    CalibrationSettings,
    run_calibration,
)
from hypo.study.config import HYPOTHESES_DIR, LOCK_FILE, MRS_MODEL, STROKE_MODEL

FEATURES = REPORTS / "asymmetry_vs_mrs" / "features.csv"


def _parser():
    p = experiment_parser(NAME, __doc__, model=None)
    p.add_argument(
        "--features",
        type=Path,
        default=FEATURES,
        help="main analysis's patient table (default reports/asymmetry_vs_mrs/)",
    )
    p.add_argument("--n-replicates", type=int, default=1000, help="cheap replicates/setting")
    p.add_argument("--replicates", type=int, default=2, help="full (end-to-end) replicates")
    p.add_argument("--full-modes", nargs="+", default=["conditional_null", "default"])
    p.add_argument("--full-patients", type=int, default=FULL_PATIENTS)
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--engine", choices=("process", "dask"), default="process")
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument(
        "--power-sizes",
        type=float,
        nargs="+",
        default=[0.5, 1, 1.5, 2, 3],
        help="cohort sizes of the power curve, as multiples of the analysed n",
    )
    p.add_argument("--power-replicates", type=int, default=300)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--stroke-model", type=Path, default=STROKE_MODEL)
    p.add_argument("--mrs-model", type=Path, default=MRS_MODEL)
    p.add_argument("--dev-cohort", type=Path, default=default_cohort_dir("dev"))
    p.add_argument("--leakage-patients", type=int, default=80)
    p.add_argument("--no-leakage", action="store_true")
    p.add_argument("--hypotheses", type=Path, default=HYPOTHESES_DIR)
    p.add_argument("--lock", type=Path, default=LOCK_FILE)
    return p  # fmt: skip


def settings_from_args(args) -> CalibrationSettings:
    """The library settings of parsed arguments (the options the harness uses)."""
    names = {f.name for f in fields(CalibrationSettings)}
    return CalibrationSettings(**{k: v for k, v in vars(args).items() if k in names})


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    say = (lambda m: None) if args.quiet else (lambda m: stage(NAME, m))
    try:
        settings = settings_from_args(args)
        res = run_calibration(settings, say)
    except CalibrationError as e:
        print(f"calibration: refused: {e}", file=sys.stderr, flush=True)
        return 2
    write_experiment(Path(args.out), NAME, res.tables, res.sections,
                     config={k: str(v) for k, v in vars(settings).items()}, intro=res.intro,
                     started=res.started, extra_provenance=res.provenance)  # fmt: skip
    print("\n".join(["", f"calibration -> {args.out}", *res.closing]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
