"""Small shared helpers: atomic writes, stable hashing, seeded random streams."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import hypo


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


#: Most worker processes hypo starts by default (each imports numpy, pandas and scipy).
MAX_DEFAULT_WORKERS = 4


def env_workers() -> int:
    """Worker processes for hypo's process pools (anatomy per patient, the secondary
    battery per hypothesis): ``HYPO_WORKERS`` when set (``HYPO_WORKERS=1`` keeps everything
    in the calling process), else this machine's cores, at most
    :data:`MAX_DEFAULT_WORKERS`. Results never depend on it."""
    raw = os.environ.get("HYPO_WORKERS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"HYPO_WORKERS={raw!r}: expected a whole number >= 1") from None
        if n < 1:
            raise ValueError(f"HYPO_WORKERS={raw!r}: expected a whole number >= 1")
        return n
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def pool_workers(n_tasks: int, workers: int | None = None, worth_it: bool = True) -> int:
    """Processes for ``n_tasks`` independent tasks: ``workers`` when given, else
    :func:`env_workers` when the work is large enough to pay a worker's start
    (``worth_it``), else 1; never more than the tasks."""
    if workers is None:
        workers = env_workers() if worth_it else 1
    return max(1, min(int(workers), int(n_tasks)))


_POOL: dict = {}


def process_pool(n_workers: int):
    """A pool of ``n_workers`` spawned worker processes, shared by hypo's parallel stages
    (slice store, anatomy, slice features, the secondary battery) for the life of this
    process: a worker's start (its imports of numpy, pandas, scipy and OpenCV) costs
    seconds, paid once per run instead of once per stage. Another size, a dead worker or
    other ``HYPO_*`` environment variables than the pool was started under start a fresh
    pool. Tasks must be picklable module-level functions; callers collect their results in
    submission order, so no result depends on the pool.

    Spawned, not forked: the caller may hold TensorFlow's and OpenCV's thread pools, which
    a forked child must not inherit. Each worker runs OpenCV on one thread (the workers are
    the parallelism).
    """
    import atexit
    import concurrent.futures as cf
    import multiprocessing as mp

    n_workers = int(n_workers)
    # Workers read the environment once, when spawned (HYPO_CACHE, HYPO_DATA, ...): a pool
    # started under other HYPO_* settings is replaced.
    key = (n_workers, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("HYPO_"))))
    pool = _POOL.get("pool")
    stale = getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread", False)
    if pool is not None and (_POOL["key"] != key or stale):
        pool.shutdown(wait=False, cancel_futures=True)
        pool = None
    if pool is None:
        pool = cf.ProcessPoolExecutor(
            n_workers, mp_context=mp.get_context("spawn"), initializer=single_thread_worker
        )
        _POOL.update(pool=pool, key=key)
        if not _POOL.get("atexit"):
            atexit.register(shutdown_process_pool)
            _POOL["atexit"] = True
    return pool


def pool_map(fn, args, n_workers: int, chunksize: int = 1) -> Iterator:
    """``map(fn, args)``, in the shared worker processes when ``n_workers`` > 1, results in
    the order of ``args`` (a generator).

    When the workers cannot start at all, the work is done in this process with a warning,
    and later calls of the run stay in it: a script run as ``python my_script.py`` that
    calls hypo at its top level, without ``if __name__ == "__main__":``, is executed again
    by each spawned worker, which then cannot start workers of its own.
    """
    import concurrent.futures.process as cfp
    import warnings

    args = list(args)
    if n_workers <= 1 or len(args) <= 1 or _POOL.get("unusable"):
        yield from map(fn, args)
        return
    results = process_pool(n_workers).map(fn, args, chunksize=chunksize)
    try:
        first = next(results)
    except StopIteration:
        return
    except cfp.BrokenProcessPool:
        _POOL["unusable"] = True
        shutdown_process_pool()
        warnings.warn(
            "hypo: the worker processes could not start, so this run continues in one "
            "process. A script that calls hypo at its top level needs "
            '`if __name__ == "__main__":` around that code (each worker imports the script '
            "again); HYPO_WORKERS=1 skips the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        yield from map(fn, args)
        return
    yield first
    yield from results


def shutdown_process_pool() -> None:
    """Stop the shared worker processes (they are started again when next needed)."""
    pool = _POOL.pop("pool", None)
    _POOL.pop("key", None)
    if pool is not None:
        pool.shutdown(wait=not getattr(pool, "_broken", False), cancel_futures=True)


def single_thread_worker(opencv: bool = True) -> None:
    """Make this worker process run its native libraries on one thread: OpenCV, and the
    BLAS under numpy and scipy (threadpoolctl). The workers are the parallelism; a BLAS
    pool per worker spins waiting threads on the same cores (on 2 cores, 2 workers
    generating 40 patients took 8.2 s wall / 15.5 s CPU with their BLAS threads and 6.0 s /
    10.3 s with ``OPENBLAS_NUM_THREADS=1``). The main job's outputs and cohort files were
    compared byte for byte with and without this function: the same.

    ``opencv=False`` in a forked child: OpenCV's thread pool, inherited from the parent,
    hangs when resized there (``cv2.setNumThreads`` never returned in a child forked after
    the parent had used OpenCV)."""
    from threadpoolctl import threadpool_limits

    # Libraries loaded from here on (OpenCV's and scipy's own BLAS) read the variables;
    # those loaded already are limited by threadpoolctl, once more after OpenCV's import.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    threadpool_limits(limits=1)
    if not opencv:
        return
    import cv2

    cv2.setNumThreads(1)
    threadpool_limits(limits=1)


def blas_one_thread():
    """Context: the BLAS under numpy and scipy on one thread (threadpoolctl), for work
    made of many small array operations in this process. BLAS threads gain nothing on a
    3 x 4000 product or a 30,000-value dot product, and after each call they spin on the
    cores, waiting for the next: the anatomy's CPU time in one process was 1.9x its wall
    time with them and about 1.1x without (``python -m analyses.benchmark_features``,
    ``OPENBLAS_NUM_THREADS=1``: 184 against 111 slices per CPU second, the same 210 slices
    per wall second). The results are the same."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


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


#: Distribution name of each library hypo records (``opencv`` has several wheels).
DISTRIBUTIONS = {
    "scikit-learn": ("scikit-learn",),
    "opencv": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ),
}
#: Every library whose version can shape hypo's numbers (provenance records them all).
LIBRARIES = ("hypo", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "pingouin",
             "tensorflow", "keras", "plotnine", "matplotlib", "nibabel", "nilearn", "opencv",
             "h5py", "pyarrow", "patsy")  # fmt: skip


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed version of each library in ``names`` (None where not installed); the name
    ``python`` gives the interpreter's version. The one version collector of hypo: model
    cards, CAM provenance, the generator's record and report provenance all call it.
    Versions are read once per process (reading package metadata took 11 ms a CAM call):
    they are those of the libraries this process runs."""
    return dict(_library_versions(tuple(names)))


@functools.lru_cache(maxsize=64)
def _library_versions(names: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    out: dict[str, str | None] = {}
    for name in names:
        if name == "python":
            out[name] = platform.python_version()
            continue
        out[name] = None
        for dist in DISTRIBUTIONS.get(name, (name,)):
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    if "hypo" in out and out["hypo"] is None:
        # Run from a source checkout without installing: the package states its own version.
        out["hypo"] = hypo.__version__
    return tuple(out.items())


#: "&" is escaped only where Markdown would read an entity.
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")


#: "<" opens inline HTML only before a letter, "/", "!" or "?" ("p < 0.001" stays as is).
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")


def markdown_text(s) -> str:
    """Text safe in Markdown: a "<" that could open inline HTML is escaped, "p < 0.001"
    and ">" ("OR > 1") stay readable in the .md file."""
    return _MD_TAG.sub("&lt;", _MD_ENTITY.sub("&amp;", str(s)))


def _md_cell(v, float_format: str | None) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if float_format and isinstance(v, float):
        v = format(v, float_format)
    return markdown_text(v).replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def markdown_table(df: pd.DataFrame, index: bool = False, float_format: str | None = None) -> str:
    """A GitHub-flavoured Markdown table with every header and cell escaped (the one table
    writer of hypo: reports, model evaluations, the oracle). ``float_format`` (e.g.
    ``".4f"``) formats float cells; missing values are empty cells."""
    d = df.reset_index() if index else df
    header = [_md_cell(c, None) for c in d.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v, float_format) for v in row) + " |")
    return "\n".join(lines)


def lazy_exports(package: str, exports: dict[str, Sequence[str]]):
    """``(__getattr__, __dir__, __all__)`` of a package whose names load on first use.

    ``exports`` maps a submodule to the names it provides: ``from hypo.nets import
    load_model`` imports :mod:`hypo.nets.io` (and Keras) only then, so that light modules
    of the package (``hypo.nets.cards``) and the commands' preflights stay light.
    """
    where = {name: mod for mod, names in exports.items() for name in names}

    def __getattr__(name: str):
        mod = where.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{mod}"), name)

    def __dir__():
        return sorted(where)

    return __getattr__, __dir__, sorted(where)


#: model -> _HashState (its variables, their fingerprints and SHA-256 last seen).
_WEIGHT_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_hash(model, length: int = 16) -> str:
    """SHA-256 of a Keras model's weights (names, dtypes, shapes and bytes), first ``length``
    hex digits: the key of every cache that depends on a model (CAMs, embeddings).

    Hashing the bytes took a tenth of a CAM batch of the paper's model, so a model hashed
    again is only fingerprinted (64-bit FarmHash of every weight's bytes,
    ``tf.fingerprint``: a fifth of the cost eagerly, a fifteenth from one compiled call
    once the model has been hashed a few times) and its SHA-256 recomputed when a
    fingerprint has changed (weights assigned in place, as in a randomisation test, or by
    ``set_weights``) or the model holds other variables.
    """
    weights = list(model.weights)
    try:
        state = _WEIGHT_HASHES.get(model)
    except TypeError:  # not weakly referenceable: hash the bytes every time
        return _sha256_of_weights(weights)[:length]
    if state is None or not state.same_variables(weights):
        state = _HashState(weights)
        _WEIGHT_HASHES[model] = state
        state.digest = _sha256_of_weights(weights)  # a model hashed once pays nothing more
        return state.digest[:length]
    fp = state.fingerprint()
    if fp is None or fp != state.last:
        state.digest = _sha256_of_weights(weights)
    state.last = fp
    return state.digest[:length]


def _sha256_of_weights(weights) -> str:
    h = hashlib.sha256()
    for w in weights:
        arr = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{w.path}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class _HashState:
    """The SHA-256 of one model's weights and the fingerprints it was computed with."""

    #: Fingerprint op by op for this many calls, then trace one compiled call (0.1 s for
    #: the paper's model, 1 s for a ResNet50): worth it for a model hashed batch by batch.
    EAGER_CALLS = 2

    def __init__(self, weights):
        self.weights = weights  # held, so that no other variable can take their ids
        self.values = [getattr(w, "value", w) for w in weights]
        self.digest: str | None = None
        self.last: bytes | None = None
        self.calls = 0
        self.compiled = None
        self.usable = True

    def same_variables(self, weights) -> bool:
        """Whether ``weights`` are the very variables hashed before (a variable's name,
        dtype and shape never change)."""
        return len(weights) == len(self.weights) and all(
            a is b for a, b in zip(weights, self.weights)
        )

    def _fingerprints(self):
        import tensorflow as tf

        return tf.concat([tf.fingerprint(tf.reshape(v, [1, -1])) for v in self.values], 0)

    def fingerprint(self) -> bytes | None:
        """The weights' fingerprints as bytes; None where TensorFlow cannot compute them (a
        dtype without a kernel, a variable of another backend): then the bytes are hashed."""
        if not self.usable or not self.values:
            return None
        import tensorflow as tf

        self.calls += 1
        try:
            if self.calls <= self.EAGER_CALLS:
                return b"".join(
                    tf.fingerprint(tf.reshape(v, [1, -1])).numpy().tobytes() for v in self.values
                )
            if self.compiled is None:
                self.compiled = tf.function(self._fingerprints)
            return self.compiled().numpy().tobytes()
        except Exception:
            self.usable = False
            return None
