"""Command line: ``python -m hypo.cohort synth --out DIR --patients N --seed S [...]``."""

from __future__ import annotations

import argparse
import sys
import time

from .generator import generate_cohort
from .params import SynthParams


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m hypo.cohort synth",
        description="Generate a synthetic stroke DWI cohort (resumable; a complete run is a no-op).",
    )
    ap.add_argument("--out", required=True, help="cohort folder to write")
    ap.add_argument("--patients", type=int, required=True, help="number of patients (paper: 511)")
    ap.add_argument("--seed", type=int, required=True, help="cohort seed")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--null",
        action="store_const",
        dest="mode",
        const="null",
        help="mRS independent of every image property",
    )
    mode.add_argument(
        "--conditional-null",
        action="store_const",
        dest="mode",
        const="conditional_null",
        help="mRS depends on volume, side, age, NIHSS but not on swelling",
    )
    mode.add_argument(
        "--nonpo",
        action="store_const",
        dest="mode",
        const="nonpo",
        help="non-proportional-odds effect of swelling on mRS",
    )
    ap.add_argument("--params", help="JSON file of SynthParams fields (others keep defaults)")
    ap.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all CPUs)"
    )
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ap.add_argument(
        "--contrast",
        choices=("b1000", "b0", "adc"),
        default="b1000",
        help="image contrast rendered (same patients and truth in each; default b1000)",
    )
    ap.set_defaults(mode="default")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = SynthParams.from_json(args.params) if args.params else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = generate_cohort(
        args.out,
        args.patients,
        args.seed,
        mode=args.mode,
        params=params,
        workers=args.workers,
        progress=not args.no_progress,
        contrast=args.contrast,
    )
    print(
        f"cohort {out} ({args.patients} patients, mode {args.mode}) ready in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
