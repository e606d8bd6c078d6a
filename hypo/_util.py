"""Small shared helpers: atomic writes, stable hashing, seeded random streams."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    Works for files and folders. Readers never see a half-written result: either the old
    content (or nothing) or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path for {path}")
        if path.is_dir() and target.is_dir():
            # Replace a folder: move the old one aside first so the swap is quick.
            old = tmp / (path.name + ".old")
            os.replace(path, old)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (keys sorted, NumPy scalars converted)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def write_table_atomic(path: str | os.PathLike, df) -> Path:
    """Write a DataFrame as TSV (``.tsv``), CSV (``.csv``) or Parquet (``.parquet``) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".tsv":
            df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            raise ValueError(
                f"{path}: unknown table suffix {path.suffix!r}; use .tsv, .csv or .parquet"
            )
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys), first ``length`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """SHA-256 of a file's bytes, first ``length`` hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """An independent random stream for ``(seed, *keys)``.

    Streams depend only on the seed and the keys (e.g. a patient index), never on the
    order of calls or the number of worker processes.
    """
    words = [int(seed)]
    for k in keys:
        if isinstance(k, str):
            words.append(int(hashlib.sha256(k.encode()).hexdigest()[:8], 16))
        else:
            words.append(int(k))
    return np.random.default_rng(np.random.SeedSequence(words))
