"""``python -m hypo.cohort``: validate, inspect, import and generate cohorts.

Subcommands::

    validate DIR [--skip-invalid] [--headers-only]   one line per problem; exit 1 if any
    info DIR [--skip-invalid]                        patients, groups, slices, lesion slices
    import-paper H5 CSV --out DIR [--voxel-mm X Y Z] the paper group's HDF5 + clinical CSV
    import-isles ROOT --out DIR                      an ISLES 2022 training folder
    synth ...                                        hypo.cohort.synthetic.cli.main(...)
    realism DIR ...                                  hypo.cohort.realism.main([DIR, ...])

``synth`` and ``realism`` hand every following argument, unchanged, to their own parsers.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

#: Subcommands whose arguments belong to another module's parser.
DELEGATED = {
    "synth": ("hypo.cohort.synthetic.cli", "generate a synthetic cohort (own options)"),
    "realism": ("hypo.cohort.realism", "check a synthetic cohort's realism (own options)"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hypo.cohort", description="Validate, inspect, import and generate cohorts."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="list every problem of a cohort folder")
    p.add_argument("dir", type=Path)
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="exit 0 when only individual patients are bad (load(skip_invalid=True) would work)",
    )
    p.add_argument(
        "--headers-only",
        action="store_true",
        help="check headers only; faster, but misses truncated files and NaN voxels",
    )
    p.set_defaults(func=_validate)

    p = sub.add_parser("info", help="patients, groups, slices and lesion slices of a cohort")
    p.add_argument("dir", type=Path)
    p.add_argument("--skip-invalid", action="store_true", help="leave bad patients out")
    p.set_defaults(func=_info)

    p = sub.add_parser("import-paper", help="import the paper group's HDF5 + clinical CSV")
    p.add_argument("h5", type=Path)
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, required=True, help="new cohort folder")
    p.add_argument(
        "--voxel-mm",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 6.0),
        metavar=("X", "Y", "Z"),
        help="voxel size to record (the HDF5 has none); default 1 1 6",
    )
    p.add_argument(
        "--sex-code",
        action="append",
        default=[],
        metavar="VALUE=M|F",
        help="meaning of a numeric sex code in the CSV, e.g. --sex-code 0=F --sex-code 1=M",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=_import_paper)

    p = sub.add_parser("import-isles", help="import an ISLES 2022 training folder")
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True, help="new cohort folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=_import_isles)

    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _validate(args) -> int:
    from hypo.cohort.validation import summary_line, validate

    problems = validate(args.dir, check_voxels=not args.headers_only)
    for p in problems:
        print(p)
    if not problems:
        print(summary_line(args.dir, problems))
        return 0
    cohort_level = [p for p in problems if p.participant_id is None]
    if args.skip_invalid and not cohort_level:
        skipped = sorted({p.participant_id for p in problems})
        print(f"OK with --skip-invalid: {len(skipped)} patient(s) would be skipped")
        return 0
    print(summary_line(args.dir, problems), file=sys.stderr)
    return 1


def _info(args) -> int:
    import hypo.cohort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = hypo.cohort.load(args.dir, skip_invalid=args.skip_invalid)
    p = cohort.participants
    labels = cohort.slice_labels()
    groups = ", ".join(f"{g} {n}" for g, n in p["group"].value_counts().sort_index().items())
    visible = labels["lesion_visible"].fillna(False).astype(bool)
    sources = ", ".join(f"{s} {n}" for s, n in labels["label_source"].value_counts().items())
    print(
        f"cohort        {cohort.cohort_id} ({'synthetic' if cohort.is_synthetic else 'imported'})"
    )
    print(f"patients      {len(p)} ({groups}); skipped {len(cohort.skipped)}")
    print(f"slices        {len(labels)} ({len(labels) / max(len(p), 1):.1f} per patient)")
    print(f"lesion slices {int(visible.sum())} (labels from: {sources})")
    print(f"lesion masks  {'yes' if cohort.has_lesion_masks else 'no'}")
    if "mrs_3months" in p.columns:
        print(
            f"mrs_3months   {int(p['mrs_3months'].notna().sum())} known, "
            f"{int(p['mrs_3months'].isna().sum())} n/a"
        )
    return 0


def _import_paper(args) -> int:
    from hypo.cohort.importers import import_paper_hdf5

    codes = {}
    for item in args.sex_code:
        value, _, label = item.partition("=")
        if label not in ("M", "F") or not value:
            raise ValueError(f"--sex-code {item!r}: expected VALUE=M or VALUE=F, e.g. 1=M")
        codes[value] = label
    out = import_paper_hdf5(
        args.h5,
        args.csv,
        args.out,
        voxel_mm=tuple(args.voxel_mm),
        sex_codes=codes or None,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0


def _import_isles(args) -> int:
    from hypo.cohort.importers import import_isles2022

    out = import_isles2022(args.root, args.out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
