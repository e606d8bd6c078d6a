"""Seconds per outcome-model map set, per layer (issue 17's nested power design).

``python -m analyses.benchmark_outcome_maps [--layers block5_relu block3_relu]
[--redraws 2] [--planted-or 2.0]``

Loads the shared inputs once (development embeddings, analysis slice store and anatomy;
cached), then computes map sets (:func:`hypo.study.outcome_maps.outcome_map_features`):
the shipped head's (the cohort's own development mRS) and ``--redraws`` heads refitted on
development outcomes redrawn from the generator's model (swelling OR ``--planted-or`` per
SD), and prints the seconds of each layer's bag CAMs and features. A rerun reads the
cached map sets (seconds ~0): pass ``--cache-root`` to time from nothing.
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
    outcome_map_features,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analyses.benchmark_outcome_maps",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--redraws", type=int, default=1)
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
    vectors = [("shipped head (own mRS)", None)]
    for r in range(args.redraws):
        y = redraw_mrs(covs, "default", rng_for(args.seed, "dev-redraw", r), params,
                       planted_or_per_sd=args.planted_or)  # fmt: skip
        vectors.append((f"redraw {r} (OR {args.planted_or:g})", y))
    rows = []
    for name, y in vectors:
        t = time.perf_counter()
        df = outcome_map_features(y, layers=args.layers, methods=args.methods,
                                  cache_root=args.cache_root, log=say)  # fmt: skip
        total = time.perf_counter() - t
        secs = df.attrs.get("seconds", {})
        for layer in args.layers:
            s = secs.get(layer, {})
            rows.append((name, layer, s.get("cams_s", 0.0), s.get("features_s", 0.0)))
        say(f"{name}: {total:.1f} s for {len(args.layers)} layer(s) x {len(args.methods)} "
            f"method(s), {len(df)} patients")  # fmt: skip
    print(f"analysis patients {len(inp.patients)} ({len(inp.store.table)} slices); "
          f"development patients {len(inp.dev.y)}; cpu {os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'map set':<28} {'layer':<12} {'CAMs s':>8} {'features s':>10} {'total s':>8}")
    for name, layer, c, f in rows:
        print(f"{name:<28} {layer:<12} {c:8.1f} {f:10.1f} {c + f:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
