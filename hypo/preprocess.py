"""The paper's preprocessing and the slice store.

Per axial slice, as the paper's published code did:

1. drop black slices (1st percentile == 99th percentile, or 99th percentile < 10 on 0-255);
2. brain crop: threshold at the slice's 70th percentile (``cv2.threshold``), find contours
   (``cv2.findContours``, ``RETR_TREE``, ``CHAIN_APPROX_SIMPLE``), take the box over ALL
   contour points (not the largest contour), crop, bicubic resize to the target size;
3. per-image intensity normalisation: z-score (the paper's text, default) or the code's
   ``x / 127.5 - 1`` (``"tf"``).

Every slice's crop/resize is recorded as a :class:`SliceTransform`; masks go through the
identical geometry with nearest-neighbour interpolation, and a map can be taken back to
the native slice with :meth:`SliceTransform.inverse`.

The result is a :class:`SliceStore`: memory-mapped arrays plus a slice table, cached per
cohort content and configuration under ``hypo.paths.cache_dir() / "slices"``. Stores are
built privately and published by an atomic rename, so two processes building the same
store at once never corrupt it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hypo._util import stable_hash, write_json_atomic
from hypo.cohort.orientation import CONVENTION, axial_slices
from hypo.paths import cache_dir

_INTERP = {
    # INTER_NEAREST picks the source pixel at floor(x * scale), which shifts an enlarged
    # mask by up to one pixel towards higher rows/columns against its bicubic image (~0.5 px
    # on average); INTER_NEAREST_EXACT samples pixel centres, so a mask goes through the
    # same geometry as its image.
    "nearest": cv2.INTER_NEAREST_EXACT,
    "linear": cv2.INTER_LINEAR,
    "bilinear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
STORE_VERSION = 2  # 2: masks resized with INTER_NEAREST_EXACT


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the paper's preprocessing (defaults from the paper and its code).

    Parameters
    ----------
    size : int
        Output height and width in pixels (paper: 192; CPU preset: 128).
    normalization : {"zscore", "tf"}
        Per-image intensity scaling: zero mean / unit variance (the paper's text) or
        ``x / 127.5 - 1`` (the paper's code, Keras ``preprocess_input(mode="tf")``).
    crop : bool
        Apply the brain crop (the cropping experiment turns it off).
    crop_percentile : float
        Threshold percentile of the crop (paper code: 70).
    black_p99_min : float
        A slice whose 99th percentile is below this (0-255 scale) is dropped as black.
    interpolation : str
        Image interpolation of the resize (paper: bicubic). Masks always use nearest.
    masks : bool
        Carry lesion and ground-truth masks through the same geometry.
    """

    size: int = 192
    normalization: str = "zscore"
    crop: bool = True
    crop_percentile: float = 70.0
    black_p99_min: float = 10.0
    interpolation: str = "bicubic"
    masks: bool = True

    def __post_init__(self):
        if self.normalization not in ("zscore", "tf"):
            raise ValueError(
                f"PreprocessConfig.normalization={self.normalization!r}; expected 'zscore' or 'tf'"
            )
        if self.interpolation not in _INTERP:
            raise ValueError(
                f"PreprocessConfig.interpolation={self.interpolation!r}; expected one of {sorted(_INTERP)}"
            )
        if not (8 <= int(self.size) <= 1024):
            raise ValueError(f"PreprocessConfig.size={self.size}; expected 8-1024 pixels")

    def key(self) -> str:
        return stable_hash({"version": STORE_VERSION, **asdict(self)}, 12)


@dataclass(frozen=True)
class SliceTransform:
    """Geometry of one slice: crop box in native pixels (end exclusive) and output size."""

    crop_r0: int
    crop_r1: int
    crop_c0: int
    crop_c1: int
    native_rows: int
    native_cols: int
    out_rows: int
    out_cols: int

    @classmethod
    def from_row(cls, row) -> SliceTransform:
        """Build from a slice-table row (a Series or a mapping)."""
        size = row.get("out_size", None)
        out_r = int(row["out_rows"]) if "out_rows" in row else int(size)
        out_c = int(row["out_cols"]) if "out_cols" in row else int(size)
        return cls(
            int(row["crop_r0"]),
            int(row["crop_r1"]),
            int(row["crop_c0"]),
            int(row["crop_c1"]),
            int(row["native_rows"]),
            int(row["native_cols"]),
            out_r,
            out_c,
        )

    @property
    def scale(self) -> tuple[float, float]:
        """Native pixels per output pixel, (rows, columns)."""
        return (
            (self.crop_r1 - self.crop_r0) / self.out_rows,
            (self.crop_c1 - self.crop_c0) / self.out_cols,
        )

    def forward(self, img: np.ndarray, interpolation: str = "bicubic") -> np.ndarray:
        """Native 2D slice -> preprocessed geometry (crop, then resize)."""
        if img.shape != (self.native_rows, self.native_cols):
            raise ValueError(
                f"slice has shape {img.shape}; the transform expects {(self.native_rows, self.native_cols)}"
            )
        crop = img[self.crop_r0 : self.crop_r1, self.crop_c0 : self.crop_c1]
        return _resize(crop, (self.out_rows, self.out_cols), interpolation)

    def inverse(
        self, map2d: np.ndarray, interpolation: str = "linear", fill: float = 0.0
    ) -> np.ndarray:
        """Preprocessed geometry -> native 2D slice; outside the crop box gets ``fill``."""
        if map2d.shape != (self.out_rows, self.out_cols):
            raise ValueError(
                f"map has shape {map2d.shape}; the transform expects {(self.out_rows, self.out_cols)}"
            )
        out = np.full((self.native_rows, self.native_cols), fill, dtype=np.float32)
        h, w = self.crop_r1 - self.crop_r0, self.crop_c1 - self.crop_c0
        out[self.crop_r0 : self.crop_r1, self.crop_c0 : self.crop_c1] = _resize(
            np.asarray(map2d, dtype=np.float32), (h, w), interpolation
        )
        return out


def _resize(img: np.ndarray, shape: tuple[int, int], interpolation: str) -> np.ndarray:
    # cv2 takes (width, height); interpolation is passed by keyword: the paper's code passed
    # it positionally (as ``dst``) and silently got bilinear.
    if img.shape == tuple(shape):
        return img.copy()
    dtype = img.dtype
    src = img if dtype in (np.uint8, np.float32) else img.astype(np.float32)
    out = cv2.resize(src, (shape[1], shape[0]), interpolation=_INTERP[interpolation])
    return out.astype(dtype, copy=False)


def is_black(slice255: np.ndarray, p99_min: float = 10.0) -> bool:
    """The paper code's black-slice rule on a 0-255 slice."""
    p1, p99 = np.percentile(slice255, [1, 99])
    return bool(p1 == p99 or p99 < p99_min)


def crop_box(slice255: np.ndarray, percentile: float = 70.0) -> tuple[int, int, int, int]:
    """The paper's brain crop box ``(r0, r1, c0, c1)`` (end exclusive) of a 0-255 slice.

    Threshold at the slice's ``percentile`` with ``cv2.threshold`` (pixels above it), find
    contours, and take the min/max over all contour points. Falls back to the whole slice
    when nothing exceeds the threshold.
    """
    grey = np.clip(np.rint(slice255), 0, 255).astype(np.uint8)
    q = float(np.percentile(grey, percentile))
    _, binary = cv2.threshold(grey, q, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    rows, cols = grey.shape
    if not contours:
        return 0, rows, 0, cols
    pts = np.concatenate([c.reshape(-1, 2) for c in contours], axis=0)  # (x=col, y=row)
    c0, r0 = pts.min(axis=0)
    c1, r1 = pts.max(axis=0) + 1
    if r1 - r0 < 2 or c1 - c0 < 2:
        return 0, rows, 0, cols
    return int(r0), int(r1), int(c0), int(c1)


def normalize(img: np.ndarray, method: str) -> np.ndarray:
    """Per-image intensity scaling of a 0-255 image (see :class:`PreprocessConfig`)."""
    img = img.astype(np.float32, copy=False)
    if method == "tf":
        return img / 127.5 - 1.0
    sd = float(img.std())
    return (img - float(img.mean())) / (sd if sd > 1e-6 else 1.0)


def preprocess_volume(
    slices255: np.ndarray,
    config: PreprocessConfig,
    masks: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[int], list[SliceTransform]]:
    """Preprocess the axial slices of one volume.

    Parameters
    ----------
    slices255 : ndarray, shape (n_slices, rows, cols)
        Radiological-view axial slices on the 0-255 scale.
    config : PreprocessConfig
    masks : dict of name -> ndarray (n_slices, rows, cols), optional
        Label maps carried through the identical geometry (nearest neighbour).

    Returns
    -------
    images : float32 (n_kept, size, size), normalised
    out_masks : dict of name -> uint8 (n_kept, size, size)
    kept : list of kept slice indices
    transforms : list of SliceTransform, one per kept slice
    """
    masks = masks or {}
    n, rows, cols = slices255.shape
    for name, m in masks.items():
        if m.shape != slices255.shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}; its image has {slices255.shape}")
    size = int(config.size)
    images, kept, transforms = [], [], []
    out_masks: dict[str, list[np.ndarray]] = {k: [] for k in masks}
    for k in range(n):
        s = slices255[k].astype(np.float32, copy=False)
        if is_black(s, config.black_p99_min):
            continue
        box = crop_box(s, config.crop_percentile) if config.crop else (0, rows, 0, cols)
        t = SliceTransform(*box, rows, cols, size, size)
        img = t.forward(s, config.interpolation)
        # Bicubic overshoots a little; keep the 0-255 range the paper's uint8 images had.
        np.clip(img, 0.0, 255.0, out=img)
        images.append(normalize(img, config.normalization))
        for name, m in masks.items():
            out_masks[name].append(t.forward(np.ascontiguousarray(m[k], dtype=np.uint8), "nearest"))
        kept.append(k)
        transforms.append(t)
    empty = np.zeros((0, size, size), np.float32)
    imgs = np.stack(images) if images else empty
    mk = {
        name: (np.stack(v) if v else np.zeros((0, size, size), np.uint8))
        for name, v in out_masks.items()
    }
    return imgs, mk, kept, transforms


# --------------------------------------------------------------------------- slice store

TRUTH_MASKS = ("lesion", "brain", "ventricles", "cortex", "hemisphere")


@dataclass
class SliceStore:
    """Preprocessed slices of a cohort: arrays on disk plus one table row per slice."""

    path: Path
    images: np.ndarray
    masks: dict[str, np.ndarray]
    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def cohort_id(self) -> str:
        return self.meta["cohort_id"]

    @property
    def cohort_hash(self) -> str:
        return self.meta["cohort_hash"]

    @property
    def config(self) -> PreprocessConfig:
        return PreprocessConfig(**self.meta["config"])

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def open(cls, path: str | os.PathLike, mmap_mode: str = "r") -> SliceStore:
        """Open a built store without reading its arrays into memory."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path}: not a slice store (no meta.json)")
        meta = json.loads(meta_file.read_text())
        images = np.load(path / "images.npy", mmap_mode=mmap_mode)
        masks = {
            name: np.load(path / f"mask_{name}.npy", mmap_mode=mmap_mode)
            for name in meta.get("masks", [])
        }
        table = pd.read_parquet(path / "slices.parquet")
        return cls(path, images, masks, table, meta)

    def transform(self, i: int) -> SliceTransform:
        return SliceTransform.from_row(self.table.iloc[i])

    def patient_rows(self, pid: str) -> np.ndarray:
        """Store indices of one patient's slices, in slice order."""
        return np.flatnonzero(self.table["participant_id"].to_numpy() == pid)


def store_path(cohort, config: PreprocessConfig, root: Path | None = None) -> Path:
    root = Path(root) if root is not None else cache_dir() / "slices"
    # The intensity window is the loader's, not the preprocessing's, but it changes every
    # pixel, so it is part of the store's identity.
    window = getattr(cohort, "window", None)
    wkey = stable_hash(asdict(window) if window is not None else None, 6)
    return root / f"{cohort.cohort_id}-{cohort.content_hash()[:10]}-{config.key()}-w{wkey}"


def build_slice_store(
    cohort,
    config: PreprocessConfig | None = None,
    cache_root: str | os.PathLike | None = None,
    progress: bool = True,
    participants: Iterable[str] | None = None,
) -> SliceStore:
    """Preprocess every slice of ``cohort`` and return the cached :class:`SliceStore`.

    Reuses the cache when the cohort content and configuration are unchanged. Memory use
    is bounded by one patient: each patient is written to a private temporary folder,
    then assembled into memory-mapped arrays, then the folder is published by rename.
    """
    config = config or PreprocessConfig()
    pids = list(participants) if participants is not None else list(cohort.participant_ids())
    path = store_path(cohort, config, cache_root)
    if participants is not None:
        path = path.with_name(path.name + "-" + stable_hash(sorted(pids), 8))
    if (path / "meta.json").exists():
        return SliceStore.open(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _build_into(tmp, cohort, config, pids, progress)
        try:
            os.rename(tmp, path)
        except OSError:
            # Another process published the same store first: theirs is identical.
            if not (path / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SliceStore.open(path)


def _patient_masks(cohort, pid: str, config: PreprocessConfig) -> dict[str, np.ndarray]:
    out = {}
    if not config.masks:
        return out
    lesion = cohort.lesion_mask(pid)
    if lesion is not None:
        out["lesion"] = axial_slices(lesion)
    if getattr(cohort, "is_synthetic", False):
        for label in TRUTH_MASKS:
            m = cohort.truth_mask(pid, label)
            if m is not None:
                out[f"truth_{label}"] = axial_slices(m)
    return out


def _attach_labels(table: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    """Add lesion_visible / lesion_area_mm2 / label_source by (participant_id, slice)."""
    cols = ["lesion_visible", "lesion_area_mm2", "label_source"]
    if labels is None or len(labels) == 0:
        for c in cols:
            table[c] = np.nan
        table["lesion_visible"] = table["lesion_visible"].astype("Int64")
        return table
    keep = ["participant_id", "slice"] + [c for c in cols if c in labels.columns]
    out = table.merge(labels[keep], on=["participant_id", "slice"], how="left", validate="1:1")
    out["lesion_visible"] = out["lesion_visible"].astype("Int64")
    # Slices the labels do not name (none should exist) are flagged, never guessed.
    return out


#: Cohorts with fewer patients are preprocessed in the calling process (a worker's start
#: costs about as much as a few patients).
PARALLEL_MIN_PATIENTS = 24


def _preprocess_patient(cohort, pid: str, config: PreprocessConfig, parts: Path, j: int):
    """Preprocess one patient into ``parts/{j}_*.npy``; return its mask names, slice count
    and slice-table rows."""
    clinical = cohort.participants
    vol = cohort.dwi(pid)
    sl = axial_slices(vol.data)
    masks = _patient_masks(cohort, pid, config)
    imgs, mk, kept, transforms = preprocess_volume(sl, config, masks)
    np.save(parts / f"{j}_images.npy", imgs)
    for name, m in mk.items():
        np.save(parts / f"{j}_{name}.npy", m)
    vx, vy, vz = (float(z) for z in vol.zooms)
    group = clinical.at[pid, "group"] if "group" in clinical.columns else None
    mrs = clinical.at[pid, "mrs_3months"] if "mrs_3months" in clinical.columns else np.nan
    rows = [
        {
            "participant_id": pid,
            "slice": k,
            "group": group,
            "mrs_3months": float(mrs) if pd.notna(mrs) else np.nan,
            "crop_r0": t.crop_r0,
            "crop_r1": t.crop_r1,
            "crop_c0": t.crop_c0,
            "crop_c1": t.crop_c1,
            "native_rows": t.native_rows,
            "native_cols": t.native_cols,
            "out_rows": t.out_rows,
            "out_cols": t.out_cols,
            # Rows of a radiological axial slice run along y, columns along x.
            "pixel_mm_row": vy * t.scale[0],
            "pixel_mm_col": vx * t.scale[1],
            "voxel_mm_x": vx,
            "voxel_mm_y": vy,
            "slice_thickness_mm": vz,
        }
        for k, t in zip(kept, transforms)
    ]
    return sorted(masks), len(kept), rows


def _preprocess_patient_star(args):
    return _preprocess_patient(*args)


def _build_into(tmp: Path, cohort, config: PreprocessConfig, pids: list[str], progress: bool):
    from hypo._util import pool_map, pool_workers

    parts = tmp / "parts"
    parts.mkdir()
    args = [(cohort, pid, config, parts, j) for j, pid in enumerate(pids)]
    # Patients are independent and collected in order: the store is the same to the last
    # byte in one process or in the shared workers.
    n_workers = pool_workers(len(pids), worth_it=len(pids) >= PARALLEL_MIN_PATIENTS)
    results = pool_map(_preprocess_patient_star, args, n_workers, chunksize=4)
    rows, mask_names, counts = [], None, []
    bar = tqdm(total=len(pids), desc="preprocess", unit="patient", disable=not progress)
    for pid, (names, count, prow) in zip(pids, results):
        if mask_names is None:
            mask_names = names
        elif names != mask_names:
            raise ValueError(
                f"{pid}: has masks {names}, but earlier patients have {mask_names}; "
                "a cohort's patients must all carry the same masks"
            )
        counts.append(count)
        rows += prow
        bar.update(1)
    bar.close()
    n = int(sum(counts))
    size = int(config.size)
    images = np.lib.format.open_memmap(
        tmp / "images.npy", mode="w+", dtype=np.float32, shape=(n, size, size)
    )
    mask_names = mask_names or []
    masks = {
        name: np.lib.format.open_memmap(
            tmp / f"mask_{name}.npy", mode="w+", dtype=np.uint8, shape=(n, size, size)
        )
        for name in mask_names
    }
    start = 0
    for j, c in enumerate(counts):
        if c:
            images[start : start + c] = np.load(parts / f"{j}_images.npy")
            for name in mask_names:
                masks[name][start : start + c] = np.load(parts / f"{j}_{name}.npy")
        start += c
    images.flush()
    for m in masks.values():
        m.flush()
    del images, masks
    shutil.rmtree(parts)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"cohort {cohort.cohort_id}: no slices survived preprocessing")
    table = _attach_labels(table, cohort.slice_labels())
    table.insert(0, "store_index", np.arange(len(table)))
    table.to_parquet(tmp / "slices.parquet", index=False)
    gen = cohort.generator() or {}
    write_json_atomic(
        tmp / "meta.json",
        {
            "store_version": STORE_VERSION,
            "cohort_id": cohort.cohort_id,
            "cohort_hash": cohort.content_hash(),
            "cohort_root": str(cohort.root),
            "generator_hash": gen.get("hash"),
            "config": asdict(config),
            "config_key": config.key(),
            "window": asdict(cohort.window) if getattr(cohort, "window", None) else None,
            "masks": mask_names,
            "n_slices": n,
            "n_patients": len(pids),
            "convention": CONVENTION,
        },
    )
