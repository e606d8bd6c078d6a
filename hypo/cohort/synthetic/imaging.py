"""Render one patient's DWI and truth masks on the scanner grid.

Every output voxel is mapped *backward* into template space by one composed coordinate
map -- head pose (scale, rotation, translation) -> mass effect of the swollen infarct ->
age-related ventricular enlargement (with a natural left-right asymmetry) -> smooth random
inter-subject deformation -- and the patient's contrast volume is sampled there with
``scipy.ndimage.map_coordinates`` (a few sub-samples across the slice thickness give partial
volume). The mass effect and the ventricular expansion are inverted to first order
(``q = p - u(p)``), which is accurate for the smooth, small displacements used here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .anatomy import TemplateAnatomy
from .params import SynthParams

#: MNI point the head pose rotates about (centre of the cerebrum, mm).
HEAD_CENTRE_MNI = np.array([0.0, -18.0, 10.0])
#: Lateral-ventricle bodies (MNI mm), the centres of the age-related expansion.
VENTRICLE_CENTRES_MNI = {
    "left": np.array([-14.0, -8.0, 14.0]),
    "right": np.array([14.0, -8.0, 14.0]),
}
VENTRICLE_EXPANSION_SIGMA_MM = 20.0


@dataclass(frozen=True)
class Grid:
    """The acquisition grid, canonical (RAS+) voxel order."""

    shape: tuple
    zooms_mm: tuple
    affine: np.ndarray
    storage_orientation: str


@dataclass(frozen=True)
class Pose:
    rotation: np.ndarray  # 3x3, head frame -> scanner
    translation_mm: np.ndarray
    scale: np.ndarray  # per head axis


def draw_grid(rng: np.random.Generator, p: SynthParams) -> Grid:
    """Matrix, FOV, slice thickness and count, and the storage voxel order."""
    n = int(rng.choice(p.matrix_choices))
    fov = rng.uniform(*p.fov_mm_range)
    s = fov / n
    w = np.asarray(p.slice_thickness_weights, float)
    t = float(rng.choice(p.slice_thickness_mm_choices, p=w / w.sum()))
    cover = rng.uniform(*p.coverage_mm_range)
    nz = int(np.clip(round(cover / t), *p.n_slices_range))
    aff = np.diag([s, s, t, 1.0])
    # Slab centred near the head centre; the offset sometimes clips vertex or cerebellum.
    z_off = rng.normal(2.0, 5.0)
    aff[:3, 3] = [-(n - 1) / 2 * s, -(n - 1) / 2 * s, -(nz - 1) / 2 * t + z_off]
    ow = np.asarray(p.storage_orientation_weights, float)
    orient = str(rng.choice(p.storage_orientations, p=ow / ow.sum()))
    return Grid((n, n, nz), (s, s, t), aff, orient)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_pose(rng: np.random.Generator, p: SynthParams) -> Pose:
    angles = rng.normal(0.0, p.rotation_sd_deg)
    # Heads lie tilted chin-down a little more often than chin-up.
    angles[0] += 2.0
    scale = p.head_scale_mean * np.exp(rng.normal(0.0, p.head_scale_sd) + rng.normal(0.0, 0.015, 3))
    return Pose(_rotation(angles), rng.normal(0.0, p.translation_sd_mm), scale)


@dataclass(frozen=True)
class Deformation:
    """Smooth random displacement on a coarse grid (3, gx, gy, gz) in mm."""

    field_mm: np.ndarray
    origin_mm: np.ndarray
    spacing_mm: float

    def __call__(self, q: np.ndarray) -> np.ndarray:
        idx = (q - self.origin_mm[:, None]) / self.spacing_mm
        return np.stack(
            [ndi.map_coordinates(f, idx, order=1, mode="nearest") for f in self.field_mm]
        )


def draw_deformation(rng: np.random.Generator, p: SynthParams) -> Deformation:
    origin = np.array([-110.0, -150.0, -90.0])
    extent = np.array([220.0, 260.0, 210.0])
    shape = tuple(int(v) for v in np.ceil(extent / p.deformation_spacing_mm) + 1)
    f = ndi.gaussian_filter(rng.standard_normal((3, *shape)), (0, 1.0, 1.0, 1.0), mode="nearest")
    f *= p.deformation_sd_mm / max(float(f.std()), 1e-9)
    return Deformation(f.astype(np.float32), origin, p.deformation_spacing_mm)


def ventricle_displacement(q: np.ndarray, expansion: dict) -> np.ndarray:
    """Displacement (mm) that enlarges each lateral ventricle by its expansion factor."""
    u = np.zeros_like(q)
    s2 = 2.0 * VENTRICLE_EXPANSION_SIGMA_MM**2
    for side, k in expansion.items():
        d = q - VENTRICLE_CENTRES_MNI[side][:, None]
        u += k * d * np.exp(-(d**2).sum(axis=0) / s2)
    return u


@dataclass(frozen=True)
class MassEffect:
    """Radial push away from the swollen infarct.

    ``amplitude_mm`` at the infarct border (radius ``radius_mm`` around ``centre_mm``),
    growing linearly inside and decaying as exp(-(r - R) / decay) outside; damped within
    15 mm of the brain surface, where the skull stops tissue from moving out.
    """

    centre_mm: np.ndarray
    radius_mm: float
    amplitude_mm: float
    decay_mm: float

    def magnitude(self, r: np.ndarray) -> np.ndarray:
        inside = r / self.radius_mm
        outside = np.exp(-(r - self.radius_mm) / self.decay_mm)
        return self.amplitude_mm * np.where(r < self.radius_mm, inside, outside)

    def __call__(self, q: np.ndarray, anat: TemplateAnatomy) -> np.ndarray:
        d = q - self.centre_mm[:, None]
        r = np.sqrt((d**2).sum(axis=0)) + 1e-6
        depth = ndi.map_coordinates(anat.maps["depth_mm"], anat.mm_to_index(q), order=1)
        damp = np.clip(depth / 15.0, 0.0, 1.0)
        return d / r * (self.magnitude(r) * damp)

    def midline_shift_mm(self) -> float:
        """Displacement across the midline on the line through the infarct centre (mm)."""
        return float(self.magnitude(np.array(abs(self.centre_mm[0]) + 1e-6)))


#: Tissue ratios (to white matter) of the contrasts other than b1000, whose ranges are
#: ``SynthParams``' own. b0 (T2-weighted EPI): CSF 2-3x white matter, grey matter a little
#: brighter, a hyperacute infarct barely brighter than tissue. ADC (in units of the white
#: matter's ~0.75e-3 mm^2/s): CSF ~3.0e-3 (4x), grey matter ~0.85e-3, infarct 45-65 % of
#: normal tissue (restricted diffusion).
CONTRAST_RATIOS = {
    "b0": {"gm_wm": (1.10, 1.30), "csf_wm": (2.2, 3.2), "lesion_tissue": (1.0, 1.2)},
    "adc": {"gm_wm": (1.05, 1.25), "csf_wm": (3.6, 4.4), "lesion_tissue": (0.45, 0.65)},
}
#: Contrasts the generator renders.
RENDERED_CONTRASTS = ("b1000", "b0", "adc")


def contrast_volume(
    rng: np.random.Generator,
    p: SynthParams,
    anat: TemplateAnatomy,
    lesion: np.ndarray,
    effacement: float,
    ventricle_effacement: float = 0.0,
    centre_mm: np.ndarray | None = None,
    radius_mm: float = 0.0,
    contrast: str = "b1000",
) -> tuple[np.ndarray, dict, dict]:
    """The patient's contrast on the template grid (white matter = 1).

    ``contrast`` is ``"b1000"`` (ratios from ``p``), ``"b0"`` or ``"adc"``
    (:data:`CONTRAST_RATIOS`); every contrast draws the same random numbers, so the same
    patient has the same anatomy, infarct and noise pattern in each.

    Returns the intensity volume, the contrast ratios used, and ``{"ventricles": ventricle
    map after effacement by swelling, "lesion_pv": smoothed infarct map or None}``.
    """
    m = anat.maps
    if contrast == "b1000":
        ranges = {
            "gm_wm": p.gm_wm_ratio_range,
            "csf_wm": p.csf_wm_ratio_range,
            "lesion_tissue": p.lesion_ratio_range,
        }
    elif contrast in CONTRAST_RATIOS:
        ranges = CONTRAST_RATIOS[contrast]
    else:
        raise ValueError(f"contrast {contrast!r}: the generator renders {RENDERED_CONTRASTS}")
    ratios = {k: rng.uniform(*ranges[k]) for k in ("gm_wm", "csf_wm", "lesion_tissue")}
    gm, wm, csf, vent = m["gm"], m["wm"], m["csf"], m["ventricles"]
    vol = ratios["gm_wm"] * gm + wm + ratios["csf_wm"] * csf + p.scalp_wm_ratio * m["scalp"]
    pv = None
    if lesion.any():
        vent = vent.copy()
        if effacement > 0:
            # Swollen gyri fill the sulci; the compressed ventricle gives way to white matter.
            sig = p.effacement_sigma_mm / anat.voxel_mm
            box = _box(lesion, int(np.ceil(3 * sig)) + 1)
            near = ndi.gaussian_filter(lesion[box].astype(np.float32), sig)
            near /= max(float(near.max()), 1e-6)
            e = np.clip(effacement * near, 0.0, 0.9).astype(np.float32)
            v, c = vent[box], csf[box]
            # Effaced CSF takes tissue contrast: sulcal -> GM, ventricular -> WM.
            vol[box] += e * (
                (ratios["gm_wm"] - ratios["csf_wm"]) * (c - v) + (1.0 - ratios["csf_wm"]) * v
            )
            vent[box] = v * (1.0 - e)
        if ventricle_effacement > 0 and centre_mm is not None:
            # The ventricle facing a swollen hemisphere is squeezed even when it lies
            # beyond the sulcal-effacement reach: effacement decays with distance from the
            # infarct surface.
            vb = _box(m["ventricles"] > 0, 1)
            gx, gy, gz = (g[b] for g, b in zip(anat.grid_mm(), vb))
            dist = np.sqrt(
                (gx[:, None, None] - centre_mm[0]) ** 2
                + (gy[None, :, None] - centre_mm[1]) ** 2
                + (gz[None, None, :] - centre_mm[2]) ** 2
            )
            fall = np.exp(-np.maximum(dist - radius_mm, 0.0) / p.ventricle_effacement_decay_mm)
            same_side = (gx[:, None, None] * centre_mm[0]) > 0
            ev = np.clip(ventricle_effacement * fall * same_side, 0.0, 0.85).astype(np.float32)
            v = vent[vb]
            vol[vb] += ev * (1.0 - ratios["csf_wm"]) * v
            vent[vb] = v * (1.0 - ev)
        box = _box(lesion, 4)
        pv_box = ndi.gaussian_filter(lesion[box].astype(np.float32), 0.5)
        noise = ndi.gaussian_filter(rng.standard_normal(pv_box.shape).astype(np.float32), 1.5)
        het = noise / max(float(noise.std()), 1e-6)
        vol[box] *= 1.0 + (ratios["lesion_tissue"] - 1.0) * pv_box * (
            1.0 + p.lesion_heterogeneity * het
        )
        pv = np.zeros(lesion.shape, np.float32)
        pv[box] = pv_box
    if rng.random() < p.susceptibility_share:
        vol = vol * _susceptibility(rng, anat)
        ratios["susceptibility_artefact"] = 1
    else:
        ratios["susceptibility_artefact"] = 0
    return vol.astype(np.float32), ratios, {"ventricles": vent, "lesion_pv": pv}


def _box(mask: np.ndarray, margin: int) -> tuple:
    lo, hi = _bbox(mask)
    return tuple(
        slice(max(int(a) - margin, 0), min(int(b) + margin + 1, n))
        for a, b, n in zip(lo, hi, mask.shape)
    )


def _bbox(mask: np.ndarray) -> tuple:
    nz = np.nonzero(mask)
    return tuple(a.min() for a in nz), tuple(a.max() for a in nz)


def _susceptibility(rng: np.random.Generator, anat: TemplateAnatomy) -> np.ndarray:
    """Bright pile-up next to a signal void at the frontal sinus or petrous bone."""
    sites = [
        np.array([0.0, 45.0, -22.0]),
        np.array([-38.0, -18.0, -32.0]),
        np.array([38.0, -18.0, -32.0]),
    ]
    c = sites[int(rng.integers(len(sites)))] + rng.normal(0, 4, 3)
    sig = rng.uniform(6.0, 10.0)
    gx, gy, gz = anat.grid_mm()
    offset = rng.normal(0, 1, 3)
    offset = 9.0 * offset / np.linalg.norm(offset)

    def blob(centre):
        return (
            np.exp(-((gx - centre[0]) ** 2) / (2 * sig**2))[:, None, None]
            * np.exp(-((gy - centre[1]) ** 2) / (2 * sig**2))[None, :, None]
            * np.exp(-((gz - centre[2]) ** 2) / (2 * sig**2))[None, None, :]
        )

    bright = rng.uniform(0.6, 1.5) * blob(c + offset)
    dark = rng.uniform(0.5, 0.9) * blob(c - offset)
    return ((1.0 + bright) * (1.0 - dark)).astype(np.float32)


def bias_field(rng: np.random.Generator, p: SynthParams, pts_mm: np.ndarray) -> np.ndarray:
    """Smooth multiplicative receive-coil bias: exp of a random quadratic in scanner mm."""
    x, y, z = pts_mm / 100.0
    terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    sd = [p.bias_field_sd] * 3 + [p.bias_field_sd / 2] * 6
    log_b = sum(rng.normal(0, s) * t for s, t in zip(sd, terms))
    return np.exp(log_b).astype(np.float32)


def scanner_points(grid: Grid) -> np.ndarray:
    """Scanner mm coordinates of every voxel centre, shape (3, nx, ny, nz)."""
    ii = [np.arange(n, dtype=np.float32) for n in grid.shape]
    a = grid.affine
    out = np.empty((3, *grid.shape), np.float32)
    for d in range(3):
        out[d] = (
            a[d, 0] * ii[0][:, None, None]
            + a[d, 1] * ii[1][None, :, None]
            + a[d, 2] * ii[2][None, None, :]
        ) + a[d, 3]
    return out


def head_to_template(pose: Pose, pts_scanner: np.ndarray) -> np.ndarray:
    """Undo the head pose: scanner mm (3, N) -> head-frame MNI mm (3, N)."""
    rel = pose.rotation.T @ (pts_scanner - pose.translation_mm[:, None])
    return (rel / pose.scale[:, None] + HEAD_CENTRE_MNI[:, None]).astype(np.float32)
