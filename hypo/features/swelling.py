"""Image signs of swelling, measured from the scan (not from any map or truth).

Two statistics a neuroradiologist reads as space-occupying swelling, each signed so that
larger = more swelling, per patient:

* ``sulcal_effacement`` -- swollen gyri fill the sulci around an infarct, so on CSF-dark
  contrasts (DWI b1000, FLAIR) the tissue in a band around the lesion is brighter than in
  the mirrored band of the other hemisphere. On the patient's lesion slices: a band
  ``inner_mm``-``outer_mm`` outside the lesion mask, in the lesion's hemisphere, each pixel
  paired with its mirror image across the slice's midline (the anatomy stage's
  ``midline_col_px`` and ``midline_angle_deg``); the statistic is the mean intensity
  difference (band minus mirror) over all pairs, in units of the slice's brain intensity
  standard deviation. A pair whose mirror lies outside the brain or in a lesion is dropped.
  On CSF-bright contrasts (b0, T2, ADC) the sign is flipped so that effacement is positive
  on every contrast.
* ``ventricle_compression`` -- the lateral ventricle facing a swollen hemisphere is
  squeezed: ``(contra - ipsi) / (contra + ipsi)`` of the image-derived ventricle areas summed
  over the patient's slices (0 = symmetric, > 0 = the lesion side's ventricle is smaller).

Both need a unilateral lesion (left or right); bilateral, lesion-free and ventricle-free
patients get NaN with the reason in ``swelling_note``. They are positive controls of
visibility: :mod:`hypo.study.power` asks whether they detect the swelling the synthetic
generator planted, beside the CAM features. Hand-written because no library measures
perilesional effacement; the morphology is OpenCV's.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from hypo.cohort.contrast import csf_polarity

__all__ = ["SWELLING_COLUMNS", "swelling_signs"]

#: Columns of :func:`swelling_signs` besides ``participant_id``.
SWELLING_COLUMNS = ("sulcal_effacement", "ventricle_compression", "swelling_note")


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(round(radius_px)), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _band_pairs(img, lesion, brain, hemi, side_code, mid_col, angle_deg, inner, outer):
    """Intensities of the perilesional band and of its mirror pixels on one slice."""
    les = lesion.astype(np.uint8)
    band = (cv2.dilate(les, outer) > 0) & ~(cv2.dilate(les, inner) > 0) & brain
    band &= hemi == side_code
    rr, cc = np.nonzero(band)
    if len(rr) == 0 or not np.isfinite(mid_col):
        return None
    H, W = img.shape
    tilt = np.tan(np.deg2rad(angle_deg if np.isfinite(angle_deg) else 0.0))
    mirror = np.rint(2 * (mid_col + (rr - H / 2) * tilt) - cc).astype(int)
    ok = (mirror >= 0) & (mirror < W)
    rr, cc, mirror = rr[ok], cc[ok], mirror[ok]
    ok = brain[rr, mirror] & ~lesion[rr, mirror]
    if ok.sum() == 0:
        return None
    return img[rr[ok], cc[ok]], img[rr[ok], mirror[ok]]


def swelling_signs(
    images: np.ndarray,
    lesion: np.ndarray,
    labels_brain: np.ndarray,
    hemisphere: np.ndarray,
    anatomy_table: pd.DataFrame,
    patients,
    sides,
    csf_bright: bool = False,
    inner_mm: float = 2.0,
    outer_mm: float = 12.0,
    min_pairs: int = 20,
) -> pd.DataFrame:
    """Per-patient image signs of swelling (see the module docstring).

    Parameters
    ----------
    images : (n, H, W) array
        Preprocessed slices (a :class:`hypo.preprocess.SliceStore`'s ``images``).
    lesion : (n, H, W) bool
        Lesion masks of the same slices.
    labels_brain, hemisphere : (n, H, W)
        :attr:`hypo.features.anatomy.Anatomy.brain` and ``.hemisphere`` (1 = patient's
        left, 2 = right).
    anatomy_table : DataFrame
        :attr:`Anatomy.table` of the slices (``midline_col_px``, ``midline_angle_deg``,
        ``ventricle_area_left_mm2``, ``ventricle_area_right_mm2``, ``pixel_mm_row``,
        ``pixel_mm_col``).
    patients : (n,) array
        Participant id of each slice.
    sides : mapping
        ``participant_id -> "left" | "right" | other`` (the patient's lesion side).
    csf_bright : bool
        The contrast shows CSF bright (b0, T2, ADC): the effacement sign is flipped.
    inner_mm, outer_mm : float
        The perilesional band.
    min_pairs : int
        Fewer band pixels than this on all lesion slices together gives NaN.
    """
    n = len(images)
    for name, a in (("lesion", lesion), ("brain", labels_brain), ("hemisphere", hemisphere)):
        if np.shape(a)[0] != n:
            raise ValueError(f"{name} has {np.shape(a)[0]} slices; images have {n}")
    if len(anatomy_table) != n or len(patients) != n:
        raise ValueError(f"anatomy table / patient ids must have one row per slice ({n})")
    t = anatomy_table.reset_index(drop=True)
    pmm = np.nanmean(t[["pixel_mm_row", "pixel_mm_col"]].to_numpy(float), axis=1)
    patients = np.asarray(patients).astype(str)
    sign = -1.0 if csf_bright else 1.0
    out = []
    for pid in pd.unique(patients):
        rows = np.flatnonzero(patients == pid)
        side = str(sides.get(pid, "none"))
        rec = {"participant_id": pid, "sulcal_effacement": np.nan,
               "ventricle_compression": np.nan, "swelling_note": ""}  # fmt: skip
        if side not in ("left", "right"):
            rec["swelling_note"] = f"lesion side {side!r}: needs a unilateral lesion"
            out.append(rec)
            continue
        code = 1 if side == "left" else 2
        diffs, counts = [], 0
        for i in rows:
            les = np.asarray(lesion[i]).astype(bool)
            if not les.any():
                continue
            img = np.asarray(images[i], float)
            brain = np.asarray(labels_brain[i]).astype(bool)
            sd = float(img[brain].std()) if brain.any() else 0.0
            if sd <= 0:
                continue
            px = float(pmm[i]) if np.isfinite(pmm[i]) and pmm[i] > 0 else 1.0
            pair = _band_pairs(img, les, brain, np.asarray(hemisphere[i]), code,
                               float(t.at[i, "midline_col_px"]),
                               float(t.at[i, "midline_angle_deg"]),
                               _disk(inner_mm / px), _disk(outer_mm / px))  # fmt: skip
            if pair is None:
                continue
            diffs.append((pair[0] - pair[1]).sum() / sd)
            counts += len(pair[0])
        if counts >= min_pairs:
            rec["sulcal_effacement"] = sign * float(np.sum(diffs) / counts)
        else:
            rec["swelling_note"] = f"{counts} perilesional band pixels (< {min_pairs})"
        left = float(np.nansum(t.loc[rows, "ventricle_area_left_mm2"]))
        right = float(np.nansum(t.loc[rows, "ventricle_area_right_mm2"]))
        ipsi, contra = (left, right) if side == "left" else (right, left)
        if ipsi + contra > 0:
            rec["ventricle_compression"] = (contra - ipsi) / (contra + ipsi)
        else:
            rec["swelling_note"] = (rec["swelling_note"] + "; no ventricles found").lstrip("; ")
        out.append(rec)
    return pd.DataFrame(out, columns=["participant_id", *SWELLING_COLUMNS])


def swelling_for_store(store, anatomy, sides, csf_bright: bool | None = None) -> pd.DataFrame:
    """:func:`swelling_signs` of every patient of a slice store and its anatomy.

    ``store`` is a :class:`hypo.preprocess.SliceStore` (its ``lesion`` mask is used),
    ``anatomy`` the :class:`hypo.features.anatomy.Anatomy` of the same slices; the CSF
    polarity comes from the anatomy's per-patient ``contrast`` where it is known."""
    if "lesion" not in store.masks:
        raise ValueError(f"slice store {store.path}: has no lesion mask; swelling signs need one")
    if csf_bright is None:
        csf_bright = False
        pt = anatomy.patients
        if pt is not None and "contrast" in pt.columns and len(pt):
            bright = [csf_polarity(str(c)) == "bright" for c in pt["contrast"]]
            csf_bright = bool(np.mean(bright) > 0.5)
    return swelling_signs(
        store.images, store.masks["lesion"], anatomy.brain, anatomy.hemisphere,
        anatomy.table, store.table["participant_id"].to_numpy(), sides, csf_bright,
    )  # fmt: skip
