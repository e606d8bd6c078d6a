"""``provenance.json``: what produced a report (versions, code, data and model hashes).

:func:`collect_provenance` records the Python and platform, the versions of the libraries
the pipeline uses (read from installed package metadata, so nothing heavy is imported),
the git commit of the repository when there is one, the time, and whatever the caller
passes: cohort hashes, model hashes, the hypothesis-registry lock hash, seeds, config.

NIfTI header text is never recorded (its ``descrip`` field can hold a patient's name):
header objects, raw bytes and keys named like header fields are refused.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hypo._util import file_hash, library_versions, write_json_atomic

#: Distribution names of the libraries whose versions a report records.
#: NIfTI header fields that can carry free text; a key with one of these names is refused.
HEADER_TEXT_KEYS = frozenset({"descrip", "aux_file", "intent_name", "db_name", "header"})


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git work tree at ``repo`` (default: hypo's own).

    Returns None outside a git work tree or where git is not installed.
    """
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # Tracked files only: untracked scratch files do not change what the code does.
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _jsonable(obj: Any, where: str) -> Any:
    mod = type(obj).__module__ or ""
    if mod.startswith("nibabel"):
        raise TypeError(
            f"provenance {where}: a {type(obj).__name__} from nibabel is not recorded (NIfTI "
            "headers can hold patient names); pass hashes or chosen numbers instead"
        )
    if isinstance(obj, bytes | bytearray | memoryview):
        raise TypeError(
            f"provenance {where}: raw bytes are not recorded (NIfTI header text arrives as "
            "bytes); decode and pass only what is safe"
        )
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            key = str(k)
            if key.lower() in HEADER_TEXT_KEYS:
                raise ValueError(
                    f"provenance {where}: key {key!r} looks like NIfTI header text, which is "
                    "never recorded"
                )
            out[key] = _jsonable(v, f"{where}.{key}")
        return out
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(
        f"provenance {where}: cannot record a {type(obj).__name__}; pass JSON-like values "
        "(dict, list, str, numbers, dataclasses, paths)"
    )


def collect_provenance(repo: str | os.PathLike | None = None, **parts: Any) -> dict[str, Any]:
    """Everything needed to say what produced a report.

    Parameters
    ----------
    repo : path, optional
        Git work tree whose commit to record; default the one hypo is imported from.
    **parts
        Caller's records, kept under their own names, e.g. ``cohort={"id": ...,
        "participants_sha256": ...}``, ``models={"stroke": {"file_sha256": ...}}``,
        ``registry_lock_hash="..."``, ``seeds={"cam": 0}``, ``config=AnalysisConfig(...)``
        (dataclasses are recorded as dicts). Values must be JSON-like.

    Returns
    -------
    dict
        ``created_utc`` (ISO 8601), ``python``, ``platform``, ``command`` (``sys.argv``),
        ``versions`` (library -> version), ``git`` (commit, dirty; None outside git) and
        each part.
    """
    reserved = {"created_utc", "python", "python_implementation", "platform", "command"}
    reserved |= {"versions", "git"}
    clash = reserved & set(parts)
    if clash:
        raise ValueError(f"provenance: part name(s) {sorted(clash)} are reserved")
    prov = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "command": list(sys.argv),
        "versions": library_versions(),
        "git": git_state(repo),
    }
    for name, value in parts.items():
        prov[name] = _jsonable(value, name)
    return prov


def hash_files(paths, length: int = 16) -> dict[str, str]:
    """``{path: sha256 prefix}`` of files (e.g. participants.tsv, model files)."""
    out = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"cannot hash {p}: not a file")
        out[str(p)] = file_hash(p, length)
    return out


def write_provenance(path: str | os.PathLike, prov: Mapping[str, Any]) -> Path:
    """Write a provenance record as indented JSON atomically (checked, no NaN)."""
    clean = _jsonable(dict(prov), "record")
    json.dumps(clean, allow_nan=False)  # fail here, not in a reader
    return write_json_atomic(path, clean)
