"""Orientation conventions: canonical voxel order and the 2D axial slice view.

Every volume is reoriented to RAS+ (``nibabel.as_closest_canonical``): voxel axis 0 runs
from the patient's left to right, axis 1 from posterior to anterior, axis 2 from inferior
to superior. An axial slice ``k`` is shown in the **radiological convention** used in stroke
reading rooms: rows run anterior (row 0) to posterior, columns run from the patient's
**right** (column 0) to the patient's **left**. So in every 2D slice hypo produces, the
left half of the array is the patient's right hemisphere. A horizontal flip of a slice
therefore swaps hemispheres; hypo never applies one silently.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

#: Column 0 of a 2D slice is the patient's right side.
CONVENTION = "radiological"


def to_canonical(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient ``img`` to RAS+ and return ``(data, affine, zooms_mm)``.

    ``data`` keeps its on-disk dtype (scaling applied by nibabel where the header says so).
    """
    canon = nib.as_closest_canonical(img)
    data = np.asanyarray(canon.dataobj)
    zooms = np.asarray(canon.header.get_zooms()[:3], dtype=float)
    return data, canon.affine.copy(), zooms


def axial_slice(volume: np.ndarray, k: int) -> np.ndarray:
    """2D axial slice ``k`` of a canonical (RAS+) volume in the radiological view."""
    return np.ascontiguousarray(volume[::-1, ::-1, k].T)


def axial_slices(volume: np.ndarray) -> np.ndarray:
    """All axial slices of a canonical volume, shape ``(n_slices, rows, cols)``."""
    return np.ascontiguousarray(np.transpose(volume[::-1, ::-1, :], (2, 1, 0)))


def slices_to_volume(slices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`axial_slices`: ``(n_slices, rows, cols)`` -> canonical ``(x, y, z)``."""
    return np.ascontiguousarray(np.transpose(slices, (2, 1, 0))[::-1, ::-1, :])


def slice_pixel_mm(zooms_mm: np.ndarray) -> tuple[float, float]:
    """(row spacing, column spacing) in mm of an axial slice of a canonical volume."""
    return float(zooms_mm[1]), float(zooms_mm[0])
