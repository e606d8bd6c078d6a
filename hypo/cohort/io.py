"""Read a cohort in the hypo layout: patient table, DWI volumes, lesion masks, slice labels.

The layout is documented in :mod:`hypo.cohort.layout`. Every volume comes back in the
canonical RAS+ voxel order (:func:`hypo.cohort.orientation.to_canonical`) with its voxel
size kept, and windowed to the 0-255 grey scale the paper's models were trained on.

Typical use::

    import hypo.cohort

    cohort = hypo.cohort.load("data/synthetic/dev-n511-s20230511")
    vol = cohort.dwi(cohort.participant_ids()[0])
    labels = cohort.slice_labels()
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from hypo.cohort import layout
from hypo.cohort.contrast import normalise_contrast
from hypo.cohort.orientation import to_canonical

#: A BIDS subject label: ``sub-`` followed by letters and digits only.
PARTICIPANT_ID_PATTERN = re.compile(r"^sub-[A-Za-z0-9]+$")

#: Values the ``group`` column may take (matched case-insensitively, stored as written here).
GROUPS = ("stroke", "TIA")

#: Strings read as a missing value in participants.tsv / slice_labels.tsv (BIDS writes ``n/a``).
NA_VALUES = ("n/a", "N/A", "NA", "na", "", "nan", "NaN")

#: Columns that are never converted to numbers even when every value looks numeric.
TEXT_COLUMNS = ("participant_id", "group")

#: Tolerance (mm) when comparing the affines of an image and its mask.
AFFINE_ATOL_MM = 1e-3

#: Bytes read from each end of a compressed image for the content hash.
_HASH_EDGE_BYTES = 1 << 16


class CohortError(ValueError):
    """A cohort on disk does not meet the hypo layout; ``problems`` lists every issue."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            lines = "\n".join(f"  {p}" for p in self.problems)
            message = f"{message}\n{lines}"
        super().__init__(message)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cohort on disk.

    Attributes
    ----------
    participant_id : str or None
        The patient concerned; ``None`` for a problem of the whole cohort (e.g. a missing
        column), which ``skip_invalid`` cannot work around.
    where : str
        File path relative to the cohort root, or ``"participants.tsv:<column>"``.
    what : str
        What is wrong.
    expected : str
        What was expected instead.
    """

    participant_id: str | None
    where: str
    what: str
    expected: str

    def __str__(self) -> str:
        who = self.participant_id if self.participant_id is not None else "(cohort)"
        return f"{who}: {self.where}: {self.what}; expected {self.expected}"


@dataclass(frozen=True)
class WindowConfig:
    """How raw scanner intensities are mapped to the 0-255 grey scale.

    The window runs from the ``low_percentile`` to the ``high_percentile`` of the head
    (foreground) voxels of each volume; values are mapped linearly to 0-255 and clipped.
    The paper's images were 8-bit JPEG exports, so this is the closest reproducible
    stand-in for the export's windowing.

    Why the foreground and 99.8: scanner noise makes nearly every background voxel
    non-zero, so percentiles of all non-zero voxels sit low in the brain's range and clip
    the brightest normal tissue to 255 together with the infarct, which then no longer
    stands out. Percentiles of the voxels above an Otsu threshold (the head) keep an
    infarct brighter than normal tissue unless it fills more than 0.2 % of the head.

    Attributes
    ----------
    low_percentile, high_percentile : float
        Percentiles (0-100) of the foreground voxels mapped to 0 and 255.
    foreground : {"otsu", "nonzero"}
        Which voxels the percentiles are taken over: above an Otsu threshold of the
        non-zero voxels (default), or all non-zero voxels.
    """

    low_percentile: float = 0.5
    high_percentile: float = 99.8
    foreground: str = "otsu"

    def __post_init__(self):
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(
                f"window percentiles ({self.low_percentile}, {self.high_percentile}) must "
                "satisfy 0 <= low < high <= 100"
            )
        if self.foreground not in ("otsu", "nonzero"):
            raise ValueError(f"window foreground {self.foreground!r}: expected 'otsu' or 'nonzero'")


@dataclass(frozen=True)
class Volume:
    """One DWI volume in canonical RAS+ voxel order, windowed to 0-255.

    Attributes
    ----------
    participant_id : str
    data : ndarray of float32, shape (x, y, z)
        Canonical RAS+ voxels (axis 0 left -> right, 1 posterior -> anterior,
        2 inferior -> superior), grey values 0-255.
    affine : ndarray, shape (4, 4)
        Canonical voxel -> world (mm) affine.
    zooms : ndarray, shape (3,)
        Voxel size in mm along the canonical axes.
    window : tuple of float or None
        Raw intensities mapped to 0 and 255; ``None`` when the file already held uint8
        grey values and was not windowed.
    source : str
        The file read.
    native_shape, native_affine, native_axcodes
        Shape, affine and axis codes of the file as stored, to write maps back into the
        scanner's grid.
    """

    participant_id: str
    data: np.ndarray
    affine: np.ndarray
    zooms: np.ndarray
    window: tuple[float, float] | None
    source: str
    native_shape: tuple[int, ...]
    native_affine: np.ndarray
    native_axcodes: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        """Number of axial slices (canonical axis 2)."""
        return int(self.data.shape[2])


# --------------------------------------------------------------------------- reading


def read_voxels(
    img: nib.spatialimages.SpatialImage, path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`to_canonical` with a read failure (e.g. a truncated ``.nii.gz``) naming the file."""
    try:
        return to_canonical(img)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise CohortError(
            f"{path}: voxels cannot be read ({type(exc).__name__}: {exc}); expected a complete "
            "NIfTI file (python -m hypo.cohort validate DIR lists every broken file)"
        ) from exc


def read_image(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file as a 3D image (header only; voxels are read on demand).

    A 4D file holding a single volume is squeezed to 3D. Anything else that is not 3D
    raises ``ValueError`` naming the file and its shape.
    """
    path = Path(path)
    img = nib.load(path)
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if img.ndim != 3:
        raise ValueError(f"{path}: image has shape {img.shape}; expected a 3D volume")
    return img


def _otsu_threshold(values: np.ndarray) -> float:
    """Otsu threshold of a 1-D sample (OpenCV's, on a 256-bin rescaling)."""
    import cv2  # lazily: keeps ``import hypo.cohort`` light

    v = values.astype(np.float64)
    lo, hi = float(v.min()), float(np.percentile(v, 99.99))
    if hi <= lo:
        return lo
    u = np.clip((v - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(u, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return lo + float(t) * (hi - lo) / 255.0


def window_intensities(
    data: np.ndarray, config: WindowConfig = WindowConfig()
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Map raw intensities to float32 grey values 0-255.

    Parameters
    ----------
    data : ndarray
        Voxel values as read from the file.
    config : WindowConfig
        Percentiles of the foreground voxels mapped to 0 and 255.

    Returns
    -------
    grey : ndarray of float32
        Same shape as ``data``.
    window : tuple of float or None
        ``(low, high)`` in raw units, or ``None`` if ``data`` was uint8 and left as is.
    """
    if data.dtype == np.uint8:
        return data.astype(np.float32), None
    values = data[data != 0]
    if values.size == 0:
        return np.zeros(data.shape, np.float32), (0.0, 0.0)
    if config.foreground == "otsu":
        head = values[values > _otsu_threshold(values)]
        values = head if head.size else values
    low, high = np.percentile(values, [config.low_percentile, config.high_percentile])
    low, high = float(low), float(high)
    if high <= low:
        # A constant volume has no contrast to window; keep it black rather than divide by 0.
        return np.zeros(data.shape, np.float32), (low, high)
    grey = (data.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(grey, 0.0, 255.0).astype(np.float32), (low, high)


def load_volume(
    path: str | os.PathLike, participant_id: str, window: WindowConfig = WindowConfig()
) -> Volume:
    """Read one DWI file into a canonical, windowed :class:`Volume`."""
    img = read_image(path)
    data, affine, zooms = read_voxels(img, path)
    grey, win = window_intensities(np.asarray(data), window)
    return Volume(
        participant_id=participant_id,
        data=grey,
        affine=affine,
        zooms=zooms,
        window=win,
        source=str(path),
        native_shape=tuple(int(s) for s in img.shape),
        native_affine=img.affine.copy(),
        native_axcodes=tuple(nib.aff2axcodes(img.affine)),
    )


def same_grid(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage) -> bool:
    """True if two images share shape and affine (within :data:`AFFINE_ATOL_MM`)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=AFFINE_ATOL_MM)


def load_mask(
    path: str | os.PathLike, reference: nib.spatialimages.SpatialImage, *, binarise: bool = True
) -> np.ndarray:
    """Read a mask on the grid of ``reference`` and return it canonical, as uint8.

    The mask is reoriented exactly as its image (same affine, so the same flips and axis
    permutation). With ``binarise`` every voxel > 0 becomes 1.
    """
    img = read_image(path)
    if not same_grid(img, reference):
        raise ValueError(
            f"{path}: mask grid (shape {img.shape}, affine {img.affine.round(3).tolist()}) "
            f"differs from its image (shape {reference.shape}, affine "
            f"{reference.affine.round(3).tolist()}); expected the same shape and affine"
        )
    data, _, _ = read_voxels(img, path)
    data = np.asarray(data)
    if binarise:
        return (data > 0).astype(np.uint8)
    if np.issubdtype(data.dtype, np.integer) and data.min() >= 0 and data.max() <= 255:
        return data.astype(np.uint8)
    return data


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a BIDS-style TSV as strings, with ``n/a`` (and friends) as missing values."""
    return pd.read_csv(
        path,
        sep="\t",
        dtype=str,
        keep_default_na=False,
        na_values=list(NA_VALUES),
    )


def type_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Convert every column whose non-missing values all parse as numbers to a numeric dtype.

    Columns in :data:`TEXT_COLUMNS` stay text. ``group`` values are normalised to the
    spelling in :data:`GROUPS`.
    """
    out = df.copy()
    for col in out.columns:
        if col in TEXT_COLUMNS:
            continue
        converted = pd.to_numeric(out[col], errors="coerce")
        if converted.notna().sum() == out[col].notna().sum():
            out[col] = converted
    if "group" in out.columns:
        lookup = {g.lower(): g for g in GROUPS}
        out["group"] = out["group"].map(
            lambda v: lookup.get(str(v).lower(), v) if isinstance(v, str) else v
        )
    return out


def column_map(root: str | os.PathLike, columns: Mapping[str, str] | None = None) -> dict:
    """hypo's column name -> the cohort's own: ``hypo_columns.json`` beside participants.tsv
    (if present), updated by ``columns`` (e.g. ``--column mrs_3months=mRS_90d``).

    Raises :class:`CohortError` naming the sidecar when it is not a JSON object of names.
    """
    out: dict[str, str] = {}
    sidecar = Path(root) / layout.COLUMN_MAP
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CohortError(f"{sidecar}: not valid JSON ({e})") from e
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise CohortError(
                f'{sidecar}: expected a JSON object of column names, e.g. {{"mrs_3months": '
                f'"mRS_90d"}}; got {data!r}'
            )
        out.update(data)
    out.update(dict(columns or {}))
    return out


def apply_column_map(table: pd.DataFrame, mapping: Mapping[str, str]) -> list[Problem]:
    """Rename the cohort's columns to hypo's in place; problems for a mapped column that is
    not in the table or a hypo name that is taken by another column."""
    problems, rename = [], {}
    for ours, theirs in mapping.items():
        where = f"{layout.PARTICIPANTS}:{theirs}"
        if ours == theirs:
            continue
        if theirs not in table.columns:
            problems.append(
                Problem(None, where, f"column is missing (mapped to {ours})",
                        f"a column {theirs!r} among {', '.join(map(str, table.columns))}")
            )  # fmt: skip
        elif ours in table.columns:
            problems.append(
                Problem(None, f"{layout.PARTICIPANTS}:{ours}",
                        f"column exists, and {theirs!r} is mapped to it too",
                        "one column per name: drop the mapping or rename one of them")
            )  # fmt: skip
        else:
            rename[theirs] = ours
    table.rename(columns=rename, inplace=True)
    return problems


def read_participants(
    root: str | os.PathLike, columns: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """participants.tsv of a cohort, columns named as hypo names them (the cohort's
    :func:`column_map`), typed, indexed by ``participant_id`` (no other checks)."""
    df = read_table(Path(root) / layout.PARTICIPANTS)
    apply_column_map(df, column_map(root, columns))
    return type_columns(df).set_index("participant_id", drop=True)


# --------------------------------------------------------------------------- hashing


def content_hash(root: str | os.PathLike, length: int = 16) -> str:
    """A hash of a cohort's inputs that changes when any of them changes.

    Tables and ``generator.json`` are hashed in full; each NIfTI file by its relative path,
    size and its first and last 64 KiB (for ``.nii.gz`` the last bytes hold the gzip CRC of
    the whole content, so any change to the voxels shows). Uncompressed ``.nii`` files are
    hashed in full. Absolute paths and timestamps are left out, so the hash is the same on
    every machine.
    """
    root = Path(root)
    h = hashlib.sha256()
    for rel in (
        layout.PARTICIPANTS,
        layout.SLICE_LABELS,
        layout.GENERATOR,
        str(layout.TRUTH_TABLE),
    ):
        p = root / rel
        if p.is_file():
            h.update(f"{Path(rel).as_posix()}\0".encode())
            h.update(p.read_bytes())
    for p in sorted(_nifti_files(root)):
        rel = p.relative_to(root).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as f:
            if rel.endswith(".gz") and size > 2 * _HASH_EDGE_BYTES:
                h.update(f.read(_HASH_EDGE_BYTES))
                f.seek(-_HASH_EDGE_BYTES, os.SEEK_END)
                h.update(f.read(_HASH_EDGE_BYTES))
            else:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:length]


def _nifti_files(root: Path) -> list[Path]:
    # Hidden entries are temporary folders of atomic writes, not cohort content.
    return [
        p
        for pattern in ("**/*.nii.gz", "**/*.nii")
        for p in root.glob(pattern)
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


# --------------------------------------------------------------------------- the cohort


@dataclass
class Cohort:
    """A cohort on disk in the hypo layout, validated at load time.

    Build one with :func:`load`. Voxels are read on demand, never cached.

    Attributes
    ----------
    root : Path
        The cohort folder.
    cohort_id : str
        ``<folder name>-<first 8 digits of content_hash()>``: the same on every machine
        for the same inputs.
    participants : DataFrame
        One row per patient, index ``participant_id``; numeric columns numeric, ``n/a``
        read as NaN; patients skipped by ``skip_invalid`` are not in it.
    skipped : list of Problem
        Why each skipped patient was left out (empty unless ``skip_invalid``).
    is_synthetic : bool
        ``generator.json`` is present.
    min_lesion_area_mm2 : float
        Smallest lesion cross-section (mm^2) that makes a slice ``lesion_visible`` when
        labels are derived from masks.
    window : WindowConfig
        Intensity window of :meth:`dwi`.
    """

    root: Path
    cohort_id: str
    participants: pd.DataFrame
    skipped: list[Problem] = field(default_factory=list)
    is_synthetic: bool = False
    min_lesion_area_mm2: float = 10.0
    window: WindowConfig = field(default_factory=WindowConfig)
    _slice_labels: pd.DataFrame | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"Cohort({self.cohort_id!r}, patients={len(self.participants)}, "
            f"skipped={len(self.skipped)}, synthetic={self.is_synthetic})"
        )

    # -- identity
    def participant_ids(self) -> list[str]:
        """Participant ids in table order."""
        return [str(p) for p in self.participants.index]

    def content_hash(self) -> str:
        """Hash of every input file (see :func:`hypo.cohort.io.content_hash`); recomputed."""
        return content_hash(self.root)

    # -- images
    def _check_pid(self, pid: str) -> None:
        if pid not in self.participants.index:
            raise KeyError(
                f"{pid!r} is not a participant of cohort {self.cohort_id} "
                f"({len(self.participants)} patients, e.g. {self.participant_ids()[:3]})"
            )

    def dwi_path(self, pid: str) -> Path:
        """Path of a patient's DWI file."""
        self._check_pid(pid)
        return layout.dwi_path(self.root, pid)

    def dwi(self, pid: str) -> Volume:
        """A patient's DWI volume: canonical RAS+, windowed to 0-255, float32."""
        return load_volume(self.dwi_path(pid), pid, self.window)

    @property
    def has_lesion_masks(self) -> bool:
        """Whether any patient of the cohort has a lesion mask file."""
        return any(layout.lesion_mask_path(self.root, p).is_file() for p in self.participant_ids())

    def lesion_mask(self, pid: str) -> np.ndarray | None:
        """A patient's lesion mask: uint8 0/1, canonical, same grid as :meth:`dwi`.

        ``None`` when the patient has no mask file (always so when the cohort has none).
        """
        path = layout.lesion_mask_path(self.root, pid)
        if not path.is_file():
            self._check_pid(pid)
            return None
        return load_mask(path, read_image(self.dwi_path(pid)))

    def truth_mask(self, pid: str, label: str) -> np.ndarray | None:
        """Synthetic ground-truth mask (``label`` in ``layout.TRUTH_LABELS``), canonical.

        Values are kept as stored (a ``hemisphere`` map may hold more than two labels);
        ``None`` when the file does not exist.
        """
        path = layout.truth_mask_path(self.root, pid, label)
        if not path.is_file():
            self._check_pid(pid)
            return None
        return load_mask(path, read_image(self.dwi_path(pid)), binarise=False)

    # -- tables
    def slice_labels(self) -> pd.DataFrame:
        """One row per axial slice: is a lesion visible on it?

        Columns: ``participant_id``, ``slice`` (canonical, inferior -> superior, from 0),
        ``lesion_visible``, ``lesion_area_mm2`` (lesion cross-section from the mask, NaN
        without one), ``label_source``: ``'reader'`` when the label comes from
        slice_labels.tsv, ``'mask'`` when derived from the lesion mask (visible when the
        area is non-zero and at least ``min_lesion_area_mm2``), ``'none'`` when neither exists.
        ``lesion_visible`` is bool; it becomes pandas' nullable ``boolean`` only when some
        slice has no label at all. Extra columns of slice_labels.tsv (e.g. ``img_id``) are
        kept. Computed once per cohort object.
        """
        if self._slice_labels is None:
            self._slice_labels = self._build_slice_labels()
        return self._slice_labels.copy()

    def _build_slice_labels(self) -> pd.DataFrame:
        reader = None
        path = self.root / layout.SLICE_LABELS
        if path.is_file():
            reader = type_columns(read_table(path))
            reader["slice"] = reader["slice"].astype(int)
            reader["lesion_visible"] = reader["lesion_visible"].astype(int).astype(bool)
        by_pid = dict(iter(reader.groupby("participant_id"))) if reader is not None else {}
        # Threads: gzip decompression releases the GIL, so mask reads overlap.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            frames = list(
                pool.map(
                    lambda pid: self._patient_slice_labels(pid, by_pid.get(pid)),
                    self.participant_ids(),
                )
            )
        columns = ["participant_id", "slice", "lesion_visible", "lesion_area_mm2", "label_source"]
        if not frames:
            return pd.DataFrame({c: [] for c in columns})
        out = pd.concat(frames, ignore_index=True)
        out = out[columns + [c for c in out.columns if c not in columns]]
        if not out["lesion_visible"].isna().any():
            out["lesion_visible"] = out["lesion_visible"].astype(bool)
        return out

    def _patient_slice_labels(self, pid: str, reader: pd.DataFrame | None) -> pd.DataFrame:
        img = read_image(self.dwi_path(pid))
        n = int(to_canonical_shape(img)[2])
        frame = pd.DataFrame({"participant_id": pid, "slice": np.arange(n)})
        mask_path = layout.lesion_mask_path(self.root, pid)
        if mask_path.is_file():
            mask = load_mask(mask_path, img)
            zooms = canonical_zooms(img)
            frame["lesion_area_mm2"] = mask.sum(axis=(0, 1)) * float(zooms[0] * zooms[1])
        else:
            frame["lesion_area_mm2"] = np.nan
        frame["label_source"] = "none"
        frame["lesion_visible"] = pd.array([pd.NA] * n, dtype="boolean")
        has_mask = frame["lesion_area_mm2"].notna()
        area = frame.loc[has_mask, "lesion_area_mm2"]
        frame.loc[has_mask, "lesion_visible"] = (area > 0) & (area >= self.min_lesion_area_mm2)
        frame.loc[has_mask, "label_source"] = "mask"
        if reader is not None and len(reader):
            rows = reader.drop(columns="participant_id").set_index("slice")
            extra = [c for c in rows.columns if c != "lesion_visible"]
            if extra:
                frame = frame.join(rows[extra], on="slice")
            labelled = frame["slice"].isin(rows.index)
            frame.loc[labelled, "lesion_visible"] = (
                rows["lesion_visible"].reindex(frame.loc[labelled, "slice"]).to_numpy()
            )
            frame.loc[labelled, "label_source"] = "reader"
        return frame

    def truth(self) -> pd.DataFrame | None:
        """derivatives/truth/truth.tsv indexed by ``participant_id``, or ``None``."""
        path = self.root / layout.TRUTH_TABLE
        if not path.is_file():
            return None
        return type_columns(read_table(path)).set_index("participant_id", drop=True)

    def contrast_of(self, pid: str) -> str | None:
        """The declared contrast of a patient's volume (:mod:`hypo.cohort.contrast`), or None.

        From the ``contrast`` column of participants.tsv, else from generator.json (a
        synthetic cohort; ``b1000`` when it does not say). An unknown value raises
        ``ValueError`` naming the file, the patient and the accepted names.
        """
        self._check_pid(pid)
        if "contrast" in self.participants.columns:
            v = self.participants.at[pid, "contrast"]
            if isinstance(v, str) and v.strip():
                return normalise_contrast(
                    v, f"{self.root / layout.PARTICIPANTS}, column 'contrast', {pid}"
                )
        gen = self.generator()
        if gen is not None:
            return normalise_contrast(
                gen.get("contrast", "b1000"), f"{self.root / layout.GENERATOR}, 'contrast'"
            )
        return None

    def generator(self) -> dict | None:
        """The parameters in generator.json, or ``None`` for a cohort that was not generated."""
        path = self.root / layout.GENERATOR
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))


def to_canonical_shape(img: nib.spatialimages.SpatialImage) -> tuple[int, int, int]:
    """Shape an image will have after reorientation to RAS+ (header only, no voxel read)."""
    ornt = nib.orientations.io_orientation(img.affine)
    return tuple(int(img.shape[int(i)]) for i in np.argsort(ornt[:, 0]))


def canonical_zooms(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Voxel size (mm) along the RAS+ axes, from the header alone (no voxel read)."""
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    return zooms[np.argsort(ornt[:, 0])]
