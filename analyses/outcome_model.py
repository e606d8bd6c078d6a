"""The patient-level outcome model: cross-fit on the development cohort, evaluate, ship.

``python -m analyses.outcome_model [--out models/outcome-mil-128] [--redraws 50]``

Embeds every slice of the development and analysis cohorts once with the stroke model's
backbone (cached), cross-fits the ordinal head over pooled embeddings on the development
cohort (5 folds by patient, pooling and penalty chosen on inner folds), writes the
evaluation table (volume, clinical, image, fusion, oracles, true model; paired comparisons
over outcome redraws) and the head fitted on every development patient, applied to the
analysis cohort. See :mod:`hypo.study.outcome`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from hypo._util import write_table_atomic
from hypo.nets.io import load_model
from hypo.paths import REPO_ROOT, cache_dir, default_cohort_dir
from hypo.study.outcome import (
    OutcomeConfig,
    bag_cam_localisation,
    load_outcome_data,
    run_outcome_study,
    save_outcome_model,
    write_tables,
)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m analyses.outcome_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "outcome-mil-128")
    p.add_argument("--encoder", default=str(REPO_ROOT / "models" / "stroke-gap-128"))
    p.add_argument("--layer", default=OutcomeConfig.layer)
    p.add_argument("--cohort", type=Path, default=None, help="development cohort (default dev)")
    p.add_argument("--analysis-cohort", type=Path, default=None)
    p.add_argument("--redraws", type=int, default=OutcomeConfig.n_redraws)
    p.add_argument("--no-attention", action="store_true", help="skip the attention row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cams",
        action="store_true",
        help="also bag CAMs of the analysis cohort (exploratory localisation table)",
    )
    args = p.parse_args(argv)

    def say(m):
        print(f"[outcome_model] {m}", file=sys.stderr, flush=True)

    config = OutcomeConfig(encoder=args.encoder, layer=args.layer, n_redraws=args.redraws,
                           seed=args.seed)  # fmt: skip
    t0 = time.perf_counter()
    model = load_model(config.encoder)
    try:
        dev = load_outcome_data(args.cohort or default_cohort_dir("dev"), config, model, say)
        an = load_outcome_data(args.analysis_cohort or default_cohort_dir("analysis"), config,
                               model, say)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    say(f"development: {len(dev.y)} patients; analysis: {len(an.y)} patients")
    res = run_outcome_study(dev, config, an, attention=not args.no_attention, log=say)
    command = "python -m analyses.outcome_model " + shlex.join(argv)
    write_tables(res, args.out)
    save_outcome_model(res, dev, model, args.out, command)
    if args.cams:
        loc = bag_cam_localisation(model, an.store, res.final.head, res.final.pooling,
                                   cache_dir() / "bag_cams" / an.cohort_id)  # fmt: skip
        write_table_atomic(args.out / "cams_localisation_analysis.csv", loc)
        print(loc.to_string(index=False))
    print(res.summary())
    say(f"done in {time.perf_counter() - t0:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
