"""Seconds per replicate of the power study's designs, measured side by side in one run.

    python -m analyses.benchmark_power [--features reports/asymmetry_vs_mrs/features.csv]
        [--redraws 50] [--fresh 3] [--fresh-patients 30] [--no-map-set]

Prints the shortcut (an outcome redraw with fixed maps), an outcome-model map set (head
refitted, maps and features at three layers x two methods, fresh cache) and fully fresh
cohorts through the main study's functions (also a smoke test of the whole path), with the
ratio of each to the shortcut. See :func:`hypo.study.power.benchmark`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hypo.paths import REPO_ROOT


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="python -m analyses.benchmark_power", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--features", type=Path,
                   default=REPO_ROOT / "reports" / "asymmetry_vs_mrs" / "features.csv")  # fmt: skip
    p.add_argument("--redraws", type=int, default=50)
    p.add_argument("--fresh", type=int, default=3)
    p.add_argument("--fresh-patients", type=int, default=30)
    p.add_argument("--no-map-set", action="store_true")
    args = p.parse_args(argv)
    from hypo.study.power import PowerError, benchmark

    try:
        t = benchmark(args.features, args.redraws, args.fresh, args.fresh_patients,
                      not args.no_map_set, say=lambda m: print(f"[benchmark_power] {m}",
                                                               file=sys.stderr, flush=True))  # fmt: skip
    except PowerError as e:
        print(f"benchmark_power: refused: {e}", file=sys.stderr)
        return 2
    base = float(t["seconds"].iloc[0])
    t["x_shortcut"] = t["seconds"] / base
    print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end; 2-core CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
