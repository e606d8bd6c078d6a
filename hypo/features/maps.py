"""Features of each class activation map, per slice.

Every feature is computed from the **raw** map (never normalised per image) against the
slice's image-derived anatomy (:mod:`hypo.features.anatomy`) and its lesion mask (the
cohort's manual mask where the store has one, else the image-derived one). All features
are invariant to the map's overall scale except the ``map_mass_*`` columns, which serve
as weights when slices are aggregated per patient.

Conventions
-----------
* Hemispheres are the patient's: ``L`` = patient's left (high columns of a radiological
  slice, beyond the estimated midline), ``R`` = patient's right. ``asymmetry_index`` =
  ``(L - R) / (L + R)`` of the map's mass: +1 when all relevance lies in the left
  hemisphere.
* Metrics run on brain pixels (lesion pixels count as brain) unless the name says
  ``outside``; background pixels never enter the lesion, asymmetry or concentration
  features (the background is zero after the brain crop and would dilute every ratio).
* A map without mass in the brain (all zero) gives NaN for every ratio, never a warning.

The data dictionary of every column is :data:`FEATURE_DICTIONARY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import write_table_atomic
from hypo.features.anatomy import BRAIN, EDGE, LEFT, LESION, RIGHT, VENTRICLE

MAP_SOURCES = ("cam", "control_uniform", "control_intensity", "control_random_model")
SIDES = ("left", "right", "bilateral", "none")

#: (column, definition, unit) of every per-slice feature and covariate.
FEATURE_DICTIONARY: list[tuple[str, str, str]] = [
    ("store_index", "row of the slice in the slice store", "index"),
    ("cohort_id", "cohort identifier of the slice store", "id"),
    ("lesion_visible", "reader's slice label: lesion visible (1) or not (0)", "0/1"),
    ("participant_id", "patient identifier (participants.tsv)", "id"),
    ("slice", "canonical axial slice index, inferior to superior from 0", "index"),
    (
        "map_source",
        "cam = the model's map; control_uniform / control_intensity / control_random_model "
        "= negative-control maps (uniform, image intensity, Grad-CAM of a randomised-weights "
        "model)",
        "label",
    ),
    ("method", "CAM method (gradcam, gradcampp, ...; 'control' for constructed maps)", "label"),
    ("layer", "evaluation layer of the CAM", "label"),
    ("class_index", "class whose pre-softmax score the map explains", "index"),
    (
        "cell_mm",
        "size of one CAM cell at the evaluation layer, mm (mean of rows/cols). Structures "
        "narrower than a cell (e.g. a 5 mm edge band vs a ~12 mm cell) are resolved only by "
        "interpolation of the map: features of such bands mostly measure interpolation. "
        "NaN for the image-made controls (pixel-resolution maps, no cell)",
        "mm",
    ),
    ("map_mass_brain", "sum of the raw map over brain pixels (aggregation weight)", "map units"),
    ("map_mass_total", "sum of the raw map over the whole slice", "map units"),
    ("map_max", "maximum of the raw map", "map units"),
    (
        "relevance_mass_lesion",
        "sum(a[lesion]) / sum(a[brain]); NaN without lesion or without map mass",
        "fraction 0-1",
    ),
    (
        "pointing_game_hit",
        "1 if the map's maximum (over brain pixels) lies in the lesion; NaN without lesion",
        "0/1",
    ),
    (
        "relevance_rank_accuracy",
        "|top-K map pixels & lesion| / K, K = lesion pixel count; NaN without lesion",
        "fraction 0-1",
    ),
    (
        "top_iou_lesion",
        "IoU of the top `top_fraction` (default 5 %) brain pixels of the map with the lesion",
        "fraction 0-1",
    ),
    (
        "asymmetry_index",
        "(L - R) / (L + R) of map mass, L = patient's left hemisphere about the estimated "
        "midline; +1 = all on the left",
        "-1..1",
    ),
    ("asymmetry_abs", "|asymmetry_index|", "0..1"),
    (
        "asymmetry_ipsi_contra",
        "(ipsi - contra) / (ipsi + contra): map mass on the lesion's side vs the other side; "
        "NaN when the lesion side is none or bilateral",
        "-1..1",
    ),
    (
        "ventricle_density_ratio",
        "mean map value over ventricle pixels / mean over brain pixels, lesion pixels "
        "excluded from both (a compressed ventricle is smaller; a density does not fall "
        "with its area); 1 = as dense as the brain average",
        "ratio",
    ),
    (
        "edge_density_ratio",
        "mean map value in the cortical-edge band / mean over brain pixels, lesion pixels "
        "excluded from both",
        "ratio",
    ),
    (
        "outside_density_ratio",
        "mean map value outside the brain / mean over non-lesion brain pixels",
        "ratio",
    ),
    ("ventricle_mass_fraction", "sum(a[ventricles]) / sum(a[brain]) (secondary)", "fraction"),
    ("edge_mass_fraction", "sum(a[edge band]) / sum(a[brain]) (secondary)", "fraction"),
    ("outside_mass_fraction", "sum(a[outside brain]) / sum(a) (secondary)", "fraction"),
    (
        "entropy_norm",
        "entropy of the map as a distribution over brain pixels / log(number of brain "
        "pixels): 1 = uniform, 0 = one pixel",
        "0..1",
    ),
    ("top_share", "share of brain map mass in the top `top_fraction` brain pixels", "fraction"),
    ("lesion_source", "mask = the cohort's lesion mask; image = image-derived lesion", "label"),
    ("lesion_area_mm2", "lesion cross-section on the slice (lesion_source)", "mm^2"),
    ("lesion_volume_ml", "lesion_area_mm2 x slice thickness / 1000", "mL"),
    ("lesion_image_area_mm2", "image-derived lesion cross-section (check column)", "mm^2"),
    ("lesion_left_px", "lesion pixels in the patient's left hemisphere", "px"),
    ("lesion_right_px", "lesion pixels in the patient's right hemisphere", "px"),
    ("lesion_left_fraction", "share of lesion pixels in the patient's left hemisphere", "fraction"),
    (
        "lesion_side",
        "left / right (>= 90 % of the lesion on one side), bilateral, or none",
        "label",
    ),
    ("brain_area_mm2", "image-derived brain cross-section", "mm^2"),
    ("ventricle_area_mm2", "image-derived ventricle cross-section", "mm^2"),
    ("ventricle_area_left_mm2", "ventricle cross-section in the patient's left hemisphere", "mm^2"),
    (
        "ventricle_area_right_mm2",
        "ventricle cross-section in the patient's right hemisphere",
        "mm^2",
    ),
    (
        "ventricle_asymmetry",
        "(L - R) / (L + R) of ventricle areas; a compressed right ventricle gives > 0",
        "-1..1",
    ),
    (
        "septum_shift_mm",
        "signed distance of the septum (gap between lateral ventricles) from the symmetry "
        "midline, + towards the patient's left; NaN where no gap is found",
        "mm",
    ),
    ("midline_angle_deg", "angle of the symmetry midline from vertical", "degrees"),
    ("midline_offset_px", "column offset of the midline from the image centre", "px"),
    ("slice_thickness_mm", "slice thickness", "mm"),
]


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the map features.

    Parameters
    ----------
    top_fraction : float
        Fraction of brain pixels counted as the map's "top" (Quantus-style top-k, 5 %).
    bilateral_fraction : float
        A lesion is bilateral when at least this share of it lies in the minority side.
    bins : int
        Value levels of the top-k selection (see ``_top_k``): ties within 1/``bins`` of a
        map's range are shared in proportion.
    chunk : int
        Slices per vectorised block (bounds the temporary arrays at about
        ``chunk x 7 x H x W x 4`` bytes).
    """

    top_fraction: float = 0.05
    bilateral_fraction: float = 0.10
    chunk: int = 64
    bins: int = 4096


def _ratio(num, den):
    num = np.asarray(num, float)
    den = np.asarray(den, float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out


def lesion_side(left_px, right_px, bilateral_fraction: float = 0.10) -> np.ndarray:
    """'left' / 'right' / 'bilateral' / 'none' from lesion pixel counts per hemisphere."""
    left_px = np.asarray(left_px, float)
    right_px = np.asarray(right_px, float)
    tot = left_px + right_px
    frac = _ratio(left_px, tot)
    out = np.full(tot.shape, "none", dtype=object)
    out[tot > 0] = "bilateral"
    out[(tot > 0) & (frac >= 1 - bilateral_fraction)] = "left"
    out[(tot > 0) & (frac <= bilateral_fraction)] = "right"
    return out


def side_sign(side) -> np.ndarray:
    """+1 for 'left', -1 for 'right', NaN otherwise (ipsilateral = lesion side)."""
    side = np.asarray(side, dtype=object)
    return np.where(side == "left", 1.0, np.where(side == "right", -1.0, np.nan))


def _check(maps, labels, lesion):
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps have shape {maps.shape}; expected (n_slices, rows, cols)")
    if labels.shape != maps.shape:
        raise ValueError(
            f"maps have shape {maps.shape} but the anatomy labels have {labels.shape}; "
            "resize the maps to the slice size first (CamStore.iter_chunks(resized=True))"
        )
    if lesion is not None and np.shape(lesion) != maps.shape:
        raise ValueError(f"lesion mask has shape {np.shape(lesion)}; the maps have {maps.shape}")
    a = maps.reshape(len(maps), -1).astype(np.float32, copy=False)
    # Two reductions instead of elementwise tests: NaN/inf propagate into a row's sum.
    bad = ~np.isfinite(a.sum(axis=1, dtype=np.float64))
    if bad.any():
        raise ValueError(f"maps of slices {np.flatnonzero(bad)[:10].tolist()} contain NaN/inf")
    lo, hi = a.min(axis=1), a.max(axis=1)
    neg = lo < -1e-6 * np.maximum(np.abs(lo), np.abs(hi)).clip(1e-30)
    if neg.any():
        raise ValueError(
            f"maps of slices {np.flatnonzero(neg)[:10].tolist()} have negative values; "
            "features need non-negative (ReLU'd, raw) maps"
        )
    return a if not (lo < 0).any() else np.maximum(a, 0)


def map_features(
    maps: np.ndarray,
    labels: np.ndarray,
    *,
    lesion: np.ndarray | None = None,
    side: np.ndarray | None = None,
    config: FeatureConfig | None = None,
    on_empty_brain: str = "raise",
) -> pd.DataFrame:
    """Features of a batch of maps, one row per slice.

    Parameters
    ----------
    maps : ndarray, shape (n, H, W)
        Raw, non-negative maps at the slice size (one class, method and layer).
    labels : ndarray, uint8, shape (n, H, W)
        Packed anatomy labels (:attr:`hypo.features.anatomy.Anatomy.labels`).
    lesion : ndarray (n, H, W), optional
        Lesion mask to use (e.g. the store's manual ``lesion`` mask); default: the
        image-derived lesion in ``labels``.
    side : array of str (n,), optional
        Lesion side ('left', 'right', 'bilateral', 'none') for ``asymmetry_ipsi_contra``,
        e.g. the patient's side; default: the side of the slice's own lesion pixels.
    config : FeatureConfig, optional
    on_empty_brain : {"raise", "nan"}
        What to do with a slice whose anatomy has no brain pixel.

    Returns
    -------
    DataFrame with the map columns of :data:`FEATURE_DICTIONARY` (no identifiers).
    """
    config = config or FeatureConfig()
    labels = np.asarray(labels)
    a_all = _check(maps, labels, lesion)
    return _map_features(a_all, _label_blocks(labels, lesion, config), side, config, on_empty_brain)


def _label_blocks(labels: np.ndarray, lesion: np.ndarray | None, config: FeatureConfig) -> list:
    """What the features of any map of these slices need from their anatomy alone (region
    codes and pixel counts, brain and lesion masks), in blocks of ``config.chunk`` rows:
    computed once, shared by every map (method, class, map source) of the same slices."""
    labels = np.asarray(labels)
    n = len(labels)
    lab_all = labels.reshape(n, -1)
    les_all = None if lesion is None else np.asarray(lesion).reshape(n, -1) > 0
    blocks = []
    for s in range(0, n, config.chunk):
        e = min(n, s + config.chunk)
        les = ((lab_all[s:e] & LESION) > 0) if les_all is None else les_all[s:e]
        blocks.append(_LabelBlock.of(lab_all[s:e], les))
    return blocks


def _map_features(a_all, blocks, side, config, on_empty_brain) -> pd.DataFrame:
    """:func:`map_features` of checked, flattened maps over their :func:`_label_blocks`."""
    n = len(a_all)
    parts = []
    for s, lb in zip(range(0, n, config.chunk), blocks):
        e = min(n, s + config.chunk)
        parts.append(_features_block(a_all[s:e], lb, None if side is None else side[s:e], config))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if on_empty_brain == "raise" and n:
        empty = np.flatnonzero(out["_brain_px"].to_numpy() == 0)
        if empty.size:
            raise ValueError(
                f"slices {empty[:10].tolist()} have no brain pixels in their anatomy; "
                "check the anatomy (or pass on_empty_brain='nan')"
            )
    elif on_empty_brain not in ("raise", "nan"):
        raise ValueError(f"on_empty_brain={on_empty_brain!r}; expected 'raise' or 'nan'")
    return out.drop(columns="_brain_px")


def _top_k(a, n_outside, les, ok, ks, bins):
    """Map mass and lesion pixels among the top-``k`` brain pixels of each row, for each
    ``k`` in ``ks`` (arrays of per-row counts).

    Pixels are binned by value (``bins`` levels between 0 and the row's maximum) with one
    ``bincount`` over the whole block; bins above the k-th value count fully, and the bin
    holding it counts in proportion to the pixels still needed. Values within one bin
    (1/``bins`` of the row's maximum) are treated as ties, and a bin's mass as its count
    times its centre value: a uniform map gives exactly k/n of its mass, not an arbitrary
    pick of k pixels.
    """
    n, P = a.shape
    top = a.max(axis=1)
    scale = np.where(ok & (top > 0), (bins - 1e-3) / np.where(top > 0, top, 1), 0.0)
    idx = np.multiply(a, scale[:, None].astype(np.float32), dtype=np.float32).astype(np.int32)
    # The lesion flag is folded into the bin index so one unweighted bincount gives both
    # pixel counts and lesion hits. Pixels outside the brain are 0 in ``a`` and never lesion:
    # they land in bin 0 without the flag and are taken out of its count below.
    idx *= 2
    np.add(idx, les, out=idx, casting="unsafe")
    idx += (np.arange(n, dtype=np.int32) * (2 * bins))[:, None]
    both = np.bincount(idx.ravel(), minlength=n * 2 * bins).reshape(n, bins, 2)
    # Counts are whole numbers: summed and shifted in integers, exact as in float.
    cnt_i = both[:, :, 0] + both[:, :, 1]
    cnt_i[:, 0] -= np.asarray(n_outside).astype(np.int64)
    cnt = cnt_i.astype(float)
    hits = both[:, :, 1].astype(float)
    # A bin's mass is its count times its centre value: exact to half a bin (1/(2 bins) of
    # the row's maximum per pixel), and it saves a weighted pass over every pixel.
    centre = (np.arange(bins) + 0.5)[None, :] / np.where(scale > 0, scale, 1.0)[:, None]
    mass = cnt * centre
    # Counts, mass and hits of all bins at or above b (top-down cumulative sums).
    c_top = np.cumsum(cnt[:, ::-1], axis=1)[:, ::-1]
    m_top = np.cumsum(mass[:, ::-1], axis=1)[:, ::-1]
    h_top = np.cumsum(hits[:, ::-1], axis=1)[:, ::-1]
    out_m, out_h = [], []
    rows = np.arange(n)
    for k in ks:
        k = np.minimum(np.asarray(k, float), c_top[:, 0])
        b = np.clip((c_top >= k[:, None]).sum(axis=1) - 1, 0, bins - 1)
        # Everything strictly above bin b (none above the top bin).
        top_bin, up = b == bins - 1, np.minimum(b + 1, bins - 1)
        c_above = np.where(top_bin, 0.0, c_top[rows, up])
        need = k - c_above
        frac = _ratio(need, cnt[rows, b])
        frac = np.where(np.isfinite(frac), frac, 0.0)
        out_m.append(np.where(top_bin, 0.0, m_top[rows, up]) + frac * mass[rows, b])
        out_h.append(np.where(top_bin, 0.0, h_top[rows, up]) + frac * hits[rows, b])
    return out_m, out_h


@dataclass
class _LabelBlock:
    """One block of slices' anatomy as the features read it (see :func:`_label_blocks`)."""

    code: np.ndarray  # (n, P) int32: anatomy bits with the lesion in use
    flat: np.ndarray  # code + 64 x row: bincount index of (row, code)
    hc: np.ndarray  # (n, 64) float: pixels per (row, code)
    brain: np.ndarray  # (n, P) bool
    les: np.ndarray  # (n, P) bool

    @classmethod
    def of(cls, lab, les) -> _LabelBlock:
        n = len(lab)
        # One label code per pixel (the anatomy bits with the lesion in use); every region
        # sum is then a sum over codes of a per-row histogram: two bincounts for the whole
        # block. Built in uint8 (lesion pixels are brain too), widened once for the offsets.
        les8 = np.asarray(les).view(np.uint8) if les.dtype == bool else (les > 0).view(np.uint8)
        code = ((lab & ~np.uint8(LESION)) | (les8 * np.uint8(LESION | BRAIN))).astype(np.int32)
        off = (np.arange(n, dtype=np.int32) * 64)[:, None]
        flat = (code + off).ravel()
        hc = np.bincount(flat, minlength=n * 64).reshape(n, 64).astype(float)
        return cls(code, flat, hc, (code & BRAIN) > 0, (code & LESION) > 0)


def _features_block(a, lb: _LabelBlock, side, config: FeatureConfig) -> pd.DataFrame:
    n, P = a.shape
    hc = lb.hc
    hm = np.bincount(lb.flat, weights=a.ravel(), minlength=n * 64).reshape(n, 64)
    codes = np.arange(64)

    def region(*, has=0, lacks=0):
        sel = ((codes & has) == has) & ((codes & lacks) == 0)
        return hm[:, sel].sum(axis=1), hc[:, sel].sum(axis=1)

    m_b, n_b = region(has=BRAIN)
    m_les, n_les = region(has=BRAIN | LESION)
    m_l, _ = region(has=BRAIN | LEFT)
    m_r, _ = region(has=BRAIN | RIGHT)
    m_vnl, n_vnl = region(has=BRAIN | VENTRICLE, lacks=LESION)
    m_enl, n_enl = region(has=BRAIN | EDGE, lacks=LESION)
    m_nl, n_nl = region(has=BRAIN, lacks=LESION)
    m_v, _ = region(has=BRAIN | VENTRICLE)
    m_e, _ = region(has=BRAIN | EDGE)
    m_tot = hm.sum(axis=1)
    n_out = P - n_b
    m_out = m_tot - m_b
    brain, les = lb.brain, lb.les
    has_les = n_les > 0
    mass_ok = m_b > 0

    point = np.full(n, np.nan)
    ab0 = np.multiply(a, brain, dtype=np.float32)
    # Maps are non-negative: the brain maximum of ab0 is the map's brain maximum wherever
    # the brain has mass, the only rows where the hit counts.
    arg = np.argmax(ab0, axis=1)
    hit_max = les[np.arange(n), arg].astype(float)
    point = np.where(has_les & mass_ok, hit_max, np.nan)
    k5 = np.maximum(1, np.ceil(config.top_fraction * n_b))
    share_m, share_h = _top_k(ab0, n_out, les, m_b > 0, [k5, n_les], config.bins)
    top_share = np.where(mass_ok, _ratio(share_m[0], m_b), np.nan)
    top_iou = np.where(has_les & mass_ok, _ratio(share_h[0], k5 + n_les - share_h[0]), np.nan)
    rank = np.where(has_les & mass_ok, _ratio(share_h[1], n_les), np.nan)
    ent = np.full(n, np.nan)
    ok = mass_ok & (n_b > 1)
    if ok.any():
        # float32 log (vectorised); 0 log 0 = 0 through the clip.
        lg = np.maximum(ab0, np.float32(1e-30))
        np.log(lg, out=lg)
        np.multiply(lg, ab0, out=lg)
        plogp = np.einsum("ij->i", lg, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.log(np.where(ok, m_b, 1.0)) - plogp / np.where(ok, m_b, 1.0)
            ent[ok] = h[ok] / np.log(n_b[ok])
    asym = _ratio(m_l - m_r, m_l + m_r)
    if side is None:
        # Lesion pixels per hemisphere from the code histogram (no extra pass over pixels).
        _, lpx = region(has=BRAIN | LESION | LEFT)
        _, rpx = region(has=BRAIN | LESION | RIGHT)
        side = lesion_side(lpx, rpx, config.bilateral_fraction)
    brain_density = _ratio(m_nl, n_nl)
    return pd.DataFrame(
        {
            "map_mass_brain": m_b,
            "map_mass_total": m_tot,
            "map_max": a.max(axis=1).astype(float) if P else np.zeros(n),
            "relevance_mass_lesion": np.where(has_les, _ratio(m_les, m_b), np.nan),
            "pointing_game_hit": point,
            "relevance_rank_accuracy": rank,
            "top_iou_lesion": top_iou,
            "asymmetry_index": asym,
            "asymmetry_abs": np.abs(asym),
            "asymmetry_ipsi_contra": asym * side_sign(side),
            "ventricle_density_ratio": _ratio(_ratio(m_vnl, n_vnl), brain_density),
            "edge_density_ratio": _ratio(_ratio(m_enl, n_enl), brain_density),
            "outside_density_ratio": _ratio(_ratio(m_out, n_out), brain_density),
            "ventricle_mass_fraction": _ratio(m_v, m_b),
            "edge_mass_fraction": _ratio(m_e, m_b),
            "outside_mass_fraction": _ratio(m_out, m_tot),
            "entropy_norm": ent,
            "top_share": top_share,
            "_brain_px": n_b,
        }
    )


def image_covariates(
    labels: np.ndarray,
    anatomy_table: pd.DataFrame,
    pixel_mm,
    slice_thickness_mm,
    lesion: np.ndarray | None = None,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Per-slice image covariates (lesion size and side, ventricles, midline), no map needed.

    Parameters
    ----------
    labels : uint8 (n, H, W)
        Packed anatomy labels.
    anatomy_table : DataFrame
        :attr:`Anatomy.table` rows of the same slices.
    pixel_mm : (n, 2) array of (row_mm, col_mm)
    slice_thickness_mm : (n,) array or float
    lesion : (n, H, W), optional
        Manual lesion mask; default the image-derived one.
    """
    config = config or FeatureConfig()
    labels = np.asarray(labels)
    n = len(labels)
    if len(anatomy_table) != n:
        raise ValueError(f"anatomy table has {len(anatomy_table)} rows; labels have {n} slices")
    if lesion is not None and np.shape(lesion) != labels.shape:
        raise ValueError(f"lesion mask has shape {np.shape(lesion)}; labels have {labels.shape}")
    pmm = np.broadcast_to(np.asarray(pixel_mm, float), (n, 2))
    thick = np.broadcast_to(np.asarray(slice_thickness_mm, float), (n,))
    px_area = pmm[:, 0] * pmm[:, 1]
    lab = labels.reshape(n, -1)
    les = (lab & LESION) > 0 if lesion is None else np.asarray(lesion).reshape(n, -1) > 0
    lpx = (les & ((lab & LEFT) > 0)).sum(axis=1)
    rpx = (les & ((lab & RIGHT) > 0)).sum(axis=1)
    area = les.sum(axis=1) * px_area
    t = anatomy_table
    return pd.DataFrame(
        {
            "lesion_source": "image" if lesion is None else "mask",
            "lesion_area_mm2": area,
            "lesion_volume_ml": area * thick / 1000.0,
            "lesion_image_area_mm2": t["lesion_image_area_mm2"].to_numpy(float),
            "lesion_left_px": lpx,
            "lesion_right_px": rpx,
            "lesion_left_fraction": _ratio(lpx, lpx + rpx),
            "lesion_side": lesion_side(lpx, rpx, config.bilateral_fraction),
            "brain_area_mm2": t["brain_area_mm2"].to_numpy(float),
            "ventricle_area_left_mm2": t["ventricle_area_left_mm2"].to_numpy(float),
            "ventricle_area_right_mm2": t["ventricle_area_right_mm2"].to_numpy(float),
            "ventricle_area_mm2": (
                t["ventricle_area_left_mm2"].to_numpy(float)
                + t["ventricle_area_right_mm2"].to_numpy(float)
            ),
            "ventricle_asymmetry": t["ventricle_asymmetry"].to_numpy(float),
            "septum_shift_mm": t["septum_shift_mm"].to_numpy(float),
            "midline_angle_deg": t["midline_angle_deg"].to_numpy(float),
            "midline_offset_px": t["midline_offset_px"].to_numpy(float),
            "slice_thickness_mm": thick,
        }
    )


def control_maps(images: np.ndarray, kind: str) -> np.ndarray:
    """Negative-control maps built from the images alone, shape (n, H, W).

    ``"control_uniform"``: all ones (relevance spread evenly: features then restate
    anatomy alone). ``"control_intensity"``: the image shifted so its minimum is 0 (a map
    that only tracks brightness, e.g. of a bright DWI lesion).
    """
    x = np.asarray(images, np.float32)
    if kind == "control_uniform":
        return np.ones_like(x)
    if kind == "control_intensity":
        return x - x.reshape(len(x), -1).min(axis=1)[:, None, None]
    raise ValueError(f"unknown control {kind!r}; expected 'control_uniform' or 'control_intensity'")


def features_for_store(
    store,
    anatomy,
    cams=None,
    *,
    controls=("control_uniform", "control_intensity"),
    patient_side: dict | None = None,
    config: FeatureConfig | None = None,
    progress: bool = True,
    control_cache=None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Per-slice features of every map of a store, with negative controls side by side.

    Parameters
    ----------
    store : SliceStore
    anatomy : Anatomy
        :func:`hypo.features.anatomy.anatomy_for_store` of the same store.
    cams : CamStore, or list of CamStore / (map_source, CamStore), optional
        CAM caches of :func:`hypo.cam.stream.compute_store` (all methods and classes of
        each are used). Plain caches are ``map_source="cam"``; pass e.g.
        ``("control_random_model", cache)`` for maps of a randomised-weights model.
    controls : sequence of str
        Image-made controls (``control_uniform``, ``control_intensity``), computed once.
    patient_side : dict participant_id -> side, optional
        Lesion side per patient for ``asymmetry_ipsi_contra``; default: computed from the
        store's lesions (see :func:`patient_lesion_side`).
    control_cache : path, optional
        Parquet file of the image-made controls' rows: read when it exists, else written.
        The controls depend on the store, its anatomy, ``controls``, ``config`` and the
        patients' sides only, not on a model, so the models of one study featurise them
        once (:func:`hypo.features.pipeline.run_features` keys the file by all of those).
    workers : int, optional
        Processes (default :func:`hypo._util.env_workers` for stores of at least
        :data:`PARALLEL_MIN_SLICES` slices, else 1 = this process). The table is the same
        whatever the number.

    Returns
    -------
    DataFrame: one row per slice x map (source, method, layer, class), identifiers first,
    then map features, then the slice's image covariates.
    """
    from tqdm.auto import tqdm

    from hypo.cam.stream import CamStore

    config = config or FeatureConfig()
    table = store.table
    n = len(table)
    if len(anatomy) != n:
        raise ValueError(
            f"anatomy has {len(anatomy)} slices but the store {store.path} has {n}; "
            "was it computed for another store?"
        )
    lesion = store.masks.get("lesion") if hasattr(store, "masks") else None
    pmm = table[["pixel_mm_row", "pixel_mm_col"]].to_numpy(float)
    thick = (
        table["slice_thickness_mm"].to_numpy(float)
        if "slice_thickness_mm" in table.columns
        else np.ones(n)
    )
    covs = []
    step = 512
    for s in range(0, n, step):
        e = min(n, s + step)
        covs.append(
            image_covariates(
                np.asarray(anatomy.labels[s:e]),
                anatomy.table.iloc[s:e],
                pmm[s:e],
                thick[s:e],
                None if lesion is None else np.asarray(lesion[s:e]),
                config,
            )
        )
    cov = pd.concat(covs, ignore_index=True)
    ids = pd.DataFrame(
        {
            "store_index": np.arange(n),
            "participant_id": table["participant_id"].astype(str).to_numpy(),
            "slice": table["slice"].to_numpy() if "slice" in table.columns else np.arange(n),
        }
    )
    if "lesion_visible" in table.columns:
        ids["lesion_visible"] = pd.to_numeric(table["lesion_visible"], errors="coerce").to_numpy()
    cohort_id = getattr(store, "meta", {}).get("cohort_id") if hasattr(store, "meta") else None
    if cohort_id is not None:
        ids.insert(0, "cohort_id", cohort_id)
    if patient_side is None:
        patient_side = patient_lesion_side(ids["participant_id"], cov, config)
    side = ids["participant_id"].map(patient_side).fillna("none").to_numpy(object)
    pix = pmm.mean(axis=1)

    items = [] if cams is None else (cams if isinstance(cams, list) else [cams])
    items = [item if isinstance(item, tuple) else (None, item) for item in items]
    cells = []
    for _, cs in items:
        raw_shape = _raw_spatial(cs)
        in_shape = tuple(cs.input_shape[:-1]) if len(cs.input_shape) > 2 else cs.input_shape
        cells.append(float(np.mean(np.asarray(in_shape, float) / np.asarray(raw_shape, float))))
    cached_controls = bool(controls) and control_cache is not None and Path(control_cache).is_file()
    controls = tuple(controls) if controls and not cached_controls else ()
    n_chunks = max((cs.n_chunks for _, cs in items), default=0)
    n_units = n_chunks + len(controls) * -(-n // 256)
    # Work units: chunk i of every map cache (the slices' label blocks computed once for
    # all their maps), then the image-made controls in blocks of 256 slices. Each unit's
    # rows depend on its slices alone and units are collected in order, so the table is
    # the same to the last bit in one process or in the shared workers. Workers read the
    # caches from disk; maps of other sources (views, stand-ins) are read here.
    from hypo._util import pool_workers

    n_workers = pool_workers(n_units, workers, worth_it=n >= PARALLEL_MIN_SLICES)
    if n_workers > 1 and not all(isinstance(cs, CamStore) for _, cs in items):
        n_workers = 1
    store_ref, anatomy_ref = _StoreRef.of(store), _StoreRef.of(anatomy)
    if n_workers > 1 and (store_ref is store or anatomy_ref is anatomy):
        n_workers = 1
    units = _feature_units(items, cells, n_chunks, controls, n, ids, side, pix,
                           read_maps=n_workers == 1)  # fmt: skip
    if n_workers > 1:
        from hypo._util import pool_map

        args = ((store_ref, anatomy_ref, unit, config) for unit in units)
        results = pool_map(_feature_unit_star, args, n_workers)
    else:
        results = (_feature_unit(store, anatomy, unit, config) for unit in units)
    bar = tqdm(total=n_units, disable=not progress,
               desc=f"features ({len(items)} map cache(s){', controls' if controls else ''})")  # fmt: skip
    # Rows keep their order: per CAM cache, method, then chunk, then class; then the
    # controls, kind by kind.
    by_item = [{method: [] for method in cs.methods} for _, cs in items]
    frames, control_frames = [], []
    for res in results:
        if isinstance(res, list):
            for j, per_method in enumerate(res):
                for method, fr in (per_method or {}).items():
                    by_item[j][method] += fr
        else:
            control_frames.append(res)
        bar.update(1)
    bar.close()
    for per_method in by_item:
        for fr in per_method.values():
            frames.extend(fr)
    if cached_controls:
        frames.append(pd.read_parquet(control_cache))
    elif control_frames:
        frames.extend(control_frames)
        if control_cache is not None:
            Path(control_cache).parent.mkdir(parents=True, exist_ok=True)
            write_table_atomic(Path(control_cache), pd.concat(control_frames, ignore_index=True))
    if not frames:
        raise ValueError("no maps to featurise: pass cams and/or controls")
    feats = pd.concat(frames, ignore_index=True)
    cov_cols = cov.copy()
    cov_cols.insert(0, "store_index", np.arange(n))
    return feats.merge(cov_cols, on="store_index", how="left", validate="m:1")


#: Stores with fewer slices are featurised in the calling process (a worker's start, once
#: per run, costs about as much as a thousand slices' features).
PARALLEL_MIN_SLICES = 1024


@dataclass(frozen=True)
class _StoreRef:
    """A slice store or anatomy cache sent to a worker by its folder (its arrays are
    memory maps, opened again there rather than pickled)."""

    kind: str
    path: str

    @classmethod
    def of(cls, obj) -> _StoreRef | object:
        from hypo.features.anatomy import Anatomy
        from hypo.preprocess import SliceStore

        # Only caches opened from their folder (memory maps): a store or anatomy restricted
        # to some rows in memory keeps its folder's path but not its rows.
        for kind, klass, arrays in (
            ("store", SliceStore, "images"),
            ("anatomy", Anatomy, "labels"),
        ):
            if (
                isinstance(obj, klass)
                and getattr(obj, "path", None) is not None
                and isinstance(getattr(obj, arrays, None), np.memmap)
            ):
                return cls(kind, str(obj.path))
        return obj  # anything else (a subset, a test's stand-in) stays in this process

    def open(self):
        if self.kind == "store":
            from hypo.preprocess import SliceStore

            return SliceStore.open(self.path)
        from hypo.features.anatomy import Anatomy

        return Anatomy.open(self.path)


def _feature_unit_star(args):
    store, anatomy, unit, config = args
    store = store.open() if isinstance(store, _StoreRef) else store
    anatomy = anatomy.open() if isinstance(anatomy, _StoreRef) else anatomy
    return _feature_unit(store, anatomy, unit, config)


def _feature_units(items, cells, n_chunks, controls, n, ids, side, pix, read_maps: bool):
    """The work units of :func:`features_for_store`, in order (a generator: with
    ``read_maps`` each CAM unit carries its chunk's maps, read here chunk by chunk, else
    the worker reads chunk ``i`` of each cache itself)."""
    its = [
        zip(*(cs.iter_chunks(method, resized=True) for method in cs.methods)) if read_maps else None
        for _, cs in items
    ]
    for i in range(n_chunks):
        entries, lo, hi = [], n, 0
        for (forced, cs), cell_px, it in zip(items, cells, its):
            if i >= cs.n_chunks:
                entries.append(None)
                continue
            if it is None:
                start = i * cs.chunk_size
                stop = min(cs.n_slices, start + cs.chunk_size)
                maps = None
            else:
                group = next(it)
                start, stop = group[0][:2]
                maps = [g[2] for g in group]
            entries.append((forced, cs, cell_px, int(start), int(stop), maps))
            lo, hi = min(lo, start), max(hi, stop)
        yield ("cams", i, entries, ids.iloc[lo:hi], lo, side[lo:hi], pix[lo:hi])
    for kind in controls:
        for s in range(0, n, 256):
            e = min(n, s + 256)
            yield ("control", kind, None, ids.iloc[s:e], s, side[s:e], None)


def _feature_unit(store, anatomy, unit, config: FeatureConfig):
    """The feature rows of one work unit of :func:`features_for_store`: chunk ``i`` of
    every map cache (a ``{method: [frame per class]}`` per cache, None where the cache has
    no such chunk), or one block of an image-made control (a frame)."""
    what, key, entries, ids, lo, side, pix = unit
    lesion = store.masks.get("lesion") if hasattr(store, "masks") else None
    shared = {}  # the label blocks of the slices last featurised, for every map of them

    def frame(source, method, layer, cls, start, stop, maps2d, cell_px):
        les = None if lesion is None else np.asarray(lesion[start:stop])
        labels = anatomy.labels[start:stop]
        a = _check(maps2d, labels, les)
        if (start, stop) not in shared:
            shared.clear()
            shared[start, stop] = _label_blocks(labels, les, config)
        r0, r1 = start - lo, stop - lo
        f = _map_features(a, shared[start, stop], side[r0:r1], config, "nan")
        head = ids.iloc[r0:r1].reset_index(drop=True).copy()
        head["map_source"] = source
        head["method"] = method
        head["layer"] = layer
        head["class_index"] = int(cls)
        head["cell_mm"] = cell_px * pix[r0:r1] if cell_px is not None else np.nan
        return pd.concat([head, f], axis=1)

    if what == "control":
        stop = lo + len(ids)
        return frame(key, "control", "image", -1, lo, stop,
                     control_maps(store.images[lo:stop], key), None)  # fmt: skip
    out = []
    for entry in entries:
        if entry is None:
            out.append(None)
            continue
        forced, cs, cell_px, start, stop, maps = entry
        if maps is None:
            maps = [cs.chunk(key, method, resized=True)[2] for method in cs.methods]
        per_method = {}
        for method, m in zip(cs.methods, maps):
            source = forced or (method if method.startswith("control_") else "cam")
            m = np.asarray(m)
            per_method[method] = [
                frame(source, method, cs.layer, cls, start, stop, m[:, j], cell_px)
                for j, cls in enumerate(cs.classes)
            ]
        out.append(per_method)
    return out


def _raw_spatial(cs) -> tuple[int, ...]:
    return cs.raw_shape


def patient_lesion_side(
    participant_ids, covariates: pd.DataFrame, config: FeatureConfig | None = None
) -> dict:
    """Lesion side of each patient from their slices' lesion pixels per hemisphere."""
    config = config or FeatureConfig()
    g = (
        pd.DataFrame(
            {
                "pid": np.asarray(participant_ids),
                "l": covariates["lesion_left_px"].to_numpy(),
                "r": covariates["lesion_right_px"].to_numpy(),
            }
        )
        .groupby("pid", sort=False)[["l", "r"]]
        .sum()
    )
    return dict(zip(g.index, lesion_side(g["l"], g["r"], config.bilateral_fraction)))
