"""Template anatomy for the synthetic cohort: MNI152 2009a symmetric tissue maps.

The tissue probabilities come from the MNI152 2009a *symmetric* templates that ship inside
nilearn's wheel (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted``;
uint8 0-255, 1 mm, RAS). No network access is needed. The maps are block-averaged to a
coarser template grid once per process and cached; every patient is sampled from that grid.

Derived maps (all in template space, float32 in [0, 1] unless stated):

- ``brain``: fraction of the voxel inside the skull-stripped template (T1 > 0).
- ``gm``, ``wm``: grey / white matter probabilities.
- ``csf``: inside the brain minus GM minus WM (sulcal and ventricular CSF).
- ``ventricles``: CSF of the lateral and third ventricles (central CSF, see
  :func:`_ventricles`).
- ``cortex``: the cortical grey-matter ribbon, i.e. GM within a band below the brain edge.
- ``scalp``: a shell outside the brain standing in for scalp and extracranial soft tissue
  (nearly dark on fat-suppressed EPI; skull itself gives no signal).
- ``depth_mm``: distance from the brain boundary, inside the brain (mm).
- ``head``: 1 within 13 mm of the brain (brain, skull, scalp), 0 in the air.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

#: Depth below the brain edge (mm) of the cortical ribbon band: cortical thickness is
#: 2-4 mm, but gyri fold it over ~10 mm of depth at template resolution.
CORTEX_BAND_MM = 10.0

#: Exponent applied to partial sulcal CSF (see :func:`load_template`).
SULCAL_SHARPENING = 1.6

#: Files inside ``nilearn/datasets/data``.
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_dir() -> Path:
    """Folder of the MNI152 2009a files bundled with nilearn."""
    import nilearn

    return Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"


@dataclass(frozen=True)
class TemplateAnatomy:
    """Tissue maps on a regular RAS+ template grid.

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        Voxel index -> MNI mm.
    voxel_mm : float
        Isotropic voxel size of the template grid (mm).
    maps : dict of str -> ndarray
        ``brain``, ``gm``, ``wm``, ``csf``, ``ventricles``, ``cortex``, ``scalp``,
        ``depth_mm`` (see the module docstring).
    """

    affine: np.ndarray
    voxel_mm: float
    maps: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.maps["brain"].shape

    def mm_to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """MNI mm coordinates ``(3, N)`` -> fractional voxel indices ``(3, N)``."""
        inv = np.linalg.inv(self.affine)
        return (inv[:3, :3] @ points_mm + inv[:3, 3:4]).astype(np.float32)

    def grid_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MNI mm coordinate of every template voxel along each axis (1D arrays)."""
        a = self.affine
        return tuple(a[d, d] * np.arange(n) + a[d, 3] for d, n in enumerate(self.shape))


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over non-overlapping f x f x f blocks (the edge remainder is dropped)."""
    s = [n // f for n in a.shape]
    a = a[: s[0] * f, : s[1] * f, : s[2] * f]
    return a.reshape(s[0], f, s[1], f, s[2], f).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=4)
def load_template(resolution_mm: float = 2.0) -> TemplateAnatomy:
    """Build (once per process) the template tissue maps at ``resolution_mm``.

    Parameters
    ----------
    resolution_mm : float
        Template voxel size in mm; a whole multiple of the 1 mm source grid (1, 2, 3, ...).
    """
    f = int(round(resolution_mm))
    if f < 1 or abs(f - resolution_mm) > 1e-6:
        raise ValueError(
            f"anatomy resolution {resolution_mm!r} mm: expected a whole number of mm (1, 2, 3)"
        )
    d = template_dir()
    raw = {}
    for key, name in TEMPLATE_FILES.items():
        path = d / name
        if not path.exists():
            raise FileNotFoundError(f"{path}: MNI152 2009a template missing from nilearn's wheel")
        img = nib.load(path)
        raw[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
        affine_1mm = img.affine
    # Fill interior holes so that the ventricles count as inside the brain.
    brain_1mm = ndi.binary_fill_holes(raw["t1"] > 0).astype(np.float32)
    brain = _block_mean(brain_1mm, f)
    gm = _block_mean(raw["gm"], f)
    wm = _block_mean(raw["wm"], f)
    tissue = gm + wm
    over = tissue > brain
    # The probability maps can exceed the skull-stripped mask by a hair at the edge.
    scale = np.where(over, brain / np.maximum(tissue, 1e-6), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    affine = affine_1mm.copy()
    affine[:3, :3] = affine_1mm[:3, :3] * f
    # Centre of the first block, in mm.
    affine[:3, 3] = affine_1mm[:3, :3] @ np.full(3, (f - 1) / 2.0) + affine_1mm[:3, 3]

    inside = brain > 0.5
    depth = ndi.distance_transform_edt(inside) * f
    outside = ndi.distance_transform_edt(~inside) * f
    # Fat-suppressed EPI: skull dark (first ~4 mm), then a thin faint scalp shell.
    scalp = ((outside > 4.0) & (outside < 11.0)).astype(np.float32)
    scalp = ndi.gaussian_filter(scalp, 0.7)
    cortex = ((depth > 0) & (depth <= CORTEX_BAND_MM) & (gm >= 0.5) & (gm > csf)).astype(np.float32)

    maps = {
        "brain": brain.astype(np.float32),
        "gm": gm.astype(np.float32),
        "wm": wm.astype(np.float32),
        "csf": csf.astype(np.float32),
        "cortex": cortex,
        "scalp": scalp.astype(np.float32),
        "depth_mm": depth.astype(np.float32),
        # Where the head (brain, skull, scalp) is: voxels beyond it are air.
        "head": (outside < 13.0).astype(np.float32),
    }
    anat = TemplateAnatomy(affine=affine, voxel_mm=float(f), maps=maps)
    vent = _ventricles(anat)
    maps["ventricles"] = vent
    # The template averages many brains, so its sulci are smeared into a CSF haze over the
    # cortex; one person's sulci are crisper. Sharpen partial sulcal CSF toward 0/1 and
    # give the difference back to grey matter.
    sulcal = np.clip(csf - vent, 0.0, 1.0)
    crisp = sulcal**SULCAL_SHARPENING
    maps["gm"] = (gm + sulcal - crisp).astype(np.float32)
    maps["csf"] = (vent + crisp).astype(np.float32)
    return anat


def _ventricles(anat: TemplateAnatomy) -> np.ndarray:
    """Lateral + third ventricles: central CSF connected to the midline.

    Anatomical basis: in MNI space the lateral ventricles lie within about 35 mm of the
    midline, from the frontal horns (y ~ +35) to the atria/occipital horns (y ~ -45), and from
    the temporal horns' roof (z ~ -5) to the top of the bodies (z ~ +35); the third ventricle
    sits on the midline between the thalami. Sulcal CSF is peripheral, so central CSF that
    forms large components there is ventricular.
    """
    x, y, z = np.meshgrid(*anat.grid_mm(), indexing="ij")
    csf = anat.maps["csf"]
    box = (np.abs(x) < 35) & (y > -50) & (y < 40) & (z > -8) & (z < 38)
    core = (csf > 0.5) & box & (anat.maps["depth_mm"] > 8)
    lab, n = ndi.label(core)
    if n == 0:
        raise RuntimeError("no ventricular CSF found in the template; template files corrupt?")
    sizes = ndi.sum(core, lab, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1
    vent = np.isin(lab, keep)
    # Include the partial-volume rim: CSF next to the core.
    rim = ndi.binary_dilation(vent, iterations=1) & (csf > 0.25) & box
    return np.where(vent | rim, csf, 0.0).astype(np.float32)
