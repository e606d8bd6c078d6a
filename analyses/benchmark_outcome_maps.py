"""Seconds per outcome-model map set, per layer (issue 17's nested power design).

``python -m analyses.benchmark_outcome_maps [--layer-sets block5_relu
block5_relu,block4_relu,block3_relu] [--planted-or 2.0] [--cache-root DIR]``

Loads the shared inputs once (development embeddings, analysis slice store and anatomy;
cached), then computes one map set (:func:`hypo.study.outcome_maps.outcome_map_set`)
per layer set, each with its own head refitted on development outcomes redrawn from the
generator's model (swelling OR ``--planted-or`` per SD), so none is read from another's
cache, and prints the seconds of its bag CAMs (all its layers in one pass) and features.
The first set also pays the tracing of the encoder's graph (once per process and layer
set). A rerun reads the cached map sets (seconds ~0): pass a new ``--cache-root`` to time
from nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from hypo._util import rng_for
from hypo.stats.calibration import redraw_mrs
from hypo.study.outcome_maps import (
    DEFAULT_LAYERS,
    DEFAULT_METHODS,
    dev_outcome_covariates,
    map_inputs,
    outcome_map_set,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analyses.benchmark_outcome_maps",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--layer-sets",
        nargs="+",
        default=[*DEFAULT_LAYERS, ",".join(DEFAULT_LAYERS)],
        help="comma-separated layers of one map set (default: each layer alone, then all)",
    )
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--planted-or", type=float, default=2.0)
    p.add_argument("--cache-root", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    def say(m):
        print(f"[benchmark_outcome_maps] {m}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    inp = map_inputs(log=say)
    say(f"shared inputs in {time.perf_counter() - t:.1f} s (cached after the first run)")
    covs, params, _ = dev_outcome_covariates()
    rows = []
    for r, spec in enumerate(args.layer_sets):
        layers = tuple(spec.split(","))
        y = redraw_mrs(covs, "default", rng_for(args.seed, "dev-redraw", r), params,
                       planted_or_per_sd=args.planted_or)  # fmt: skip
        t = time.perf_counter()
        ms = outcome_map_set(y, layers=layers, methods=args.methods,
                             cache_root=args.cache_root, log=say)  # fmt: skip
        total = time.perf_counter() - t
        s = ms.seconds
        rows.append((spec, s.get("cams_s", 0.0), s.get("features_s", 0.0), total))
    print(f"analysis patients {len(inp.patients)} ({len(inp.store.table)} slices); "
          f"development patients {len(inp.dev.y)}; methods {' '.join(args.methods)}; "
          f"cpu {os.cpu_count()}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'layers of the map set':<40} {'CAMs s':>8} {'features s':>10} {'total s':>8}")
    for spec, c, f, total in rows:
        print(f"{spec:<40} {c:8.1f} {f:10.1f} {total:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
