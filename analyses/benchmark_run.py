"""Speed of the main job from nothing and with its caches (issue 18's 3 min / 1 min targets).

    python -m analyses.benchmark_run [--baseline-workers 1] [--no-baseline] [--keep DIR]

Runs ``python -m analyses.asymmetry_vs_mrs`` in fresh folders (its own ``HYPO_DATA`` and
``HYPO_CACHE``: the synthetic cohort, slice stores, CAMs, anatomy and statistics are all
made), three times:

1. **cold**: from nothing, worker processes as a user gets them (``HYPO_WORKERS`` unset);
2. **warm**: the same command again, every cache present;
3. **baseline** (unless ``--no-baseline``): from nothing in other fresh folders with
   ``HYPO_WORKERS=--baseline-workers`` (default 1: everything in one process but the cohort
   generator), side by side in the same window.

Prints wall and CPU time (the child's user + system, all its processes) of each, the
stages of ``runtime.json``, the cold/baseline ratio, the targets (cold <= 180 s, warm <=
60 s, venv creation not counted) and whether every table of the runs is the same to the
last byte (``results.csv``, ``features.csv``, ``secondary_*.csv``). About 3 + 0.5 + 5 min
on 2 cores.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLD_TARGET_S = 180.0
WARM_TARGET_S = 60.0


def _run(root: Path, out: Path, env_extra: dict) -> dict:
    env = dict(os.environ)
    env.update(HYPO_DATA=str(root / "data"), HYPO_CACHE=str(root / "cache"), **env_extra)
    if "HYPO_WORKERS" not in env_extra:
        env.pop("HYPO_WORKERS", None)
    cmd = [sys.executable, "-m", "analyses.asymmetry_vs_mrs", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark_run: {' '.join(cmd)} failed ({proc.returncode})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    runs = json.loads((out / "runtime.json").read_text())["runs"]
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "stages": runs[-1]}


def _same_tables(a: Path, b: Path) -> dict:
    names = ["results.csv", "features.csv", *sorted(p.name for p in a.glob("secondary_*.csv"))]
    return {n: (b / n).exists() and filecmp.cmp(a / n, b / n, shallow=False) for n in names}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-workers", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--keep", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hypo-benchmark-run-") as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        res = {"load_before": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
        res["cold"] = _run(base / "cold", base / "cold" / "report", {})
        res["warm"] = _run(base / "cold", base / "cold" / "report-warm", {})
        same = _same_tables(base / "cold" / "report", base / "cold" / "report-warm")
        if not args.no_baseline:
            w = {"HYPO_WORKERS": str(args.baseline_workers)}
            res["baseline"] = _run(base / "baseline", base / "baseline" / "report", w)
            res["baseline_workers"] = args.baseline_workers
            res["cold_speedup_vs_baseline"] = round(
                res["baseline"]["wall_s"] / res["cold"]["wall_s"], 2
            )
            same.update(
                {
                    f"baseline:{k}": v
                    for k, v in _same_tables(
                        base / "cold" / "report", base / "baseline" / "report"
                    ).items()
                }
            )
        res["load_after"] = round(os.getloadavg()[0], 2)
        res["tables_identical"] = all(same.values())
        res["tables_differing"] = [k for k, v in same.items() if not v]
        res["cold_target_s"], res["warm_target_s"] = COLD_TARGET_S, WARM_TARGET_S
        res["cold_met"] = res["cold"]["wall_s"] <= COLD_TARGET_S
        res["warm_met"] = res["warm"]["wall_s"] <= WARM_TARGET_S
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
