"""Irregular acute infarcts drawn inside arterial territories (template space).

An infarct is the set of the ``N`` best-scoring tissue voxels of its territory near a
randomly placed core, where the score is a smooth Gaussian random field minus the
(scaled) distance to the nearest of one to a few cores. ``N`` is fixed by the target
volume, so volumes follow the cohort's log-normal exactly, while the shape is a thresholded
smooth random field: lobulated, sometimes scattered into satellite blobs (embolic showers),
and clipped by the territory and tissue boundaries -- never an ellipsoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .anatomy import TemplateAnatomy

#: Territories whose infarcts are often embolic showers with satellite blobs.
_EMBOLIC = {"MCA", "ACA", "PCA"}


@dataclass(frozen=True)
class LesionComponent:
    """One infarct component: where it was drawn and how big it was meant to be."""

    territory: str
    side: str
    volume_ml: float


def draw_lesion(
    rng: np.random.Generator,
    anat: TemplateAnatomy,
    masks: dict,
    components: list[LesionComponent],
    *,
    irregularity: float = 0.9,
    field_sigma_mm: float = 5.0,
    satellites_mean: float = 0.8,
    border_jitter_mm: float = 6.0,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Draw the infarct components on the template grid.

    Parameters
    ----------
    rng : numpy.random.Generator
        The patient's lesion stream.
    anat : TemplateAnatomy
        Template grid (voxel size in mm).
    masks : dict
        ``territory_masks(...)``: ``{(territory, side): bool array}``.
    components : list of LesionComponent
        What to draw.
    irregularity : float
        Weight of the random field against the distance to the cores (dimensionless);
        0 would give balls clipped by the territory.
    field_sigma_mm : float
        Smoothness of the random field (Gaussian sigma, mm).
    satellites_mean : float
        Mean number (Poisson) of satellite cores for embolic territories.
    border_jitter_mm : float
        SD of the smooth random shift of the territory border for this patient (mm).

    Returns
    -------
    lesion : bool ndarray
        Infarct voxels on the template grid.
    allowed : bool ndarray
        Union of this patient's territories (border-jittered) the components were drawn
        from; every infarct voxel lies inside it.
    centres_mm : list of ndarray
        Main core of each component, MNI mm.
    """
    vox = anat.voxel_mm
    voxel_ml = vox**3 / 1000.0
    lesion = np.zeros(anat.shape, bool)
    allowed = np.zeros(anat.shape, bool)
    centres = []
    shape = np.array(anat.shape)
    for comp in components:
        terr = masks[(comp.territory, comp.side)]
        idx = np.flatnonzero(terr)
        c0 = np.array(np.unravel_index(idx[rng.integers(idx.size)], anat.shape))
        n_target = max(1, int(round(comp.volume_ml / voxel_ml)))
        radius_vox = (3.0 * n_target / (4.0 * np.pi)) ** (1.0 / 3.0)
        half = int(np.ceil(2.6 * radius_vox + 12.0 / vox))
        lo = np.maximum(c0 - half, 0)
        hi = np.minimum(c0 + half + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        # Real territory borders vary between people: jitter this patient's border by a
        # smooth random offset so that large infarcts do not end on a straight line.
        t_box = terr[box]
        signed_mm = (ndi.distance_transform_edt(t_box) - ndi.distance_transform_edt(~t_box)) * vox
        jitter = ndi.gaussian_filter(rng.standard_normal(t_box.shape).astype(np.float32), 8.0 / vox)
        jitter *= border_jitter_mm / max(float(jitter.std()), 1e-6)
        sub = ((signed_mm + jitter) > 0) & masks[("tissue", comp.side)][box]
        allowed[box] |= sub
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"))
        cores = [(c0, 1.0)]
        if comp.territory in _EMBOLIC:
            n_sat = rng.poisson(satellites_mean)
            cand = np.argwhere(sub) + lo
            near = np.linalg.norm(cand - c0, axis=1) <= 1.6 * radius_vox + 15.0 / vox
            cand = cand[near]
            for _ in range(n_sat if cand.size else 0):
                cores.append((cand[rng.integers(len(cand))], rng.uniform(0.35, 0.75)))
        dist = np.full(sub.shape, np.inf, dtype=np.float32)
        for c, rel in cores:
            d = np.sqrt(((grid - c.reshape(3, 1, 1, 1)) ** 2).sum(axis=0)) / (rel * radius_vox)
            dist = np.minimum(dist, d.astype(np.float32))
        field = ndi.gaussian_filter(
            rng.standard_normal(sub.shape).astype(np.float32), field_sigma_mm / vox
        )
        field /= max(float(field.std()), 1e-6)
        score = np.where(sub, irregularity * field - dist, -np.inf)
        flat = score.ravel()
        n_ok = int(np.isfinite(flat).sum())
        take = min(n_target, n_ok)
        pick = np.argpartition(-flat, take - 1)[:take]
        chosen = np.zeros(flat.size, bool)
        chosen[pick] = True
        lesion[box] |= chosen.reshape(sub.shape)
        centres.append(anat.affine[:3, :3] @ c0 + anat.affine[:3, 3])
    return lesion, allowed, centres
