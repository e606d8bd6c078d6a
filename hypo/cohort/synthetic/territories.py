"""Arterial territories, hand-built in MNI152 coordinates (mm).

Each territory is a union of boxes in MNI space (``|x|`` is the distance from the midline,
so every territory is defined for both hemispheres), intersected with brain tissue
(GM + WM >= 0.5; acute infarcts lie in parenchyma, not in CSF). Territories may overlap,
as real ones do at watershed zones. The boxes follow the standard vascular-territory
atlases (Tatu et al. 1998, Neurology 50:1699; the DWI-derived atlas of Liu et al. 2023,
Sci Data 10:53) at the coarse level a synthetic cohort needs.

- ``MCA``: lateral convexity of frontal, parietal and temporal lobes (|x| > 22 mm, from the
  frontal pole y ~ +55 back to the parieto-occipital junction y ~ -75, z -28..+62), the
  insula (|x| 28-42 mm, y -25..+25, z -12..+22) and the lenticulostriate territory
  (putamen, caudate body, internal capsule: |x| 12-30 mm, y -18..+25, z -6..+22).
- ``ACA``: medial frontal and parietal cortex and the parasagittal convexity (|x| < 20 mm,
  y -55..+60 above z 0; medial orbitofrontal |x| < 14 mm, y +15..+60, z -22..0).
- ``PCA``: occipital lobe (y < -62, above the tentorium z > -12), medial and inferior
  temporal lobe (|x| 18-45 mm, y -75..-15, z -30..-2) and the thalamus (|x| 3-22 mm,
  y -35..-5, z -4..+18).
- ``deep``: small-vessel (lacunar) territory: basal ganglia, internal capsule and thalamus
  (|x| 6-30 mm, y -32..+22, z -6..+22) and the periventricular corona radiata
  (|x| 14-32 mm, y -30..+20, z +20..+34).
- ``posterior_fossa``: vertebro-basilar territory below the tentorium: cerebellar
  hemispheres and vermis (y < -38, z < -14) and the brainstem (|x| < 14 mm, y -42..-10,
  z -58..-10).
"""

from __future__ import annotations

import functools

import numpy as np

from .anatomy import load_template

TERRITORIES = ("MCA", "ACA", "PCA", "deep", "posterior_fossa")

# (|x| lo, |x| hi, y lo, y hi, z lo, z hi) in MNI mm; see the module docstring.
_BOXES = {
    "MCA": [
        (22, 90, -75, 55, -28, 62),
        (28, 42, -25, 25, -12, 22),
        (12, 30, -18, 25, -6, 22),
    ],
    "ACA": [(0, 20, -55, 60, 0, 90), (0, 14, 15, 60, -22, 0)],
    "PCA": [(0, 90, -120, -62, -12, 90), (18, 45, -75, -15, -30, -2), (3, 22, -35, -5, -4, 18)],
    "deep": [(6, 30, -32, 22, -6, 22), (14, 32, -30, 20, 20, 34)],
    "posterior_fossa": [(0, 90, -120, -38, -90, -14), (0, 14, -42, -10, -58, -10)],
}

#: Volume of each territory's lesions, relative to the cohort-wide log-normal (deep lacunes
#: are < 15 mL by definition; posterior-fossa infarcts are usually small to moderate).
VOLUME_MEDIAN_ML = {"MCA": 20.0, "ACA": 9.0, "PCA": 10.0, "deep": 0.9, "posterior_fossa": 5.0}
VOLUME_LOG_SD = {"MCA": 1.45, "ACA": 1.1, "PCA": 1.2, "deep": 0.6, "posterior_fossa": 1.1}
VOLUME_MAX_ML = {"MCA": 320.0, "ACA": 90.0, "PCA": 120.0, "deep": 15.0, "posterior_fossa": 60.0}


@functools.lru_cache(maxsize=4)
def territory_masks(resolution_mm: float = 2.0) -> dict:
    """Boolean territory masks on the template grid, per territory and side.

    Returns
    -------
    dict
        ``{(territory, side): bool ndarray}`` with side ``"left"`` (MNI x < 0) or
        ``"right"`` (x > 0); each mask is restricted to brain tissue (GM + WM >= 0.5).
        ``("tissue", side)`` is all tissue of that hemisphere.
    """
    anat = load_template(resolution_mm)
    x, y, z = np.meshgrid(*anat.grid_mm(), indexing="ij")
    ax = np.abs(x)
    tissue = (anat.maps["gm"] + anat.maps["wm"]) >= 0.5
    out = {}
    for name, boxes in _BOXES.items():
        m = np.zeros(anat.shape, bool)
        for xl, xh, yl, yh, zl, zh in boxes:
            m |= (ax >= xl) & (ax < xh) & (y >= yl) & (y < yh) & (z >= zl) & (z < zh)
        m &= tissue
        if name != "posterior_fossa":
            # Supratentorial territories stop at the tentorium.
            m &= ~((y < -38) & (z < -14))
        out[(name, "left")] = m & (x < 0)
        out[(name, "right")] = m & (x > 0)
    out[("tissue", "left")] = tissue & (x < 0)
    out[("tissue", "right")] = tissue & (x > 0)
    for key, m in out.items():
        if m.sum() < 20:
            raise RuntimeError(f"territory {key} has {int(m.sum())} template voxels; boxes wrong?")
    return out
