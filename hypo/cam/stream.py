"""CAMs for a whole slice store, streamed to a resumable on-disk cache.

Layout of ``out_dir``::

    manifest.json          what was computed, from what (store identity, model hash, layer,
                           methods, classes, options), provenance, status
    index.parquet          store_index, participant_id, slice (when the store has them)
    chunks/00000/          one folder per chunk of ``chunk_size`` slices, written atomically:
        raw_<method>.npy       (n, n_classes, *layer_spatial) float32, raw maps
        maps_<method>.npy      (n, n_classes, *input_spatial) float32 (only with resize=True)
        logits.npy, probabilities.npy

A chunk folder either exists complete or not at all, so a killed run resumes by skipping
the chunks already there. Only one chunk of maps is ever held in memory; :class:`CamStore`
reads chunks back through memory maps.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._util import atomic_path, stable_hash, write_json_atomic, write_table_atomic
from .resize import canonical_interpolation, resize_maps
from .result import CamResult

MANIFEST = "manifest.json"
INDEX = "index.parquet"
CHUNKS = "chunks"
FORMAT_VERSION = 1


def store_identity(store) -> dict[str, Any]:
    """What identifies a slice store's content: its cohort hash and configuration when it
    has them, else a hash of its image bytes (streamed, never all in memory)."""
    n = int(len(store.images))
    shape = [int(s) for s in store.images.shape]
    cohort_hash = getattr(store, "cohort_hash", None)
    if cohort_hash:
        meta = getattr(store, "meta", {}) or {}
        return {
            "cohort_hash": str(cohort_hash),
            "config": meta.get("config"),
            "n_slices": n,
            "shape": shape,
        }
    h = hashlib.sha256()
    for start in range(0, n, 1024):
        h.update(np.ascontiguousarray(store.images[start : start + 1024], np.float32).tobytes())
        _release_pages(store.images)
    return {"images_sha256": h.hexdigest()[:16], "n_slices": n, "shape": shape}


def _release_pages(images) -> None:
    """Drop the pages of a memory-mapped store read so far from this process's resident set.

    Pages of a read memory map stay resident until the map is closed, so streaming a
    10,000-slice store would otherwise grow RSS by the whole file; they are re-read from
    disk if touched again. (Uses NumPy's private ``_mmap`` handle; a no-op elsewhere.)
    """
    mm = getattr(images, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _chunk_dir(out_dir: Path, i: int) -> Path:
    return out_dir / CHUNKS / f"{i:05d}"


def _model_images(model, batch: np.ndarray) -> np.ndarray:
    want = len(model.inputs[0].shape)
    x = np.asarray(batch, dtype=np.float32)
    # Stores hold single-channel slices without the channel axis.
    if x.ndim == want - 1 and model.inputs[0].shape[-1] == 1:
        x = x[..., None]
    return x


def compute_store(
    model,
    store,
    out_dir,
    layer: str | None = None,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    classes: Sequence[int] | None = None,
    gradcampp_alpha_norm: bool = False,
    resize: bool = False,
    interpolation: str = "bilinear",
    batch_size: int = 32,
    chunk_size: int = 256,
    progress: bool = True,
    overwrite: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> CamStore:
    """Compute CAMs for every slice of ``store`` and cache them under ``out_dir``.

    Parameters
    ----------
    model : keras.Model
        As in :func:`hypo.cam.compute`.
    store : SliceStore or any object with ``.images`` (n, H, W[, C]) and ``.table``
        Slices in store order; ``images`` may be a memory map (read one chunk at a time).
    out_dir : path
        Cache folder (created). Re-running with the same inputs resumes: finished chunks are
        skipped. Different inputs (model weights, layer, methods, ...) raise unless
        ``overwrite=True``.
    resize : bool
        Also store maps resized to the input size (``chunk x classes x H x W`` float32 per
        method: about 9 GB for 10,000 slices, 3 classes and 2 methods at 192 x 192). Off by
        default: :meth:`CamStore.maps` resizes raw maps on read, deterministically.
    interpolation : str
        Kernel used for resized maps (recorded).
    chunk_size : int
        Slices per chunk file (the unit of resumption and of memory use).
    on_chunk : callable, optional
        Called with the chunk index after each chunk has been written.

    Returns
    -------
    CamStore
    """
    out_dir = Path(out_dir)
    # The engine (TensorFlow) loads here: reading a cache (CamStore) must not need it,
    # e.g. in the feature workers.
    from .engine import (
        CamConfig,
        _check_classes,
        _check_methods,
        compute_with_config,
        default_cam_layer,
        model_hash,
    )

    methods = _check_methods(methods)
    classes = _check_classes(model, classes)
    canonical_interpolation(interpolation)
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1 (got {chunk_size}, {batch_size})")
    images = getattr(store, "images", None)
    table = getattr(store, "table", None)
    if images is None or table is None:
        raise ValueError("store must have .images and .table (a hypo.preprocess.SliceStore)")
    n = int(len(images))
    if len(table) != n:
        raise ValueError(f"store table has {len(table)} rows but images hold {n} slices")
    layer = layer if layer is not None else default_cam_layer(model)
    key = {
        "format_version": FORMAT_VERSION,
        "store": store_identity(store),
        "model_hash": model_hash(model),
        "layer": layer,
        "methods": list(methods),
        "classes": list(classes),
        "gradcampp_alpha_norm": bool(gradcampp_alpha_norm),
        "resize": bool(resize),
        "interpolation": interpolation,
        "chunk_size": int(chunk_size),
        "score": "pre-softmax logit",
        # maps of mixed-precision models were bfloat16 before float32 twins: never reuse them
        "maps_dtype": "float32",
    }
    manifest_file = out_dir / MANIFEST
    if manifest_file.exists():
        old = json.loads(manifest_file.read_text())
        if old.get("key") != key:
            if not overwrite:
                diff = sorted(k for k in key if old.get("key", {}).get(k) != key[k])
                raise ValueError(
                    f"{out_dir} holds CAMs computed differently (differs in {diff}); "
                    "use another folder or overwrite=True"
                )
            shutil.rmtree(out_dir / CHUNKS, ignore_errors=True)
            manifest_file.unlink()
    n_chunks = (n + chunk_size - 1) // chunk_size
    (out_dir / CHUNKS).mkdir(parents=True, exist_ok=True)
    # Leftovers of a run killed while writing a chunk (complete chunks were renamed).
    for stale in (out_dir / CHUNKS).glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    manifest = {
        "key": key,
        "key_hash": stable_hash(key),
        "n_slices": n,
        "n_chunks": n_chunks,
        "input_shape": [int(s) for s in _model_images(model, images[:1]).shape[1:]],
        "status": "incomplete",
    }
    if manifest_file.exists():
        manifest = {**json.loads(manifest_file.read_text()), **manifest}
    write_json_atomic(manifest_file, manifest)
    if not (out_dir / INDEX).exists():
        cols = [c for c in ("participant_id", "slice") if c in table.columns]
        index = pd.DataFrame({"store_index": np.arange(n)})
        for c in cols:
            index[c] = table[c].to_numpy()
        write_table_atomic(out_dir / INDEX, index)

    cfg = CamConfig(
        layer=layer,
        methods=methods,
        classes=classes,
        resize=False,
        normalize="none",
        interpolation=interpolation,
        gradcampp_alpha_norm=gradcampp_alpha_norm,
        batch_size=batch_size,
    )
    todo = [i for i in range(n_chunks) if not _chunk_dir(out_dir, i).exists()]
    done_slices = n - sum(min(chunk_size, n - i * chunk_size) for i in todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=done_slices, unit="slice", desc="CAMs")
    provenance = manifest.get("provenance")
    try:
        for i in todo:
            start, stop = i * chunk_size, min(n, (i + 1) * chunk_size)
            x = _model_images(model, images[start:stop])
            res = compute_with_config(model, x, cfg)
            with atomic_path(_chunk_dir(out_dir, i)) as tmp:
                tmp.mkdir()
                for m in methods:
                    np.save(tmp / f"raw_{m}.npy", res.raw[m])
                    if resize:
                        np.save(
                            tmp / f"maps_{m}.npy",
                            resize_maps(res.raw[m], x.shape[1:-1], interpolation),
                        )
                np.save(tmp / "logits.npy", res.logits)
                np.save(tmp / "probabilities.npy", res.probabilities)
            if provenance is None:
                provenance = {k: v for k, v in res.provenance.items() if k != "normalisation"}
                manifest["provenance"] = provenance
                write_json_atomic(manifest_file, manifest)
            del res, x
            _release_pages(images)
            if bar is not None:
                bar.update(stop - start)
            if on_chunk is not None:
                on_chunk(i)
    finally:
        if bar is not None:
            bar.close()
    manifest["status"] = "complete"
    write_json_atomic(manifest_file, manifest)
    return CamStore.open(out_dir)


class CamStore:
    """Read access to CAMs cached by :func:`compute_store`, one chunk at a time.

    Attributes
    ----------
    path : Path
    manifest : dict
    n_slices, chunk_size, n_chunks : int
    methods : tuple of str
    classes : tuple of int
    layer : str
    index : DataFrame
        store_index (+ participant_id, slice) per cached slice.
    """

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        key = manifest["key"]
        self.n_slices = int(manifest["n_slices"])
        self.n_chunks = int(manifest["n_chunks"])
        self.chunk_size = int(key["chunk_size"])
        self.methods = tuple(key["methods"])
        self.classes = tuple(key["classes"])
        self.layer = key["layer"]
        self.interpolation = key["interpolation"]
        self.input_shape = tuple(manifest["input_shape"])

    @classmethod
    def open(cls, path) -> CamStore:
        path = Path(path)
        f = path / MANIFEST
        if not f.exists():
            raise FileNotFoundError(f"{path}: no CAM cache here (no {MANIFEST})")
        return cls(path, json.loads(f.read_text()))

    @property
    def complete(self) -> bool:
        return all(_chunk_dir(self.path, i).exists() for i in range(self.n_chunks))

    @property
    def provenance(self) -> dict:
        return self.manifest.get("provenance", {})

    @property
    def raw_shape(self) -> tuple[int, ...]:
        """Spatial shape of the raw (layer-resolution) maps."""
        for i in range(self.n_chunks):
            try:
                return tuple(self._load(i, f"raw_{self.methods[0]}").shape[2:])
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"{self.path}: no computed CAM chunk")

    @property
    def cell_size(self) -> tuple[float, ...]:
        """Input pixels per layer cell, per spatial axis."""
        raw = self.raw_shape
        return tuple(i / r for i, r in zip(self.input_shape[: len(raw)], raw))

    @property
    def index(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / INDEX)

    def _load(self, i: int, name: str) -> np.ndarray:
        d = _chunk_dir(self.path, i)
        if not d.exists():
            raise FileNotFoundError(
                f"{self.path}: chunk {i} has not been computed yet; run compute_store again"
            )
        return np.load(d / f"{name}.npy", mmap_mode="r")

    def _check_method(self, method: str) -> None:
        if method not in self.methods:
            raise KeyError(f"method {method!r} was not cached; cached: {self.methods}")

    def iter_chunks(
        self, method: str, resized: bool = False
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start, stop, maps)`` chunk by chunk (memory-mapped raw maps, or resized
        maps computed/read per chunk)."""
        for i in range(self.n_chunks):
            yield self.chunk(i, method, resized)

    def chunk(self, i: int, method: str, resized: bool = False) -> tuple[int, int, np.ndarray]:
        """``(start, stop, maps)`` of chunk ``i`` (store rows ``start:stop``)."""
        self._check_method(method)
        if not 0 <= i < self.n_chunks:
            raise IndexError(f"{self.path}: chunk {i} out of 0..{self.n_chunks - 1}")
        start = i * self.chunk_size
        stop = min(self.n_slices, start + self.chunk_size)
        return start, stop, self._chunk_maps(i, method, resized)

    def _chunk_maps(self, i: int, method: str, resized: bool) -> np.ndarray:
        if not resized:
            return self._load(i, f"raw_{method}")
        if self.manifest["key"]["resize"]:
            return self._load(i, f"maps_{method}")
        return resize_maps(
            self._load(i, f"raw_{method}"), self.input_shape[:-1], self.interpolation
        )

    def maps(self, method: str, indices=None, resized: bool = True) -> np.ndarray:
        """Maps of the slices ``indices`` (store order; default all), reading only the
        chunks they fall in. Shape ``(len(indices), n_classes, *spatial)``."""
        self._check_method(method)
        idx = np.arange(self.n_slices) if indices is None else np.asarray(indices, dtype=int)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self.n_slices)):
            raise ValueError(f"slice indices must be 1D within 0..{self.n_slices - 1}")
        chunk_of = idx // self.chunk_size
        out = None
        for c in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == c)
            arr = self._load(int(c), f"raw_{method}")
            part = np.asarray(arr[idx[sel] - c * self.chunk_size])
            if resized:
                if self.manifest["key"]["resize"]:
                    part = np.asarray(
                        self._load(int(c), f"maps_{method}")[idx[sel] - c * self.chunk_size]
                    )
                else:
                    part = resize_maps(part, self.input_shape[:-1], self.interpolation)
            if out is None:
                out = np.empty((len(idx), *part.shape[1:]), dtype=np.float32)
            out[sel] = part
        if out is None:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        return out

    def _small(self, name: str) -> np.ndarray:
        return np.concatenate([np.asarray(self._load(i, name)) for i in range(self.n_chunks)])

    @property
    def logits(self) -> np.ndarray:
        return self._small("logits")

    @property
    def probabilities(self) -> np.ndarray:
        return self._small("probabilities")

    def result(self, indices, resized: bool = True) -> CamResult:
        """The cached CAMs of some slices as a :class:`CamResult`."""
        idx = np.asarray(indices, dtype=int)
        raw = {m: self.maps(m, idx, resized=False) for m in self.methods}
        maps = {m: self.maps(m, idx, resized=True) for m in self.methods} if resized else raw
        lay = raw[self.methods[0]].shape[2:]
        cell = tuple(float(i) / float(s) for i, s in zip(self.input_shape[:-1], lay))
        return CamResult(
            maps=maps,
            raw=raw,
            probabilities=self.probabilities[idx],
            logits=self.logits[idx],
            classes=self.classes,
            layer=self.layer,
            cell_size=cell,
            provenance={**self.provenance, "normalisation": "none", "cache": str(self.path)},
        )
