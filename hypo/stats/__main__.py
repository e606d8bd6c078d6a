"""Command line of hypo.stats: fit a researcher's own table, list the registered hypotheses.

    python -m hypo.stats fit TABLE.csv "mrs ~ x + age" [--levels 0,1,2,3] [--ci profile]
    python -m hypo.stats hypotheses [DIR | --version vN] [--lock FILE]

``fit`` reads a CSV (or a TSV, by extension) and prints :func:`hypo.stats.po_analysis`:
the PO table (OR, 95 % CI, p), the Brant and nominal tests and, for terms that fail them,
the partial proportional-odds table. ``hypotheses`` prints a registry's hypotheses (default
the current version, ``analyses/registry/<version>/hypotheses``; ``--version v1`` an older
one) with their feature, map, covariates and population, whether the folder still matches
its lock and, for an amended version, whether the amendment chain holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..paths import registry_dir
from .po_analysis import po_analysis
from .registry import Registry, RegistryLockError, verify_amendment, verify_lock

PROG = "python -m hypo.stats"
DEFAULT_HYPOTHESES = registry_dir() / "hypotheses"


class CommandError(ValueError):
    """A bad input to the command line (shown without a traceback)."""


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (``.tsv``/``.tab``: tab-separated) or an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CommandError(
            f"{path}: cannot read as a {'TSV' if sep == chr(9) else 'CSV'} ({e})"
        ) from e


def _levels(text: str | None):
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        return parts


def cmd_fit(args) -> str:
    data = read_table(args.table)
    try:
        res = po_analysis(data, args.formula, levels=_levels(args.levels), ci=args.ci)
    except ValueError as e:
        raise CommandError(f"{args.table}: {e}") from e
    return f"{args.table}\n{res.summary()}"


def hypotheses_table(folder: Path) -> pd.DataFrame:
    """One row per registered hypothesis: what it tests, on which maps, in whom."""
    reg = Registry.load(folder)
    rows = []
    for h in sorted(reg.hypotheses.values(), key=lambda h: h.id):
        rows.append(
            {
                "id": h.id,
                "family": h.family,
                "feature": h.feature,
                "map": f"{h.method} of the {h.model} model's '{h.cam_class}' class at "
                f"{h.layer}, {h.aggregation}",
                "covariates": ", ".join(h.covariates),
                "sensitivity_covariates": ", ".join(h.sensitivity_covariates),
                "population": h.population,
                "outcome": h.outcome_coding,
                "feature_form": h.feature_form,
                "file": Path(h.source).name,
            }
        )
    return pd.DataFrame(rows)


def _default_lock(folder: Path) -> Path:
    # analyses/registry/<version>/hypotheses -> <version>/lock.json; elsewhere <folder>.lock.json
    if folder.name == "hypotheses" and (folder.parent / "lock.json").is_file():
        return folder.parent / "lock.json"
    return folder.parent / f"{folder.name}.lock.json"


def cmd_hypotheses(args) -> str:
    if args.version:
        if args.folder is not None:
            raise CommandError("give a folder or --version, not both")
        folder = registry_dir(args.version) / "hypotheses"
    else:
        folder = Path(args.folder) if args.folder is not None else DEFAULT_HYPOTHESES
    try:
        table = hypotheses_table(folder)
    except ValueError as e:
        raise CommandError(str(e)) from e
    lock = Path(args.lock) if args.lock else _default_lock(folder)
    if lock.is_file():
        try:
            verify_lock(folder, lock)
            status = f"matches its lock {lock}"
        except RegistryLockError as e:
            status = f"DOES NOT match its lock: {e}"
    else:
        status = f"no lock file at {lock}"
    if (folder.parent / "amendment.json").is_file():
        try:
            rec = verify_amendment(folder.parent)
            status += (f"; amends {rec['amends']} ({rec['date']}): chain verified, "
                       f"{rec['amends']} still matches its lock")  # fmt: skip
        except RegistryLockError as e:
            status += f"; amendment chain DOES NOT hold: {e}"
    lines = [f"{len(table)} registered hypotheses in {folder} ({status})", ""]
    for r in table.itertuples(index=False):
        lines += [
            f"{r.id} [{r.family}]  feature {r.feature} ({r.feature_form}), outcome {r.outcome}",
            f"    map          {r.map}",
            f"    covariates   {r.covariates}"
            + (f" (+ {r.sensitivity_covariates} in the sensitivity model)" if r.sensitivity_covariates else ""),
            f"    population   {r.population}",
            f"    file         {r.file}",
        ]  # fmt: skip
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="proportional-odds fit of a CSV table with its PO checks")
    f.add_argument("table", type=Path, help="CSV (or .tsv) with one row per patient")
    f.add_argument("formula", help='e.g. "mrs ~ x + age" (outcome: mRS 0-6 unless --levels)')
    f.add_argument("--levels", help="outcome levels, lowest first, comma-separated (not mRS)")
    f.add_argument("--ci", choices=("wald", "profile"), default="wald")
    f.set_defaults(run=cmd_fit)
    h = sub.add_parser("hypotheses", help="list the registered hypotheses")
    h.add_argument("folder", nargs="?", type=Path, default=None,
                   help="hypotheses folder (default: the current registry version's)")  # fmt: skip
    h.add_argument("--version", help="a registry version of analyses/registry (e.g. v1)")
    h.add_argument("--lock", type=Path, help="lock file (default: <version>/lock.json, or "
                   "<folder>.lock.json beside a folder elsewhere)")  # fmt: skip
    h.set_defaults(run=cmd_hypotheses)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(args.run(args))
    except CommandError as e:
        print(f"{PROG} {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
