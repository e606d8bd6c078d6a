"""Export CAMs to scanner space: one NIfTI volume per patient, class and method.

Each 2D map (in the preprocessed slice geometry, radiological view) is taken back through
its slice's crop/resize (``SliceTransform.inverse``), pasted into a zero native slice,
the slices are stacked into the canonical (RAS+) volume and saved with the canonical
affine of the patient's DWI, or reoriented back to the file's own voxel order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd

from .._util import atomic_path
from ..cohort.orientation import slices_to_volume

_TRANSFORM_COLUMNS = (
    "slice",
    "crop_r0",
    "crop_r1",
    "crop_c0",
    "crop_c1",
    "native_rows",
    "native_cols",
)
_CV2 = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST_EXACT}


def _inverse(row: Mapping, map2d: np.ndarray, interpolation: str) -> np.ndarray:
    """Native 2D slice from a map in the preprocessed geometry of ``row``."""
    row = dict(row)
    row.setdefault("out_rows", map2d.shape[0])
    row.setdefault("out_cols", map2d.shape[1])
    try:
        from ..preprocess import SliceTransform
    except ImportError:  # keeps export usable without the preprocessing stage
        SliceTransform = None
    if SliceTransform is not None:
        return SliceTransform.from_row(row).inverse(map2d, interpolation=interpolation)
    r0, r1, c0, c1 = (int(row[k]) for k in ("crop_r0", "crop_r1", "crop_c0", "crop_c1"))
    out = np.zeros((int(row["native_rows"]), int(row["native_cols"])), np.float32)
    out[r0:r1, c0:c1] = cv2.resize(
        np.asarray(map2d, np.float32), (c1 - c0, r1 - r0), interpolation=_CV2[interpolation]
    )
    return out


def _reference_grid(reference) -> tuple[nib.Nifti1Image, tuple[int, int, int], np.ndarray]:
    """``(reference image, canonical shape, canonical affine)`` without reading voxels."""
    if isinstance(reference, (str, os.PathLike)):
        reference = nib.load(str(reference))
    if not hasattr(reference, "affine"):
        raise ValueError(
            f"reference must be a NIfTI image or a path to one, got {type(reference).__name__}"
        )
    proxy = nib.Nifti1Image(np.zeros(reference.shape[:3], np.uint8), reference.affine)
    canon = nib.as_closest_canonical(proxy)
    return reference, tuple(int(s) for s in canon.shape[:3]), canon.affine.copy()


def maps_to_volume(
    maps: np.ndarray, table: pd.DataFrame, canonical_shape, interpolation: str = "linear"
) -> np.ndarray:
    """Stack one patient's 2D maps into a canonical (RAS+) volume in native voxels.

    Parameters
    ----------
    maps : ndarray, shape (n_rows, H, W)
        One map per row of ``table``, in the preprocessed slice geometry.
    table : DataFrame
        The patient's slice-table rows (``slice``, ``crop_r0..crop_c1``, ``native_rows``,
        ``native_cols``), same order as ``maps``.
    canonical_shape : (x, y, z)
        Shape of the patient's canonical volume; slices without a map stay 0.
    interpolation : {"linear", "cubic", "nearest"}

    Returns
    -------
    ndarray, shape canonical_shape, float32
    """
    missing = [c for c in _TRANSFORM_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"slice table lacks the transform columns {missing}")
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or len(maps) != len(table):
        raise ValueError(
            f"maps of shape {maps.shape} do not match the {len(table)} table rows; "
            "expected (n_rows, H, W)"
        )
    x, y, z = (int(s) for s in canonical_shape)
    slices = np.zeros((z, y, x), np.float32)  # axial view: (slice, rows = y, cols = x)
    for m, (_, row) in zip(maps, table.iterrows()):
        k = int(row["slice"])
        if (int(row["native_rows"]), int(row["native_cols"])) != (y, x) or not 0 <= k < z:
            raise ValueError(
                f"slice {k} of {row.get('participant_id', '?')}: native size "
                f"({row['native_rows']}, {row['native_cols']}) does not fit the reference "
                f"volume {canonical_shape} (expected ({y}, {x}) and slice < {z})"
            )
        slices[k] = _inverse(row, m, interpolation)
    return slices_to_volume(slices)


def maps_to_nifti(
    maps: np.ndarray,
    table: pd.DataFrame,
    reference,
    out_path=None,
    interpolation: str = "linear",
    native_orientation: bool = False,
    description: str = "",
) -> nib.Nifti1Image:
    """One patient's maps as a NIfTI volume on the patient's own voxel grid.

    Parameters
    ----------
    maps, table
        As in :func:`maps_to_volume` (one class and method).
    reference : nibabel image or path
        The patient's DWI; gives the voxel grid and affine (voxels are not read).
    out_path : path, optional
        Where to write (``.nii`` or ``.nii.gz``), atomically.
    native_orientation : bool
        False: canonical RAS+ voxel order with the canonical affine. True: reoriented back
        to the reference file's voxel order, so the affine equals the reference's.
    description : str
        Stored in the header's ``descrip`` (e.g. "gradcam class 1 block5_relu").

    Returns
    -------
    nibabel.Nifti1Image (float32, mm units)
    """
    ref, canon_shape, canon_affine = _reference_grid(reference)
    vol = maps_to_volume(maps, table, canon_shape, interpolation)
    img = nib.Nifti1Image(vol, canon_affine)
    if native_orientation:
        ornt = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(("R", "A", "S")),
            nib.orientations.io_orientation(ref.affine),
        )
        img = img.as_reoriented(ornt)
    img.header.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description[:79].encode()
    if out_path is not None:
        with atomic_path(out_path) as tmp:
            nib.save(img, str(tmp))
    return img


def export_patient(
    cams,
    table: pd.DataFrame,
    participant_id: str,
    reference,
    out_dir,
    methods=None,
    native_orientation: bool = False,
    interpolation: str = "linear",
) -> list[Path]:
    """Write every class and method of one patient as ``<pid>_desc-<method>_class-<c>_cam.nii.gz``.

    Parameters
    ----------
    cams : CamResult or CamStore
        Maps of all store slices (CamResult rows = table rows) or a cached
        :class:`~hypo.cam.stream.CamStore`; maps must be at input (store image) size.
    table : DataFrame
        The whole store table (rows in store order).
    participant_id : str
    reference : nibabel image or path
        The patient's DWI.
    out_dir : path
    methods : sequence of str, optional
        Default all methods of ``cams``.

    Returns
    -------
    list of Path
    """
    rows = np.flatnonzero(table["participant_id"].to_numpy() == participant_id)
    if rows.size == 0:
        raise ValueError(f"participant {participant_id!r} has no slices in the table")
    ptab = table.iloc[rows]
    methods = list(methods) if methods is not None else list(cams.methods)
    out_dir = Path(out_dir)
    written = []
    for m in methods:
        if hasattr(cams, "maps") and callable(cams.maps):
            maps = cams.maps(m, rows, resized=True)
        else:
            maps = np.asarray(cams[m])[rows]
        layer = getattr(cams, "layer", "")
        for pos, c in enumerate(cams.classes):
            path = out_dir / f"{participant_id}_desc-{m}_class-{c}_cam.nii.gz"
            maps_to_nifti(
                maps[:, pos],
                ptab,
                reference,
                path,
                interpolation=interpolation,
                native_orientation=native_orientation,
                description=f"{m} class {c} layer {layer}",
            )
            written.append(path)
    return written
