"""Anatomy of every slice, from the image alone.

By default (:func:`anatomy_for_store`, ``AnatomyConfig.volume``) the **brain mask** and
the **midline** come from each patient's whole volume (:mod:`hypo.features.brain3d`: a
contrast-agnostic 3D mask and a midsagittal plane fitted in world mm), projected into the
store's slices through their transforms; the per-slice steps below then find the
fissure, hemispheres, ventricles, edge band and lesion, according to the cohort's
declared (or detected) contrast (:mod:`hypo.cohort.contrast`). The per-slice brain mask
and symmetry search described next remain for bare stacks of slices without volumes.

For each preprocessed axial slice (radiological view: column 0 = patient's RIGHT) this
module estimates, without any ground truth:

* the **brain mask** (lowest threshold of a three-class Otsu split, so that a large bright
  infarct does not take the tissue class; holes filled; the largest component with the
  large ones beside it, so that both hemispheres count where the fissure parts them);
* the **midsagittal line**: first the line (angle + offset) about which the brain is most
  mirror-symmetric, found by rotating the slice through candidate angles and locating,
  for each angle, the column of maximal mirror correlation with one FFT (the correlation
  of an image with its mirror image about column ``c`` is its row-wise autoconvolution at
  ``2c``; by Cauchy-Schwarz it peaks where the image is symmetric). A rotated head is
  therefore handled, and the image centre plays no role; then, where the slice shows
  the interhemispheric fissure as a narrow dark valley along that line, the line through
  the fissure (the falx moves with the brain's deformation and mass effect);
* **hemispheres** in the patient's true orientation: pixels on the high-column side of the
  line are the patient's LEFT (label 1), the low-column side the RIGHT (label 2), as in
  the truth masks;
* **ventricles**: dark (CSF) components enclosed by tissue (CSF open to the outside of
  the brain, i.e. sulci, fissure and basal cisterns, is not ventricle), deep and central,
  on the supratentorial levels of the lateral and third ventricles: when slices come with
  patient ids, only on slices whose brain area is at least ``ventricle_min_rel_area`` of
  the patient's largest (the fourth ventricle, the temporal horns' tips and the enclosed
  cisterns of the skull-base slices, and the small slices above the ventricles, are left
  out: the ventricle features measure the lateral ventricles that a hemispheric mass
  effect compresses);
* the **cortical-edge band**: brain pixels within ``edge_width_mm`` of the brain's border
  (distances in mm from the store's ``pixel_mm_row/col``);
* the **lesion**: pixels hyperintense relative to the brain's own intensity distribution
  (robust z-score from median and MAD of the bias-corrected slice) and to their mirror
  image, grown by hysteresis and cut at the half-way level between the surrounding tissue
  and the lesion's peak, in components of at least ``lesion_min_area_mm2``.

All thresholds are relative to the slice's own intensities (the brain's median and MAD,
the local tissue level): they do not depend on how the cohort loader windowed the scan.

Masks are packed into one ``uint8`` label image per slice (bit flags, see ``BRAIN`` ...
``LESION``) so a cohort's anatomy costs one byte per pixel on disk. :func:`anatomy_for_store`
computes the anatomy of a slice store once, in batches, and caches it next to the store.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import fft as sp_fft
from scipy import ndimage

import hypo.cohort as hc
from hypo._util import stable_hash, write_json_atomic
from hypo.cohort.contrast import DETECTED, csf_polarity, lesion_polarity
from hypo.cohort.io import read_image, read_voxels
from hypo.features.brain3d import (
    brain_mask_3d,
    deshear_affine,
    detect_csf_polarity,
    fast_median,
    fill_holes_2d,
    fit_midsagittal_plane,
    otsu3_index,
    project_patient,
    slice_shear_deg,
)
from hypo.preprocess import SliceTransform

#: Bit flags of the packed label image.
BRAIN, LEFT, RIGHT, VENTRICLE, EDGE, LESION = 1, 2, 4, 8, 16, 32
#: Hemisphere codes, as in the synthetic truth masks.
HEMI_LEFT, HEMI_RIGHT = 1, 2
ANATOMY_VERSION = 9


@dataclass(frozen=True)
class AnatomyConfig:
    """Settings of the image-derived anatomy.

    Parameters
    ----------
    edge_width_mm : float
        Width of the cortical-edge band inside the brain border, mm (sulcal effacement
        happens in the outer few mm of cortex; 5 mm by default).
    bias_sigma_mm : float
        Gaussian width (mm) of the smooth tissue-intensity field that slice intensities are
        divided by (the coil's bias field varies over ~10 cm; infarct, CSF and other
        outliers are left out of the field by normalised convolution).
    lesion_z : float
        Seed rule: robust z-score (``(r - median) / (1.4826 MAD)`` over the slice's brain
        pixels of the bias-corrected intensity ``r``) above which a pixel is hyperintense.
    lesion_mirror_z : float
        ... and by how many robust SDs it must exceed the brightest pixel near its mirror
        image about the midline (a grey-level dilation of ``lesion_mirror_tolerance_mm``
        absorbs misregistration of the cortical ribbon; an infarct is one-sided, so
        bilateral, mirror-symmetric lesions are missed by design).
    lesion_mirror_tolerance_mm : float
        Radius of that dilation, mm.
    lesion_z_low, lesion_mirror_z_low : float
        Hysteresis: pixels above these (lower) thresholds join a seeded component.
    lesion_half_max : float
        Each component is cut at ``ring + lesion_half_max * (peak - ring)``, with ``ring``
        the median of the tissue around it and ``peak`` its 90th percentile: the infarct's
        border is where the signal is half-way between tissue and infarct (the partial-
        volume midpoint that a manual outline or a 50 % truth mask follows).
    lesion_z_no_midline : float
        Threshold of the absolute rule alone, for slices without a midline.
    lesion_min_area_mm2 : float
        Smallest connected hyperintense component kept as lesion, mm^2 (the cohort's
        ``min_lesion_area_mm2`` for a visible lesion is 10 mm^2).
    ventricle_level : float
        A brain pixel is CSF-dark below ``ventricle_level`` times the local tissue level
        (bias-corrected intensity above the background; CSF is 0.1-0.3 of white matter on
        b1000 DWI; set on the tuning seed of ``analyses.anatomy_accuracy``, where the
        truth mask keeps the partial-volume rim down to 25 % CSF).
    ventricle_min_depth_mm : float
        A ventricle component reaches at least this far inside the brain border, mm.
    ventricle_central_fraction : float
        A dark component is a ventricle when its centroid lies within this fraction of
        the brain's half-width and half-height from the brain's centroid, and when it is
        enclosed by tissue: dark CSF connected to the outside of the brain (sulci, the
        interhemispheric fissure, the basal cisterns) is not ventricle.
    ventricle_min_area_mm2 : float
        Smallest dark component kept as ventricle, mm^2.
    ventricle_open_level : float
        The laxer level (times the local tissue level) on which a dark component's
        openness to the outside of the brain is judged.
    ventricle_min_width_mm : float
        A ventricle component is at least this wide (twice its largest inscribed radius),
        mm: the fissure's isolated pieces are thinner.
    ventricle_min_rel_area : float
        With patient ids, ventricles are sought only on slices whose brain area is at least
        this fraction of the patient's largest slice (the supratentorial levels of the
        lateral ventricles; the widest axial section of the brain passes through them).
        0 disables the rule. Without patient ids every slice is searched.
    fissure_refine : bool
        Move the symmetry line onto the interhemispheric fissure where the slice shows it
        (the falx follows the brain's deformation and mass effect; the outline does not).
    fissure_search_mm, fissure_contrast, fissure_min_rows, fissure_max_turn_deg
        The fissure search: half-width of the band around the symmetry line (mm), valley
        depth (fraction of the local tissue level), fewest fissure rows, largest turn
        away from the symmetry line (degrees). See ``_fissure_line``.
    max_angle_deg, coarse_step_deg, fine_step_deg : float
        Midline angle search: a coarse grid over +-``max_angle_deg``, then a fine grid
        around the best coarse angle.
    per_patient_angle : bool
        When slices come with patient ids, use each patient's median midline angle (over
        slices with at least half the patient's largest brain area) for all of their
        slices and refit the offsets: an in-plane head rotation is shared by a patient's
        slices, and small slices near the vertex or the skull base are poorly determined.
    min_brain_area_px : int
        A slice with a smaller brain gets no midline (NaN) and no hemispheres.
    brain_min_solidity : float
        A slice whose brain candidate is less solid (area / convex hull) gets no brain
        (per-slice method only).
    ventricle_bright_level, ventricle_bright_open_level : float
        Where CSF is bright (b0, T2, ADC): a brain pixel is CSF above this fraction of the
        way from the local tissue level to the slice's CSF level (its brain's 99.5th
        percentile), and openness to the outside is judged above the second fraction (set
        on seed 1 of ``analyses.anatomy_accuracy --contrast b0/adc``).
    volume : bool
        Brain mask and midsagittal plane from each patient's whole volume
        (:mod:`hypo.features.brain3d`, default), projected into the slices; False finds
        both on each slice alone (the 2D method, for bare stacks of slices).
    brain_opening_mm : float
        Radius (mm) of the 3D mask's opening and closing (``brain3d.brain_mask_3d``).
    plane_smooth_mm : float
        Gaussian sigma (mm) of the image the plane is fitted to.
    """

    edge_width_mm: float = 5.0
    bias_sigma_mm: float = 25.0
    lesion_z: float = 3.0
    lesion_mirror_z: float = 2.0
    lesion_mirror_tolerance_mm: float = 2.0
    lesion_z_low: float = 1.5
    lesion_mirror_z_low: float = 1.0
    lesion_half_max: float = 0.5
    lesion_z_no_midline: float = 4.0
    lesion_min_area_mm2: float = 10.0
    ventricle_level: float = 0.25
    ventricle_min_depth_mm: float = 8.0
    ventricle_central_fraction: float = 0.5
    ventricle_min_area_mm2: float = 5.0
    ventricle_open_level: float = 0.85
    ventricle_min_width_mm: float = 3.0
    ventricle_min_rel_area: float = 0.75
    fissure_refine: bool = True
    fissure_search_mm: float = 6.0
    fissure_contrast: float = 0.15
    fissure_min_rows: int = 12
    fissure_max_turn_deg: float = 6.0
    max_angle_deg: float = 20.0
    coarse_step_deg: float = 2.0
    fine_step_deg: float = 0.5
    per_patient_angle: bool = True
    min_brain_area_px: int = 64
    brain_min_solidity: float = 0.85
    ventricle_bright_level: float = 0.6
    ventricle_bright_open_level: float = 0.3
    volume: bool = True
    brain_opening_mm: float = 4.0
    plane_smooth_mm: float = 1.5

    def key(self) -> str:
        """Cache key: a hash of every setting and of ``ANATOMY_VERSION`` (bumped whenever
        the methods change, so a store's anatomy from older code is never reused)."""
        return stable_hash({"version": ANATOMY_VERSION, **asdict(self)}, 12)


@dataclass
class Anatomy:
    """Image-derived anatomy of a set of slices.

    Attributes
    ----------
    labels : ndarray, uint8, shape (n, H, W)
        Packed bit flags: ``BRAIN``, ``LEFT``, ``RIGHT``, ``VENTRICLE``, ``EDGE``, ``LESION``.
    table : DataFrame
        One row per slice: ``midline_angle_deg`` (angle of the midline from the image's
        vertical axis in mm space, positive when its posterior end lies towards higher
        columns, i.e. the patient's left), ``midline_col_px`` (column where the midline
        crosses the centre row), ``midline_offset_px`` (that minus the centre column),
        ``symmetry`` (mirror correlation at the optimum, 0-1), ``brain_area_mm2``,
        ``brain_area_rel`` (brain area / the patient's largest; 1 without patient ids),
        ``ventricle_level`` (whether ventricles were sought on the slice),
        ``ventricle_area_left_mm2``, ``ventricle_area_right_mm2``, ``ventricle_asymmetry``
        ((L - R)/(L + R) of ventricle areas, NaN without ventricles), ``septum_shift_mm``
        (signed distance of the septum, the gap between the lateral ventricles, from the
        midline, positive towards the patient's left; NaN where not found),
        ``lesion_image_area_mm2``, ``plane_residual_mm`` (distance, mm, at the centre row
        between the slice's midline and the midsagittal plane's line; 0 where no fissure
        moved it, NaN on slices without the plane: the per-slice method, or no brain),
        ``pixel_mm_row``, ``pixel_mm_col``.
    path : Path or None
        Cache folder when loaded from / written to disk.
    patients : DataFrame or None
        With the volume method, one row per patient: ``brain_volume_ml``, slices with
        brain, voxel size, the midsagittal plane (``plane_normal_x/y/z``,
        ``plane_offset_mm``, ``plane_tilt_deg``) and its ``plane_symmetry`` (0-1) and
        ``plane_asymmetry`` (mean |image - mirror| / brain median), ``contrast`` and
        ``contrast_source`` ("declared" by the cohort, or "detected": then only the CSF's
        polarity, ``detected-csf-dark`` / ``detected-csf-bright``).
    """

    labels: np.ndarray
    table: pd.DataFrame
    path: Path | None = None
    patients: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def brain(self) -> np.ndarray:
        return (self.labels & BRAIN) > 0

    @property
    def hemisphere(self) -> np.ndarray:
        """uint8 (n, H, W): 0 outside the brain, 1 = patient's left, 2 = patient's right."""
        out = np.zeros(self.labels.shape, np.uint8)
        out[(self.labels & LEFT) > 0] = HEMI_LEFT
        out[(self.labels & RIGHT) > 0] = HEMI_RIGHT
        return out

    @property
    def ventricles(self) -> np.ndarray:
        return (self.labels & VENTRICLE) > 0

    @property
    def edge(self) -> np.ndarray:
        return (self.labels & EDGE) > 0

    @property
    def lesion(self) -> np.ndarray:
        return (self.labels & LESION) > 0

    def masks(self) -> dict[str, np.ndarray]:
        """The masks as a dict of arrays (brain, hemisphere, ventricles, edge, lesion)."""
        return {
            "brain": self.brain,
            "hemisphere": self.hemisphere,
            "ventricles": self.ventricles,
            "edge": self.edge,
            "lesion": self.lesion,
        }

    @classmethod
    def open(cls, path: str | os.PathLike, mmap_mode: str = "r") -> Anatomy:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path}: not an anatomy cache (no meta.json)")
        labels = np.load(path / "labels.npy", mmap_mode=mmap_mode)
        table = pd.read_parquet(path / "anatomy.parquet")
        pfile = path / "patients.parquet"
        patients = pd.read_parquet(pfile) if pfile.exists() else None
        return cls(labels, table, path, patients)


# --------------------------------------------------------------------------- helpers


def _pixel_mm(pixel_mm, n: int) -> np.ndarray:
    arr = np.asarray(pixel_mm, dtype=float)
    if arr.ndim == 0:
        arr = np.full((n, 2), float(arr))
    elif arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2)).copy()
    if arr.shape != (n, 2):
        raise ValueError(
            f"pixel_mm has shape {np.shape(pixel_mm)}; expected a scalar, (row_mm, col_mm) "
            f"or one (row_mm, col_mm) pair per slice, shape ({n}, 2)"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("pixel_mm must be positive and finite (mm per output pixel)")
    return arr


def _to_uint8(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _otsu3_low(g: np.ndarray) -> int:
    """Lower threshold of a three-class Otsu split of a uint8 image."""
    p = np.bincount(g.ravel(), minlength=256).astype(float)
    p /= p.sum()
    return otsu3_index(p, np.arange(256, dtype=float))


def brain_mask(img: np.ndarray, min_solidity: float = 0.85, pixel_mm: float = 1.0) -> np.ndarray:
    """Brain mask of one slice: Otsu threshold, holes filled, the largest component and
    the large ones within a few pixels of it (bool).

    The threshold is the lowest of a three-class Otsu split (background | tissue | bright
    tissue or infarct): a two-class Otsu splits tissue from a large bright infarct and
    loses the rest of the brain. Where that candidate is not head-like (e.g. a background
    with two levels), the two-class Otsu threshold is tried next. Empty when no candidate
    is head-like: solidity (area / convex hull area) below ``min_solidity`` (a noise-only
    slice at the skull base or vertex), or filling most of the frame. ``pixel_mm`` (the
    smaller side of a pixel) sets how far apart two parts of one brain may lie.
    """
    g = _to_uint8(img)
    if g.max() == 0:
        return np.zeros(img.shape, bool)
    otsu2, _ = cv2.threshold(g, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for t in dict.fromkeys((_otsu3_low(g), int(otsu2))):
        comp = _head_component(g > t, min_solidity, BRAIN_JOIN_GAP_MM / pixel_mm)
        if comp is not None:
            return comp
    return np.zeros(img.shape, bool)


#: Components of a slice's brain candidate joined to the largest: at least this share of
#: its area and within ``BRAIN_JOIN_GAP_MM`` of it (near the vertex the interhemispheric
#: fissure splits the brain into two hemispheres; at the skull base the temporal lobes
#: and the cerebellum part). In mm: the per-slice crop enlarges a small vertex slice.
BRAIN_JOIN_SHARE = 0.2
BRAIN_JOIN_GAP_MM = 8.0


def _head_component(binary: np.ndarray, min_solidity: float, gap_px: float) -> np.ndarray | None:
    """The brain among a thresholded slice's components, holes filled; None when not
    head-like. The largest component, with the large ones close to it."""
    b = binary.astype(np.uint8)
    # An opening removes background noise above the threshold (it would otherwise bridge
    # into a frame-filling blob); a closing bridges the dark sulci at the rim so hole
    # filling reaches the CSF.
    b = cv2.morphologyEx(b, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    b = cv2.morphologyEx(b, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(b, connectivity=8)
    if n <= 1:
        return None
    area = stats[:, cv2.CC_STAT_AREA]
    k = 1 + int(np.argmax(area[1:]))
    comp = _filled_head_like(lab == k, min_solidity)
    if comp is None:
        return None
    # Large parts beside the largest belong to the same brain (the solidity test is the
    # largest part's: two hemispheres with the fissure between them are less solid).
    big = [j for j in range(1, n) if j != k and area[j] >= BRAIN_JOIN_SHARE * area[k]]
    if big:
        d = 2 * int(math.ceil(gap_px)) + 1
        near = cv2.dilate(
            comp.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
        )
        touching = set(np.unique(lab[near > 0]).tolist())
        joined = [j for j in big if j in touching]
        if joined:
            both = ndimage.binary_fill_holes(comp | np.isin(lab, joined))
            if _frame_share(both) <= 0.6:
                comp = both
    return comp


def _frame_share(comp: np.ndarray) -> float:
    return float(np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]]).mean())


def _filled_head_like(part: np.ndarray, min_solidity: float) -> np.ndarray | None:
    """``part`` with holes filled, or None when it is not head-like."""
    comp = ndimage.binary_fill_holes(part)
    contours, _ = cv2.findContours(
        comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    hull = cv2.contourArea(cv2.convexHull(max(contours, key=cv2.contourArea)))
    if hull <= 0 or comp.sum() / hull < min_solidity:
        return None
    # Even a tightly cropped head meets the frame over a small part of it; noise fills it.
    if _frame_share(comp) > 0.6:
        return None
    return comp


def _affine(theta_deg: float, centre: tuple[float, float], aspect: float, canvas: int):
    """Original (x=col, y=row) -> canvas: scale rows by ``aspect``, rotate, centre."""
    cx, cy = centre
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)
    scale = np.array([[1, 0, 0], [0, aspect, 0], [0, 0, 1]], float)
    pre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], float)
    h = (canvas - 1) / 2.0
    post = np.array([[1, 0, h], [0, 1, h], [0, 0, 1]], float)
    return (post @ rot @ scale @ pre)[:2]


def _mirror_profile(f: np.ndarray, theta: float, centre, aspect: float, canvas: int):
    """Best mirror column (canvas coords) and its normalised score at angle ``theta``."""
    m = _affine(theta, centre, aspect, canvas)
    w = cv2.warpAffine(f, m, (canvas, canvas), flags=cv2.INTER_LINEAR)
    energy = float((w * w).sum())
    if energy <= 0:
        return np.nan, 0.0
    nfft = sp_fft.next_fast_len(2 * canvas, real=True)
    spec = sp_fft.rfft(w, n=nfft, axis=1)
    prof = sp_fft.irfft((spec * spec).sum(axis=0), n=nfft)[: 2 * canvas - 1]
    k = int(np.argmax(prof))
    # Parabolic refinement of the peak (index k = 2c).
    kk = float(k)
    if 0 < k < len(prof) - 1:
        a, b, c = prof[k - 1], prof[k], prof[k + 1]
        den = a - 2 * b + c
        if den < 0:
            kk = k + 0.5 * (a - c) / den
    return kk / 2.0, float(prof[k]) / energy


def _fit_line(f: np.ndarray, centre, aspect: float, angles: np.ndarray, canvas: int):
    """Best (angle, column, score) over ``angles``, the angle refined by a parabola."""
    res = [_mirror_profile(f, float(th), centre, aspect, canvas) for th in angles]
    scores = np.array([r[1] for r in res])
    k = int(np.argmax(scores))
    best = (float(angles[k]), res[k][0], float(scores[k]))
    if 0 < k < len(angles) - 1:
        a, b, c = scores[k - 1], scores[k], scores[k + 1]
        den = a - 2 * b + c
        if den < 0:
            th = float(angles[k]) + 0.5 * (a - c) / den * float(angles[1] - angles[0])
            col, score = _mirror_profile(f, th, centre, aspect, canvas)
            if score >= best[2]:
                best = (th, col, score)
    return best


def _line_points(theta: float, col: float, centre, aspect: float, canvas: int):
    """Two points (x, y) of the midline in original pixel coordinates."""
    inv = cv2.invertAffineTransform(_affine(theta, centre, aspect, canvas))
    pts = np.array([[col, 0.0, 1.0], [col, canvas - 1.0, 1.0]])
    return pts @ inv.T  # (2, 2): rows (x, y)


def _symmetry_weight(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Non-negative image for the symmetry search: brain intensities, hyperintensities capped.

    Capping at a robust upper level keeps a one-sided bright lesion from pulling the
    line; the brain silhouette and the dark ventricles carry the symmetry.
    """
    vals = img[brain]
    lo = float(np.percentile(img, 1))
    med = fast_median(vals)
    mad = fast_median(np.abs(vals - med)) * 1.4826 + 1e-6
    f = np.clip(img, lo, med + 2 * mad) - lo
    f = f.astype(np.float32)
    f[~brain] = 0
    return f


def _septum_shift(vent_rows, vent_cols, p0, d, pr, pc) -> float:
    """Signed distance (mm, + towards patient's left) of the inter-ventricular gap."""
    if vent_rows.size < 2:
        return np.nan
    # Signed distance of each ventricle pixel from the line, in mm.
    x_mm = (vent_cols - p0[0]) * pc
    y_mm = (vent_rows - p0[1]) * pr
    dx, dy = d[0] * pc, d[1] * pr
    norm = math.hypot(dx, dy)
    s = (x_mm * dy - y_mm * dx) / norm
    along = (x_mm * dx + y_mm * dy) / norm
    bins = np.round(along / max(pr, 1e-6)).astype(int)
    # Sorted by bin, then by distance: each bin's sorted distances are one run, and the
    # widest gap within each run is found for all bins at once (the gaps that would cross
    # from one bin to the next are -inf).
    order = np.lexsort((s, bins))
    bs, ss = bins[order], s[order]
    new_bin = np.r_[True, bs[1:] != bs[:-1]]
    starts = np.flatnonzero(new_bin)
    gaps = np.r_[np.where(new_bin[1:], -np.inf, np.diff(ss)), -np.inf]
    widest = np.maximum.reduceat(gaps, starts)
    # The first position of each bin's widest gap (np.argmax's choice).
    bin_of = np.cumsum(new_bin) - 1
    at_max = np.flatnonzero(gaps == widest[bin_of])
    first = at_max[np.r_[True, bin_of[at_max[1:]] != bin_of[at_max[:-1]]]]
    # A real septum gap separates pixels on both sides of it by more than a pixel.
    j = first[gaps[first] > 1.5 * max(pr, pc)]
    if not j.size:
        return np.nan
    return float(np.median(0.5 * (ss[j] + ss[j + 1])))


# --------------------------------------------------------------------------- main entry


def compute_anatomy(
    images: np.ndarray,
    pixel_mm,
    *,
    groups=None,
    config: AnatomyConfig | None = None,
    brains: np.ndarray | None = None,
    planes: list | None = None,
    contrast: str = "b1000",
) -> Anatomy:
    """Brain, midline, hemispheres, ventricles, cortical edge and lesion of each slice.

    Parameters
    ----------
    images : ndarray, shape (n, H, W)
        Preprocessed axial slices (any per-slice intensity scaling), radiological view.
    pixel_mm : float, (row_mm, col_mm) or ndarray (n, 2)
        Pixel size in mm (rows, columns) of each slice, e.g. the slice table's
        ``pixel_mm_row`` and ``pixel_mm_col``.
    groups : sequence of length n, optional
        Patient id of each slice; enables ``config.per_patient_angle``.
    config : AnatomyConfig, optional
    brains : ndarray of bool (n, H, W), optional
        Brain masks from the whole volume (:func:`hypo.features.brain3d.project_patient`);
        without them each slice's brain is found on the slice alone (:func:`brain_mask`).
    planes : list of (coef_r, coef_c, const) or None, optional
        Per slice, the midsagittal plane's signed distance (mm, negative = patient's left)
        as an affine function of the pixel's (row, col) (:func:`hypo.features.brain3d.
        project_patient`); the slice's midline is its zero line (then moved onto the
        fissure where the slice shows one) and the plane's sign says which side is the
        patient's left. Without them the midline is searched on each slice (the symmetry
        line of the 2D method).
    contrast : str
        The images' contrast (:mod:`hypo.cohort.contrast`): CSF dark (b1000, FLAIR) or
        bright (b0, T2, ADC, EPI) decides how ventricles and the fissure are sought; the
        infarct is sought only where it is a hyperintensity (b1000, FLAIR, T2); on ADC, b0
        and EPI ``lesion_image_area_mm2`` is NaN (not sought).

    Returns
    -------
    Anatomy
        Packed label image and per-slice table (see :class:`Anatomy`).
    """
    config = config or AnatomyConfig()
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images have shape {images.shape}; expected (n_slices, rows, cols)")
    n, H, W = images.shape
    pmm = _pixel_mm(pixel_mm, n)
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries; images have {n} slices")
    canvas = int(math.ceil(math.hypot(H, W) * 1.15)) + 2
    coarse = np.arange(
        -config.max_angle_deg, config.max_angle_deg + 1e-9, config.coarse_step_deg, dtype=float
    )
    labels = np.zeros((n, H, W), np.uint8)
    given_brains, given_planes = brains, planes
    csf_bright = csf_polarity(contrast) == "bright"
    les_pol = lesion_polarity(contrast)
    if given_brains is not None and np.shape(given_brains) != (n, H, W):
        raise ValueError(f"brains have shape {np.shape(given_brains)}; images have {(n, H, W)}")
    if given_planes is not None and len(given_planes) != n:
        raise ValueError(f"planes has {len(given_planes)} entries; images have {n} slices")
    brains, fits, weights = [], [], []
    for i in range(n):
        img = np.asarray(images[i], dtype=np.float32)
        if given_brains is not None:
            b = np.asarray(given_brains[i], bool)
        else:
            b = brain_mask(img, config.brain_min_solidity, float(min(pmm[i])))
        brains.append(b)
        if given_planes is not None:
            fits.append(None)
            weights.append(None)
            continue
        if b.sum() < config.min_brain_area_px:
            fits.append(None)
            weights.append(None)
            continue
        rr, cc = np.nonzero(b)
        centre = (float(cc.mean()), float(rr.mean()))
        aspect = pmm[i, 0] / pmm[i, 1]
        f = _symmetry_weight(img, b)
        # The coarse search runs at half resolution: a quarter of the cost, same optimum.
        half = cv2.resize(f, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
        th, _, _ = _fit_line(half, (centre[0] / 2, centre[1] / 2), aspect, coarse, canvas // 2 + 1)
        fine = th + np.arange(
            -config.coarse_step_deg, config.coarse_step_deg + 1e-9, config.fine_step_deg
        )
        th, col, score = _fit_line(f, centre, aspect, fine, canvas)
        fits.append([th, col, score, centre, aspect])
        weights.append(f)
    # In mm^2: the crop is per slice, so pixel sizes differ between a patient's slices.
    area = np.array([b.sum() for b in brains], float) * pmm[:, 0] * pmm[:, 1]
    if groups is not None and config.per_patient_angle and given_planes is None:
        g = np.asarray(groups)
        for pid in pd.unique(g):
            idx = [i for i in np.flatnonzero(g == pid) if fits[i] is not None]
            if len(idx) < 2:
                continue
            big = [i for i in idx if area[i] >= 0.5 * area[idx].max()]
            th = float(np.median([fits[i][0] for i in big]))
            for i in idx:
                centre, aspect = fits[i][3], fits[i][4]
                col, score = _mirror_profile(weights[i], th, centre, aspect, canvas)
                fits[i][:3] = [th, col, score]
    # Brain area relative to the patient's largest slice: the ventricle levels.
    rel_area = np.ones(n)
    if groups is not None:
        big = pd.Series(area).groupby(np.asarray(groups)).transform("max").to_numpy()
        rel_area = np.divide(area, big, out=np.zeros(n), where=big > 0)
    rows = []
    rr_grid, cc_grid = np.mgrid[:H, :W]
    for i in range(n):
        img = np.asarray(images[i], dtype=np.float32)
        b = brains[i]
        pr, pc = pmm[i]
        lab = labels[i]
        lab[b] = BRAIN
        rec = {
            "midline_angle_deg": np.nan,
            "midline_col_px": np.nan,
            "midline_offset_px": np.nan,
            "symmetry": np.nan,
            "brain_area_mm2": float(b.sum() * pr * pc),
            "brain_area_rel": float(rel_area[i]),
            "ventricle_level": bool(rel_area[i] >= config.ventricle_min_rel_area),
            "ventricle_area_left_mm2": 0.0,
            "ventricle_area_right_mm2": 0.0,
            "ventricle_asymmetry": np.nan,
            "septum_shift_mm": np.nan,
            "lesion_image_area_mm2": 0.0,
            "plane_residual_mm": np.nan,
            "pixel_mm_row": pr,
            "pixel_mm_col": pc,
        }
        if not b.any():
            rows.append(rec)
            continue
        # Cortical-edge band, by distance in mm from the brain's border.
        bg_mask = ~b
        lab[b & _near(bg_mask, config.edge_width_mm, pr, pc, strict=False)] |= EDGE
        outside = img[~b]
        bg = fast_median(outside) if outside.size > 16 else float(np.percentile(img, 1))
        r = _bias_corrected(img - bg, b, config.bias_sigma_mm / pr, config.bias_sigma_mm / pc)
        if rec["ventricle_level"]:
            vent = _ventricles(r, b, bg_mask, pr, pc, config, csf_bright=csf_bright)
        else:
            vent = np.zeros_like(b)
        lab[vent] |= VENTRICLE
        fit = fits[i]
        plane = given_planes[i] if given_planes is not None else None
        plane_pts = _plane_line(plane, H) if b.sum() >= config.min_brain_area_px else None
        has_line = plane_pts is not None or (fit is not None and np.isfinite(fit[1]))
        mirror = None
        score = np.nan
        if has_line:
            if plane_pts is not None:
                (x0, y0), (x1, y1) = plane_pts
            else:
                th, col, score, centre, aspect = fit
                (x0, y0), (x1, y1) = _line_points(th, col, centre, aspect, canvas)
            if config.fissure_refine:
                # The fissure is a CSF valley; where CSF is bright, a ridge (2 - r turns it
                # into a valley about the tissue level 1).
                rf = np.where(b, np.maximum(2.0 - r, 0.0), 0.0) if csf_bright else r
                (x0, y0), (x1, y1) = _fissure_line(rf, b, (x0, y0), (x1, y1), pr, pc, config)
            if plane_pts is not None:
                # Departure of the slice's midline from the plane's, at the centre row (mm).
                yc0 = (H - 1) / 2.0
                (px0, py0), (px1, py1) = plane_pts
                at_plane = px0 + (yc0 - py0) * (px1 - px0) / (py1 - py0)
                at_line = x0 + (yc0 - y0) * (x1 - x0) / (y1 - y0)
                rec["plane_residual_mm"] = float(abs(at_line - at_plane) * pc)
        # The infarct is sought where it is a hyperintensity (b1000, FLAIR, T2) only: the
        # detector's levels are set on b1000 infarcts; on ADC (dark infarct) and b0 or EPI
        # (barely visible) it is not sought and the table says NaN.
        rl = r
        if has_line:
            mirror = _mirror_image(rl, (x0, y0), (x1 - x0, y1 - y0), pr, pc, 0.0)
        if les_pol != "bright":
            rec["lesion_image_area_mm2"] = np.nan
        else:
            lab[_lesion(rl, b, mirror, pr, pc, config)] |= LESION
            rec["lesion_image_area_mm2"] = float(((lab & LESION) > 0).sum() * pr * pc)
        if has_line:
            d = np.array([x1 - x0, y1 - y0])
            if d[1] < 0:
                d = -d
            # Column of the line at each row; the high-column side is the patient's left.
            side = (cc_grid - x0) * d[1] - (rr_grid - y0) * d[0]
            if plane is not None:
                # The plane's sign (through the affine) says which side is the patient's
                # left; in a radiological slice that is the high-column side.
                s_plane = plane[0] * rr_grid[b] + plane[1] * cc_grid[b] + plane[2]
                if np.sum((side[b] > 0) == (s_plane < 0)) < 0.5 * b.sum():
                    side = -side
                if mirror is not None:
                    m = np.isfinite(mirror) & b
                    if m.sum() > 16:
                        score = _correlation(r[m], mirror[m])
            lab[b & (side > 0)] |= LEFT
            lab[b & (side <= 0)] |= RIGHT
            yc = (H - 1) / 2.0
            col_c = x0 + (yc - y0) * d[0] / d[1]
            rec.update(
                midline_angle_deg=math.degrees(math.atan2(d[0] * pc, d[1] * pr)),
                midline_col_px=col_c,
                midline_offset_px=col_c - (W - 1) / 2.0,
                symmetry=score,
            )
            vl = int((vent & (side > 0)).sum())
            vr = int((vent & (side <= 0)).sum())
            rec["ventricle_area_left_mm2"] = vl * pr * pc
            rec["ventricle_area_right_mm2"] = vr * pr * pc
            if vl + vr:
                rec["ventricle_asymmetry"] = (vl - vr) / (vl + vr)
            vr_rows, vr_cols = np.nonzero(vent)
            rec["septum_shift_mm"] = _septum_shift(vr_rows, vr_cols, (x0, y0), d, pr, pc)
        rows.append(rec)
    table = pd.DataFrame(rows)
    return Anatomy(labels, table)


def _plane_line(plane, H: int):
    """Two points (x=col, y=row) of a plane's zero line on a slice, or None.

    ``plane`` is ``(coef_r, coef_c, const)``: the signed distance (mm) of pixel (r, c). A
    slice that the plane crosses nearly along its rows (a head tilted beyond any scan's)
    has no usable midline.
    """
    if plane is None:
        return None
    a, b, e = plane
    if (
        not (np.isfinite(a) and np.isfinite(b) and np.isfinite(e))
        or abs(b) < 1e-6
        or abs(a / b) > 1.0
    ):
        return None
    ya, yb = 0.0, float(H - 1)
    return (-(a * ya + e) / b, ya), (-(a * yb + e) / b, yb)


def _mirror_image(img, p0, d, pr, pc, fill) -> np.ndarray:
    """``img`` reflected about the line through ``p0`` (x, y) along ``d``, in mm space."""
    u = np.array([d[0] * pc, d[1] * pr], float)
    u /= np.linalg.norm(u)
    refl = 2 * np.outer(u, u) - np.eye(2)
    to_mm = np.diag([pc, pr])
    lin = np.linalg.inv(to_mm) @ refl @ to_mm
    p0 = np.asarray(p0, float)
    m = np.hstack([lin, (p0 - lin @ p0)[:, None]])
    h, w = img.shape
    return cv2.warpAffine(
        img.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=float(fill)
    )


def _bias_corrected(x: np.ndarray, brain: np.ndarray, sig_r: float, sig_c: float) -> np.ndarray:
    """``x`` divided by its smooth tissue level inside the brain (1 = local tissue), 0 outside.

    The level is a normalised convolution over the brain pixels within 2 robust SDs of the
    median, so an infarct or the ventricles do not pull the field towards themselves.
    """
    vals = x[brain]
    med = fast_median(vals)
    mad = fast_median(np.abs(vals - med)) * 1.4826 + 1e-6
    w = (brain & (np.abs(x - med) <= 2 * mad)).astype(np.float32)
    if w.sum() < 16 or med <= 0:
        return np.where(brain, x / max(med, 1e-6), 0.0).astype(np.float32)
    # The field varies over ~10 cm: it is computed on a grid coarser by a quarter of its
    # width (block means) and interpolated back, at a fraction of the full blur's cost.
    f = max(1, int(min(sig_r, sig_c) / 4))
    H, W = x.shape
    num_in, den_in = x.astype(np.float32) * w, w
    if f > 1:
        small = (max(W // f, 1), max(H // f, 1))
        num_in = cv2.resize(num_in, small, interpolation=cv2.INTER_AREA)
        den_in = cv2.resize(den_in, small, interpolation=cv2.INTER_AREA)
        sig_r, sig_c = sig_r * small[1] / H, sig_c * small[0] / W
    blur = dict(ksize=(0, 0), sigmaX=sig_c, sigmaY=sig_r, borderType=cv2.BORDER_CONSTANT)
    num = cv2.GaussianBlur(num_in, **blur)
    den = cv2.GaussianBlur(den_in, **blur)
    if f > 1:
        num = cv2.resize(num, (W, H), interpolation=cv2.INTER_LINEAR)
        den = cv2.resize(den, (W, H), interpolation=cv2.INTER_LINEAR)
    field = np.where(den > 1e-3, num / np.maximum(den, 1e-3), med)
    field = np.maximum(field, 0.25 * med)
    return np.where(brain, x / field, 0.0).astype(np.float32)


def _fissure_line(r, brain, p0, p1, pr, pc, config: AnatomyConfig):
    """The symmetry line moved onto the interhemispheric fissure where the slice shows it.

    Along the symmetry line, each row's darkest column within ``fissure_search_mm`` is a
    fissure point when it is a narrow valley (brighter by ``fissure_contrast`` of the local
    tissue level on both sides within 3 px; a wide dark ventricle is no valley). A line
    through enough such points (outliers dropped) replaces the symmetry line, unless it
    turns more than ``fissure_max_turn_deg`` away from it. Returns two points (x, y).
    """
    (x0, y0), (x1, y1) = p0, p1
    if abs(y1 - y0) < 1e-6:
        return p0, p1
    slope = (x1 - x0) / (y1 - y0)  # columns per row
    H, W = r.shape
    # Only rows holding brain can hold a fissure point (a profile must lie in the brain).
    rr = np.flatnonzero(brain.any(axis=1))
    if rr.size < config.fissure_min_rows:
        return p0, p1
    rows = rr.astype(float)
    line_x = x0 + (rows - y0) * slope
    w = max(int(round(config.fissure_search_mm / pc)), 2)
    m = 3
    offs = np.arange(-w - m, w + m + 1)
    xs = line_x[:, None] + offs[None, :]
    # The profiles lie along rows at whole-column steps, so one interpolation weight per
    # row: linear interpolation between columns c and c + 1 (0 beyond the image), and the
    # brain mask at the nearer of the two.
    c0 = np.floor(line_x)
    frac = (line_x - c0).astype(np.float32)[:, None]
    cols = c0.astype(np.int64)[:, None] + offs[None, :]
    k_rows = rr[:, None]

    def at(img, c):
        ok = (c >= 0) & (c < W)
        return np.where(ok, img[k_rows, np.clip(c, 0, W - 1)], 0)

    prof = (1.0 - frac) * at(r, cols) + frac * at(r, cols + 1)
    inside = at(brain, np.where(frac < 0.5, cols, cols + 1))
    core = prof[:, m:-m]
    j = np.argmin(core, axis=1) + m
    k = np.arange(rows.size)
    v = prof[k, j]
    # A flat-bottomed valley (bright CSF clipped to one level on b0, T2 or ADC) has its
    # first minimum at its left edge: its point is the middle of its bottom, and its sides
    # are judged beyond the bottom (taking the first minimum moved the b0 fissure half a
    # pixel to the patient's right on every such row).
    n_col = prof.shape[1]
    col = np.arange(n_col)
    off_bottom = (col >= j[:, None]) & (prof != v[:, None])
    end = np.where(off_bottom, col, n_col).min(axis=1) - 1
    end = np.minimum(end, n_col - 1 - m)
    left = np.max(np.stack([prof[k, j - q] for q in range(1, m + 1)]), axis=0)
    right = np.max(np.stack([prof[k, end + q] for q in range(1, m + 1)]), axis=0)
    ok = (
        (np.minimum(left, right) - v >= config.fissure_contrast)
        & (inside[k, j] > 0)
        & (inside.min(axis=1) > 0)
    )
    if ok.sum() < config.fissure_min_rows:
        return p0, p1
    yy, xx = rows[ok], (xs[k, j] + 0.5 * (end - j))[ok]
    keep = np.ones(yy.size, bool)
    for _ in range(3):
        if keep.sum() < config.fissure_min_rows:
            return p0, p1
        coef = _line_fit(yy[keep], xx[keep])
        res = np.abs(np.polyval(coef, yy) - xx)
        keep = res <= max(1.5, 2.5 * _small_median(res[keep]))
    span = (yy[keep].max() - yy[keep].min()) if keep.any() else 0.0
    if keep.sum() < config.fissure_min_rows or span < 0.3 * (rr.max() - rr.min() + 1):
        return p0, p1
    coef = _line_fit(yy[keep], xx[keep])
    turn = math.degrees(abs(math.atan(coef[0] * pc / pr) - math.atan(slope * pc / pr)))
    if turn > config.fissure_max_turn_deg:
        return p0, p1
    ya, yb = 0.0, float(H - 1)
    return (float(np.polyval(coef, ya)), ya), (float(np.polyval(coef, yb)), yb)


def _small_median(v: np.ndarray) -> float:
    """``float(np.median(v))`` of a short 1D array (sorted; a tenth of np.median's
    overhead on a hundred values)."""
    s = np.sort(v)
    n = s.size
    if n == 0:
        return float("nan")
    if n % 2:
        return float(s[n // 2])
    return float((s[n // 2 - 1] + s[n // 2]) / 2.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two samples (``np.corrcoef(a, b)[0, 1]`` from centred dot products,
    a quarter of its cost); NaN when either is constant."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    va, vb = float(a @ a), float(b @ b)
    if va <= 0.0 or vb <= 0.0:
        return float("nan")
    return float(a @ b) / math.sqrt(va * vb)


def _line_fit(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``x = slope * y + intercept`` (``np.polyfit(y, x, 1)``'s
    coefficients, from the centred sums: a twentieth of its cost on a few hundred points)."""
    ym, xm = float(y.mean()), float(x.mean())
    dy = y - ym
    ss = float(dy @ dy)
    slope = float(dy @ (x - xm)) / ss if ss > 0 else 0.0
    return slope, xm - slope * ym


def _robust(v: np.ndarray) -> tuple[float, float]:
    med = fast_median(v)
    return med, fast_median(np.abs(v - med)) * 1.4826 + 1e-6


def _lesion(r, brain, mirror, pr, pc, config: AnatomyConfig) -> np.ndarray:
    """Hyperintense, one-sided components of the bias-corrected slice ``r`` (bool)."""
    med, mad = _robust(r[brain])
    z = (r - med) / mad
    if mirror is not None:
        rad = max(int(round(config.lesion_mirror_tolerance_mm / min(pr, pc))), 0)
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1))
        excess = (r - cv2.dilate(mirror, ker)) / mad
        seed = (z > config.lesion_z) & (excess > config.lesion_mirror_z)
        low = (z > config.lesion_z_low) & (excess > config.lesion_mirror_z_low)
    else:
        seed = z > config.lesion_z_no_midline
        low = z > config.lesion_z_low
    seed &= brain
    if not seed.any():
        return np.zeros(r.shape, bool)
    low = (low | seed) & brain
    min_px = config.lesion_min_area_mm2 / (pr * pc)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(low.view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(r.shape, bool)
    seeded = np.zeros(n, bool)
    seeded[np.unique(lab[seed])] = True
    seeded[0] = False
    out = np.zeros(r.shape, bool)
    ring_ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    for k in np.flatnonzero(seeded & (stats[:, cv2.CC_STAT_AREA] >= min_px)):
        x, y, w, h = stats[k, :4]
        sl = (slice(max(y - 4, 0), y + h + 4), slice(max(x - 4, 0), x + w + 4))
        comp = lab[sl] == k
        ring = cv2.dilate(comp.astype(np.uint8), ring_ker).astype(bool) & ~comp & brain[sl]
        rv = r[sl]
        base = float(np.median(rv[ring])) if ring.sum() >= 8 else med
        peak = float(np.percentile(rv[comp], 90))
        cut = comp & (rv >= base + config.lesion_half_max * (peak - base))
        cut = fill_holes_2d(cut)
        out[sl] |= cut
    return _keep_components(out.astype(np.uint8), min_px)


def _ventricles(r, brain, outside, pr, pc, config: AnatomyConfig, csf_bright=False) -> np.ndarray:
    """CSF components enclosed by tissue, deep and central in the brain (bool).

    ``outside`` is ``~brain`` (passed in so it is computed once per slice).
    """
    if csf_bright:
        # Bright CSF's level varies with the contrast (b0 2-3x tissue, ADC ~4x): the levels
        # are fractions of the way from tissue (1) to the slice's CSF, its brightest 0.5 %.
        q = max(float(np.percentile(r[brain], 99.5)), 1.0)
        dark = brain & (r > 1.0 + config.ventricle_bright_level * (q - 1.0))
        lax = (brain & (r > 1.0 + config.ventricle_bright_open_level * (q - 1.0))) | ~brain
    else:
        dark = brain & (r < config.ventricle_level)
        # Openness is judged on a laxer level: a thin, partial-volumed CSF channel joins a
        # cistern or the fissure to the outside even where no pixel of it is fully dark.
        lax = (brain & (r < config.ventricle_open_level)) | ~brain
    # 4-connectivity: a diagonal touch of two dark pixels is not an open CSF channel.
    n, lab = cv2.connectedComponents(lax.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(r.shape, bool)
    open_to_outside = np.zeros(n, bool)
    open_to_outside[lab[outside]] = True
    enclosed = dark & ~open_to_outside[lab]
    if not enclosed.any():
        return enclosed
    n, lab, stats, cents = cv2.connectedComponentsWithStats(
        enclosed.astype(np.uint8), connectivity=4
    )
    rr, cc = np.nonzero(brain)
    cy, cx = rr.mean(), cc.mean()
    hh = max((rr.max() - rr.min()) / 2.0, 1.0)
    hw = max((cc.max() - cc.min()) / 2.0, 1.0)
    f = config.ventricle_central_fraction
    # A component is deep enough (wide enough) when one of its pixels lies at least that
    # far from the brain's outside (from the component's own outside): the largest
    # inscribed distance reaches the bound (``_near``: exact, no distance transform).
    deep = ~_near(outside, config.ventricle_min_depth_mm, pr, pc, strict=True)
    wide = ~_near(~enclosed, config.ventricle_min_width_mm / 2.0, pr, pc, strict=True)
    keep = (
        (stats[:, cv2.CC_STAT_AREA] >= config.ventricle_min_area_mm2 / (pr * pc))
        & (np.bincount(lab[wide & enclosed], minlength=n)[:n] > 0)
        & (np.abs(cents[:, 0] - cx) <= f * hw)
        & (np.abs(cents[:, 1] - cy) <= f * hh)
        & (np.bincount(lab[deep & enclosed], minlength=n)[:n] > 0)
    )
    keep[0] = False
    return keep[lab]


def _disc(radius_mm: float, pr: float, pc: float, strict: bool) -> np.ndarray:
    """Offsets (rows, cols) at Euclidean distance ``<= radius_mm`` (``<`` if ``strict``).

    The distance is computed as ``scipy.ndimage.distance_transform_edt`` computes it
    (``sqrt((dr * pr)**2 + (dc * pc)**2)`` in float64), so a threshold on that transform
    and a dilation by this element select the same pixels.
    """
    pr, pc = float(pr), float(pc)
    hr, hc = int(radius_mm / pr) + 1, int(radius_mm / pc) + 1
    dr = np.arange(-hr, hr + 1, dtype=np.float64)[:, None] * pr
    dc = np.arange(-hc, hc + 1, dtype=np.float64)[None, :] * pc
    d = np.sqrt(np.add(dr * dr, dc * dc))
    return ((d < radius_mm) if strict else (d <= radius_mm)).astype(np.uint8)


def _near(outside: np.ndarray, radius_mm: float, pr: float, pc: float, strict: bool):
    """Pixels within ``radius_mm`` (mm, ``<`` if ``strict``) of an ``outside`` pixel (bool).

    Equivalent to thresholding ``distance_transform_edt(~outside, sampling=(pr, pc))`` (a
    pixel of ``outside`` is at distance 0), at the cost of one dilation: the anatomy needs
    only whether a pixel is within a few mm of the border, never the distance itself.
    """
    if not outside.any():
        return np.zeros(outside.shape, bool)
    ker = _disc(radius_mm, pr, pc, strict)
    if not ker.any():
        return outside.copy()
    return (
        cv2.dilate(outside.view(np.uint8), ker, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    )


def _keep_components(binary: np.ndarray, min_area_px: float) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, bool)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area_px
    return keep[lab]


# --------------------------------------------------------------------------- store cache


def anatomy_path(store, config: AnatomyConfig | None = None) -> Path:
    """Cache folder of a store's anatomy: ``<store.path>/anatomy-<config key>``."""
    config = config or AnatomyConfig()
    return Path(store.path) / f"anatomy-{config.key()}"


def anatomy_for_store(
    store,
    config: AnatomyConfig | None = None,
    batch_size: int = 256,
    progress: bool = True,
    cohort=None,
    workers: int | None = None,
) -> Anatomy:
    """Anatomy of every slice of a slice store, computed once and cached beside it.

    With ``config.volume`` (the default) each patient's brain mask and midsagittal plane
    are computed on the patient's whole volume (:mod:`hypo.features.brain3d`) and projected
    into the store's slices through their transforms; the volumes are read from ``cohort``
    (default: the cohort folder the store was built from, ``store.meta["cohort_root"]``,
    which must still hold the same files). Per-patient measures (brain volume, the plane
    and its symmetry) are kept in ``Anatomy.patients``.

    Memory is bounded by one patient (or ``batch_size`` slices on the per-slice path); the
    labels are written into a memory map in a private folder that is published by rename,
    so a half-finished run leaves no cache behind and a rerun starts afresh.

    ``workers``: processes for the volume method (default: :func:`hypo._util.env_workers`,
    i.e. ``HYPO_WORKERS`` or the machine's cores, for stores of at least
    :data:`PARALLEL_MIN_PATIENTS` patients, else 1 = in this process; ``HYPO_WORKERS=1``
    on a machine busy with other jobs, where a second process gains nothing). Each
    patient's anatomy depends on that patient alone, and results are collected in store
    order, so the cache is byte-identical whatever the number of workers.
    """
    from tqdm.auto import tqdm

    from hypo._util import atomic_path, blas_one_thread

    config = config or AnatomyConfig()
    path = anatomy_path(store, config)
    if (path / "meta.json").exists():
        return Anatomy.open(path)
    table = store.table
    for col in ("participant_id", "pixel_mm_row", "pixel_mm_col"):
        if col not in table.columns:
            raise ValueError(f"slice store {store.path}: slice table lacks column {col!r}")
    n = len(table)
    _, H, W = store.images.shape
    pids = table["participant_id"].astype(str).to_numpy()
    if config.volume:
        cohort = _store_cohort(store, cohort)
        starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
        bounds = list(zip(starts, np.r_[starts[1:], len(pids)]))
    else:
        # Batches end on patient boundaries so the per-patient midline angle sees all slices.
        bounds = _patient_batches(pids, batch_size)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        labels = np.lib.format.open_memmap(
            tmp / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, H, W)
        )
        parts, patients = [], []
        bar = tqdm(total=len(bounds), desc="anatomy", disable=not progress,
                   unit="patient" if config.volume else "batch")  # fmt: skip
        n_workers = _anatomy_workers(workers, len(bounds)) if config.volume else 1
        if n_workers > 1:
            results = _parallel_volume_anatomy(store, cohort, config, bounds, n_workers)
        else:
            results = (
                _store_part_anatomy(store, cohort, config, a, b, batch_size) for a, b in bounds
            )
        # In this process, BLAS on one thread (the workers run so already): the anatomy's
        # products are small and BLAS threads would only spin.
        with blas_one_thread():
            for (a, b), (lab_ab, tab_ab, rec) in zip(bounds, results):
                labels[a:b] = lab_ab
                parts.append(tab_ab)
                if rec is not None:
                    patients.append(rec)
                bar.update(1)
        bar.close()
        labels.flush()
        del labels
        tab = pd.concat(parts, ignore_index=True)
        keys = ["store_index", "participant_id", "slice"]
        for j, k in enumerate(c for c in keys if c in table.columns):
            tab.insert(j, k, table[k].to_numpy())
        tab.to_parquet(tmp / "anatomy.parquet", index=False)
        if patients:
            pd.DataFrame(patients).to_parquet(tmp / "patients.parquet", index=False)
        write_json_atomic(
            tmp / "meta.json",
            {
                "anatomy_version": ANATOMY_VERSION,
                "config": asdict(config),
                "config_key": config.key(),
                "store": str(store.path),
                "cohort_root": str(cohort.root) if config.volume else None,
                "n_slices": n,
                "bits": {
                    "brain": BRAIN,
                    "left": LEFT,
                    "right": RIGHT,
                    "ventricle": VENTRICLE,
                    "edge": EDGE,
                    "lesion": LESION,
                },
            },
        )
    return Anatomy.open(path)


#: Stores with fewer patients are done in the calling process (a worker's start costs
#: about as much as a few patients' anatomy).
PARALLEL_MIN_PATIENTS = 24


def _anatomy_workers(workers: int | None, n_parts: int) -> int:
    from hypo._util import pool_workers

    return pool_workers(n_parts, workers, worth_it=n_parts >= PARALLEL_MIN_PATIENTS)


def _store_part_anatomy(store, cohort, config: AnatomyConfig, a: int, b: int, batch_size=256):
    """Labels, slice table and patient record (volume method, else None) of store rows
    ``a:b`` (one patient, or one batch of the per-slice method)."""
    rows = store.table.iloc[a:b]
    pids = rows["participant_id"].astype(str).to_numpy()
    pmm = rows[["pixel_mm_row", "pixel_mm_col"]].to_numpy()
    imgs = np.asarray(store.images[a:b])
    kw, rec = {}, None
    if config.volume:
        rec, brains, planes = _patient_volume_anatomy(cohort, rows, config)
        kw = {"brains": brains, "planes": planes, "contrast": rec["contrast"]}
    res = compute_anatomy(imgs, pmm, groups=pids, config=config, **kw)
    return res.labels, res.table, rec


def _worker_part(args):
    store_path, cohort, config, a, b = args
    from hypo.preprocess import SliceStore

    return _store_part_anatomy(SliceStore.open(store_path), cohort, config, a, b)


def _parallel_volume_anatomy(store, cohort, config: AnatomyConfig, bounds, n_workers: int):
    """``_store_part_anatomy`` of each of ``bounds`` in the shared worker processes
    (:func:`hypo._util.process_pool`), in order."""
    from hypo._util import pool_map

    args = [(str(store.path), cohort, config, int(a), int(b)) for a, b in bounds]
    # Up to 4 patients per task, fewer when the patients are few (every worker busy).
    chunk = max(1, min(4, len(args) // (4 * n_workers)))
    yield from pool_map(_worker_part, args, n_workers, chunksize=chunk)


def _store_cohort(store, cohort):
    """The cohort a store was built from, checked to hold the same files."""
    if cohort is None:
        root = store.meta.get("cohort_root")
        if not root or not Path(root).is_dir():
            raise FileNotFoundError(
                f"slice store {store.path}: its cohort folder {root!r} is gone; the volume "
                "anatomy reads each patient's whole volume (pass cohort=, or "
                "AnatomyConfig(volume=False) for the per-slice method)"
            )
        cohort = hc.load(root)
    want = store.meta.get("cohort_hash")
    if want is not None and cohort.content_hash() != want:
        raise ValueError(
            f"slice store {store.path} was built from other files than cohort {cohort.root} "
            "holds now (content hashes differ); rebuild the store"
        )
    return cohort


def _patient_volume_anatomy(cohort, rows: pd.DataFrame, config: AnatomyConfig):
    """One patient's 3D brain mask and plane, and both projected into its store slices."""
    pid = str(rows["participant_id"].iat[0])
    # The raw voxels, not the windowed 0-255 volume: the window clips the background, the
    # scalp and some CSF to 0, and the mask's threshold reads the noise floor.
    path = cohort.dwi_path(pid)
    data, raw_affine, zooms = read_voxels(read_image(path), path)
    data = np.asarray(data, np.float32)
    affine = deshear_affine(raw_affine)
    brain = brain_mask_3d(data, affine, opening_mm=config.brain_opening_mm)
    plane = fit_midsagittal_plane(data, affine, brain, smooth_mm=config.plane_smooth_mm)
    contrast, source = cohort.contrast_of(pid), "declared"
    if contrast is None and brain.sum() >= 1000:
        contrast = DETECTED[detect_csf_polarity(data, affine, brain, plane)]
        source = "detected"
    elif contrast is None:
        # Nothing to detect it from; no slice has a brain, so no contrast is used (the QC
        # fails the patient: no brain).
        contrast, source = DETECTED["dark"], "none: no brain to detect it from"
    transforms = [SliceTransform.from_row(r) for _, r in rows.iterrows()]
    brains, planes = project_patient(brain, plane, affine, rows["slice"].to_numpy(), transforms)
    vox_ml = float(abs(np.linalg.det(raw_affine[:3, :3]))) / 1000.0
    rec = {
        "participant_id": pid,
        "source": str(path),
        "n_slices_volume": int(data.shape[2]),
        "n_slices_with_brain": int(brain.any(axis=(0, 1)).sum()),
        "brain_volume_ml": float(brain.sum() * vox_ml),
        "voxel_mm_x": float(zooms[0]),
        "voxel_mm_y": float(zooms[1]),
        "voxel_mm_z": float(zooms[2]),
        "affine_shear_deg": slice_shear_deg(raw_affine),
        "contrast": contrast,
        "contrast_source": source,
        "plane_normal_x": np.nan,
        "plane_normal_y": np.nan,
        "plane_normal_z": np.nan,
        "plane_offset_mm": np.nan,
        "plane_tilt_deg": np.nan,
        "plane_symmetry": np.nan,
        "plane_asymmetry": np.nan,
    }
    if plane is not None:
        rec.update(
            plane_normal_x=float(plane.normal[0]),
            plane_normal_y=float(plane.normal[1]),
            plane_normal_z=float(plane.normal[2]),
            plane_offset_mm=plane.offset_mm,
            plane_tilt_deg=plane.tilt_deg,
            plane_symmetry=plane.symmetry,
            plane_asymmetry=plane.asymmetry_mad,
        )
    return rec, brains, planes


def _patient_batches(pids: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    if len(pids) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
    ends = np.r_[starts[1:], len(pids)]
    out, a = [], 0
    for s, e in zip(starts, ends):
        if e - a > batch_size and s > a:
            out.append((a, s))
            a = s
    out.append((a, len(pids)))
    return out
