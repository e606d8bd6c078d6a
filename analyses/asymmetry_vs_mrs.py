"""The main analysis: do CAM features of stroke DWI relate to the 3-month mRS?

    python -m analyses.asymmetry_vs_mrs [--cohort DIR] [--stroke-model DIR] [--mrs-model DIR]
        [--layer NAME] [--method gradcam] [--out DIR] [--quick] [--n-boot 200] [--seed 0]

With no arguments it runs the whole path on the embedded default: the synthetic analysis
cohort (``hypo.paths.default_cohort_dir("analysis")``, generated when missing), the shipped
models ``models/stroke-gap-128`` and ``models/mrs-gap-128``, CAMs of the analysis cohort
(never of a model's training or validation patients: the leakage guard refuses them),
features, the registered hypotheses of ``analyses/registry/<version>/hypotheses/`` (checked
against that version's ``lock.json`` before any outcome is joined) and the report.

Outputs in ``--out`` (default ``reports/asymmetry_vs_mrs/``): ``results.csv`` (every
registered test on the CAM maps and on the negative-control maps, ``map_source`` column;
on a synthetic cohort also the oracle fit on the generator's truth with ``true_value`` and
``covered``), ``features.csv`` (the joined patient table), ``secondary_*.csv``,
``report.md``/``report.html``, ``secondary.md``/``secondary.html``, ``figures/``,
``provenance.json`` and ``runtime.json``.

Caches: the slice store and the anatomy under ``hypo.paths.cache_dir()``, CAMs and slice
features under ``cache_dir()/analyses/asymmetry_vs_mrs/<cohort>/<model>-<hash>/``, so a
second run only refits the statistics and redraws the report.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analyses._cli import column_pairs, run_logged
from hypo.cohort import CohortError
from hypo.cohort.requirements import format_problems, preflight
from hypo.features.anatomy_qc import AnatomyQCError
from hypo.features.join import LeakageError
from hypo.stats.registry import RegistryLockError
from hypo.study.config import REQUIREMENTS, StudyConfig, StudyError


def _parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = argparse.ArgumentParser(
        prog="python -m analyses.asymmetry_vs_mrs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cohort", type=Path, default=None, help="cohort folder (default: synthetic)")
    p.add_argument("--stroke-model", type=Path, default=d.stroke_model)
    p.add_argument("--mrs-model", type=Path, default=d.mrs_model)
    p.add_argument(
        "--outcome-model",
        type=Path,
        default=d.outcome_model,
        help="patient-level outcome model whose bag CAMs are a third map source",
    )
    p.add_argument("--no-outcome-model", action="store_true", help="leave the outcome maps out")
    p.add_argument(
        "--outcome-layer", default=None, help="bag-CAM layer (default: --layer or its card's)"
    )
    p.add_argument("--layer", default=None, help="CAM layer (default: each card's cam_layer)")
    p.add_argument(
        "--method",
        action="append",
        dest="methods",
        help="CAM method, repeatable (default gradcam and gradcampp)",
    )
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--quick", action="store_true", help="a small run (tests, a first look)")
    p.add_argument("--quick-patients", type=int, default=d.quick_patients)
    p.add_argument("--n-boot", type=int, default=d.n_boot)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-random-control", action="store_true")
    p.add_argument("--hypotheses", type=Path, default=d.hypotheses)
    p.add_argument("--lock", type=Path, default=d.lock)
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--column",
        action="append",
        metavar="HYPO=YOURS",
        help="map one of your participants.tsv columns to the name hypo expects, e.g. "
        "--column mrs_3months=mRS_90d (repeatable; or a hypo_columns.json sidecar)",
    )
    p.add_argument(
        "--max-qc-fail-fraction",
        type=float,
        default=None,
        help="stop when a larger share of patients fail the anatomy QC (default 0.2)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that --cohort has what the analysis needs (seconds; no model)",
    )
    return p


def config_from_args(args) -> StudyConfig:
    """The :class:`StudyConfig` of parsed command-line arguments."""
    return StudyConfig(
        cohort=args.cohort,
        stroke_model=args.stroke_model,
        mrs_model=args.mrs_model,
        outcome_model=None if args.no_outcome_model else args.outcome_model,
        outcome_layer=args.outcome_layer,
        layer=args.layer,
        methods=tuple(args.methods or ("gradcam", "gradcampp")),
        out=args.out,
        quick=args.quick,
        quick_patients=args.quick_patients,
        n_boot=args.n_boot,
        seed=args.seed,
        random_control=not args.no_random_control,
        hypotheses=args.hypotheses,
        lock=args.lock,
        progress=not args.quiet,
        columns=column_pairs(args.column),
        max_qc_fail_fraction=args.max_qc_fail_fraction,
    )


def _runtime_line(out: Path, tm: dict, hist: list) -> str:
    # The last run on this cohort that fitted its statistics (not a cached rerun).
    fitted = [h for h in hist[:-1] if h.get("cohort") == hist[-1]["cohort"]]
    fitted = [h for h in fitted if h.get("statistics_reused") is False]
    return (
        f"  runtime  this run {tm['total_s']:.0f} s ("
        + (f"cohort {tm['cohort_s']:.0f} s; " if tm.get("cohort_s", 0) >= 1 else "")
        + f"features: stroke {tm['features_stroke_s']:.0f}"
        f" s, mRS {tm['features_mrs_s']:.0f} s"
        + (f", outcome {tm['features_outcome_s']:.0f} s" if "features_outcome_s" in tm else "")
        + f"; statistics {tm['statistics_s']:.0f} s; report "
        f"{tm['report_s']:.0f} s{'; statistics from the cache' if tm['statistics_reused'] else ''})"
        + (f"; last run that fitted them {fitted[-1]['total_s']:.0f} s" if fitted else "")
        + f"; targets (issue 18) <= 180 s from nothing / <= 60 s with caches ({out / 'runtime.json'})"
    )


def check_cohort(cfg: StudyConfig, say) -> bool:
    """The preflight of a researcher's cohort: True when it can run; else every problem
    printed with what to do. Runs before TensorFlow is imported."""
    if cfg.cohort is None:
        return True
    problems = preflight(cfg.cohort, REQUIREMENTS, columns=cfg.columns)
    if not problems:
        say(f"cohort {cfg.cohort}: has what {REQUIREMENTS.analysis} needs")
        return True
    print(
        f"asymmetry_vs_mrs: refused: cohort {cfg.cohort} cannot run this analysis "
        f"({len(problems)} problem(s)):\n{format_problems(problems)}",
        file=sys.stderr,
        flush=True,
    )
    return False


def _main(args, log) -> int:
    cfg = config_from_args(args)

    def say(msg):
        log(msg)
        if cfg.progress:
            print(f"[asymmetry_vs_mrs] {msg}", file=sys.stderr, flush=True)

    if not check_cohort(cfg, say):
        return 2
    if args.check:
        print("asymmetry_vs_mrs: --check passed" if cfg.cohort else "--check needs --cohort DIR")
        return 0 if cfg.cohort else 2
    # Measured reason for a late import: the study imports TensorFlow (5-10 s on 2 cores);
    # the preflight above must answer before it.
    from hypo.study.run import run_study

    result = run_study(cfg)
    history = []
    paths = result.write(cfg.out, history=history)
    log(result.summary())
    print(
        f"\nasymmetry_vs_mrs: {len(result.data)} patients analysed -> {Path(cfg.out)}\n"
        f"  report   {paths['html']}\n"
        f"  results  {paths['results']}\n" + _runtime_line(Path(cfg.out), result.timings, history)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    refusals = (StudyError, LeakageError, RegistryLockError, CohortError, AnatomyQCError)
    return run_logged("asymmetry_vs_mrs", lambda log: _main(args, log), refusals)


if __name__ == "__main__":
    raise SystemExit(main())
