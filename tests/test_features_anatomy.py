"""Image-derived anatomy: brain, symmetry midline (rotated heads), hemispheres, ventricles."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from hypo.features.anatomy import (
    EDGE,
    HEMI_LEFT,
    HEMI_RIGHT,
    Anatomy,
    AnatomyConfig,
    anatomy_for_store,
    brain_mask,
    compute_anatomy,
)


def phantom(size=96, angle=0.0, lesion=None, vent_shift=0.0, seed=0, right_ventricle=True):
    """A symmetric head: bright ellipse with two dark ventricles, rotated by ``angle`` (cv2,
    degrees counter-clockwise on screen). ``lesion`` = (row, col, radius) before rotation.

    Returns the z-scored image and the true masks (brain, ventricles, lesion, hemisphere:
    1 = patient's left = high columns before rotation).
    """
    H = W = size
    r, c = np.mgrid[:H, :W].astype(float)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    img = np.full((H, W), 10.0)
    brain = ((r - cy) / (0.42 * H)) ** 2 + ((c - cx) / (0.34 * W)) ** 2 <= 1
    img[brain] = 120.0
    vent = np.zeros((H, W), bool)
    for s in (-1, 1) if right_ventricle else (1,):
        vc = cx + s * 0.07 * W + vent_shift
        vent |= ((r - (cy - 0.05 * H)) / (0.12 * H)) ** 2 + ((c - vc) / (0.04 * W)) ** 2 <= 1
    img[vent] = 25.0
    les = np.zeros((H, W), bool)
    if lesion is not None:
        lr, lc, rad = lesion
        les = ((r - lr) ** 2 + (c - lc) ** 2 <= rad**2) & brain
        img[les] = 250.0
    img += np.random.default_rng(seed).normal(0, 3, img.shape)
    hemi = np.where(brain, np.where(c > cx, HEMI_LEFT, HEMI_RIGHT), 0)
    M = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)

    def rot(a, flag):
        a = a.astype(np.float32)
        return cv2.warpAffine(a, M, (W, H), flags=flag, borderValue=float(a.min()))

    img = rot(img, cv2.INTER_LINEAR)
    img = (img - img.mean()) / img.std()
    masks = {
        k: rot(v, cv2.INTER_NEAREST).astype(v.dtype if v.dtype != bool else np.uint8)
        for k, v in {"brain": brain, "ventricles": vent, "lesion": les, "hemisphere": hemi}.items()
    }
    masks = {
        k: (v.astype(bool) if k != "hemisphere" else v.astype(np.uint8)) for k, v in masks.items()
    }
    return img.astype(np.float32), masks


def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize("angle", [0.0, 10.0, -10.0])
def test_rotated_head_gives_right_midline_and_hemispheres(angle):
    img, truth = phantom(96, angle, lesion=(45, 60, 5))
    a = compute_anatomy(img[None], 1.5)
    row = a.table.iloc[0]
    # cv2's positive angle turns the posterior end of the midline towards higher columns.
    assert abs(row["midline_angle_deg"] - angle) < 2.0
    assert abs(row["midline_offset_px"]) < 1.5
    hemi = a.hemisphere[0]
    both = truth["brain"] & a.brain[0]
    agree = (hemi[both] == truth["hemisphere"][both]).mean()
    assert agree > 0.97
    assert dice(a.brain[0], truth["brain"]) > 0.95
    assert dice(a.ventricles[0], truth["ventricles"]) > 0.85
    assert dice(a.lesion[0], truth["lesion"]) > 0.8


def test_midline_follows_the_head_not_the_image_centre():
    img, _ = phantom(96)
    shifted = np.roll(img, 9, axis=1)  # head 9 px to the patient's left
    shifted[:, :9] = img.min()
    a = compute_anatomy(np.stack([img, shifted]), 1.0)
    off = a.table["midline_offset_px"].to_numpy()
    assert abs(off[1] - off[0] - 9) < 1.0


def test_mirrored_slice_swaps_hemispheres():
    img, _ = phantom(96, 7.0, lesion=(45, 62, 5))
    a = compute_anatomy(np.stack([img, img[:, ::-1].copy()]), 1.0)
    h0, h1 = a.hemisphere
    h1m = h1[:, ::-1]
    inside = (h0 > 0) & (h1m > 0)
    assert ((h0 == HEMI_LEFT) == (h1m == HEMI_RIGHT))[inside].mean() > 0.97
    assert np.sign(a.table["midline_angle_deg"][0]) == -np.sign(a.table["midline_angle_deg"][1])
    # The lesion is on the patient's left (high columns) and ends up on the right when mirrored.
    assert (h0[a.lesion[0]] == HEMI_LEFT).mean() > 0.9
    assert (h1[a.lesion[1]] == HEMI_RIGHT).mean() > 0.9


def test_edge_band_width_in_mm():
    img, truth = phantom(96)
    thin = compute_anatomy(img[None], 1.0, config=AnatomyConfig(edge_width_mm=3.0))
    thick = compute_anatomy(img[None], 1.0, config=AnatomyConfig(edge_width_mm=6.0))
    # Halving the pixel size doubles the band's width in pixels.
    fine = compute_anatomy(img[None], 0.5, config=AnatomyConfig(edge_width_mm=3.0))
    n3, n6, n3f = (((x.labels & EDGE) > 0).sum() for x in (thin, thick, fine))
    assert 1.7 < n6 / n3 < 2.2
    assert 1.7 < n3f / n3 < 2.2
    assert not (thin.edge[0] & ~thin.brain[0]).any()


def test_ventricle_asymmetry_and_septum_shift():
    img, _ = phantom(128, 0.0, vent_shift=4.0)  # ventricles pushed 4 px to the patient's left
    a = compute_anatomy(img[None], 0.5)
    t = a.table.iloc[0]
    assert 1.5 < t["septum_shift_mm"] < 2.5  # 4 px of 0.5 mm
    assert abs(t["ventricle_asymmetry"]) < 0.1  # both ventricles, same size
    img, _ = phantom(128, 0.0, right_ventricle=False)  # right ventricle collapsed
    t = compute_anatomy(img[None], 0.5).table.iloc[0]
    assert t["ventricle_asymmetry"] > 0.9
    assert np.isnan(t["septum_shift_mm"])  # no gap between two ventricles to find


def test_empty_and_bad_inputs():
    a = compute_anatomy(np.zeros((2, 32, 32), np.float32), 1.0)
    assert not a.brain.any()
    assert a.table["midline_angle_deg"].isna().all()
    with pytest.raises(ValueError, match="pixel_mm"):
        compute_anatomy(np.zeros((2, 32, 32)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="expected \\(n_slices, rows, cols\\)"):
        compute_anatomy(np.zeros((32, 32)), 1.0)


def test_per_patient_angle_and_store_cache(tmp_path):
    imgs, pids = [], []
    for p, ang in (("sub-1", 8.0), ("sub-2", -6.0)):
        for k in range(3):
            imgs.append(phantom(64, ang, seed=k)[0])
            pids.append(p)
    images = np.stack(imgs)

    class Store:
        path = tmp_path / "store"
        table = pd.DataFrame(
            {
                "participant_id": pids,
                "slice": [0, 1, 2] * 2,
                "pixel_mm_row": 1.0,
                "pixel_mm_col": 1.0,
            }
        )

    Store.images = images
    Store.path.mkdir()
    flat = AnatomyConfig(volume=False)  # a bare stack of slices: the per-slice method
    a = anatomy_for_store(Store, flat, batch_size=2, progress=False)
    angles = a.table.groupby("participant_id")["midline_angle_deg"]
    assert (angles.max() - angles.min()).max() < 1e-6  # one angle per patient
    assert abs(angles.mean()["sub-1"] - 8) < 2 and abs(angles.mean()["sub-2"] + 6) < 2
    again = Anatomy.open(a.path)
    np.testing.assert_array_equal(np.asarray(again.labels), np.asarray(a.labels))
    direct = compute_anatomy(
        images, Store.table[["pixel_mm_row", "pixel_mm_col"]].to_numpy(), groups=pids
    )
    np.testing.assert_array_equal(direct.labels, np.asarray(a.labels))
    assert anatomy_for_store(Store, flat, progress=False).path == a.path  # cached


def test_ventricles_only_on_the_patients_ventricle_levels():
    # One image, twice: at 1 mm pixels and at 0.5 mm pixels (a quarter of the brain area in
    # mm^2, as a skull-base slice has). Per-slice crops give a patient's slices different
    # pixel sizes, so the levels are judged on mm^2, not on pixel counts.
    img, truth = phantom(128)
    images = np.stack([img, img])
    pmm = np.array([[1.0, 1.0], [0.5, 0.5]])
    alone = compute_anatomy(images, pmm)  # no patient ids: every slice is searched
    assert dice(alone.ventricles[1], truth["ventricles"]) > 0.85
    a = compute_anatomy(images, pmm, groups=["sub-1", "sub-1"])
    assert a.table["ventricle_level"].tolist() == [True, False]
    np.testing.assert_allclose(a.table["brain_area_rel"], [1.0, 0.25], rtol=1e-6)
    assert dice(a.ventricles[0], truth["ventricles"]) > 0.85
    assert not a.ventricles[1].any()
    assert a.table.loc[1, "ventricle_area_left_mm2"] == 0
    assert np.isnan(a.table.loc[1, "ventricle_asymmetry"])
    # Two patients: each slice is the largest of its own patient.
    b = compute_anatomy(images, pmm, groups=["sub-1", "sub-2"])
    assert b.table["ventricle_level"].all() and b.ventricles[1].any()
    off = compute_anatomy(
        images, pmm, groups=["sub-1", "sub-1"], config=AnatomyConfig(ventricle_min_rel_area=0)
    )
    assert off.ventricles[1].any()


def test_vertex_slice_keeps_both_hemispheres():
    # Near the vertex the fissure parts the hemispheres: two half-ellipses 8 px apart at
    # 0.5 mm pixels (4 mm, within the 8 mm join gap); a small blob far off is not brain.
    H = W = 128
    r, c = np.mgrid[:H, :W].astype(float)
    head = ((r - 63.5) / 45) ** 2 + ((c - 63.5) / 36) ** 2 <= 1
    img = np.full((H, W), 10.0)
    img[head & (np.abs(c - 63.5) > 4)] = 120.0
    img[(r - 10) ** 2 + (c - 118) ** 2 <= 9] = 120.0  # far from the brain, small
    img += np.random.default_rng(0).normal(0, 3, img.shape)
    img = ((img - img.mean()) / img.std()).astype(np.float32)
    b = brain_mask(img, pixel_mm=0.5)
    assert b[:, :60].sum() > 0.4 * b.sum() and b[:, 68:].sum() > 0.4 * b.sum()
    assert not b[5:16, 112:125].any()
    a = compute_anatomy(img[None], (0.5, 0.5))
    assert abs(a.table.loc[0, "midline_col_px"] - 63.5) < 1.5
    # At 2 mm pixels the same 8 px gap is 16 mm: two brains' worth apart, only one is kept.
    b2 = brain_mask(img, pixel_mm=2.0)
    assert min(b2[:, :60].sum(), b2[:, 68:].sum()) == 0


def test_large_bright_infarct_keeps_the_whole_brain():
    # Tissue spread over a range (rim 60 .. centre 120), an infarct at 255 over a quarter of
    # the brain: a two-class Otsu splits infarct from tissue and calls the infarct the brain.
    H = W = 96
    r, c = np.mgrid[:H, :W].astype(float)
    cy = cx = (H - 1) / 2
    rho = np.hypot((r - cy) / (0.47 * H), (c - cx) / (0.42 * W))
    brain = rho <= 1
    img = np.where(brain, 60 + 60 * (1 - rho), 0.0)
    les = brain & ((r - cy) ** 2 + (c - cx - 18) ** 2 <= 22**2) & (c > cx + 2)
    img[les] = 255.0
    img += np.random.default_rng(0).normal(0, 4, img.shape)
    a = compute_anatomy(((img - img.mean()) / img.std())[None].astype(np.float32), 1.0)
    assert dice(a.brain[0], brain) > 0.95
    assert dice(a.lesion[0], les) > 0.9
    assert (a.hemisphere[0][a.lesion[0]] == HEMI_LEFT).mean() > 0.95


def test_lesion_border_is_the_half_way_level():
    # A blurred disc: the half-way level between tissue and peak follows the disc's radius
    # whatever the lesion's brightness (a fixed z-threshold would grow with brightness).
    areas = []
    for peak in (220.0, 400.0):
        H = W = 128
        r, c = np.mgrid[:H, :W].astype(float)
        cy, cx = (H - 1) / 2, (W - 1) / 2
        img = np.full((H, W), 10.0)
        brain = ((r - cy) / (0.42 * H)) ** 2 + ((c - cx) / (0.34 * W)) ** 2 <= 1
        img[brain] = 120.0
        disc = ((r - cy) ** 2 + (c - cx - 20) ** 2 <= 8**2).astype(np.float32)
        soft = cv2.GaussianBlur(disc, (0, 0), 1.5)
        img = img + (peak - 120.0) * soft * brain
        img += np.random.default_rng(3).normal(0, 2, img.shape)
        a = compute_anatomy(((img - img.mean()) / img.std())[None].astype(np.float32), 1.0)
        areas.append(a.lesion[0].sum())
        assert dice(a.lesion[0], disc > 0) > 0.9
    assert abs(areas[0] - areas[1]) / disc.sum() < 0.1


def test_bias_field_alone_makes_no_lesion():
    img, truth = phantom(96, 4.0)
    H, W = img.shape
    ramp = 1.0 + 0.25 * (np.arange(W) - W / 2) / W  # one side 25 % brighter
    raw = (img - img.min()) * ramp[None, :]
    a = compute_anatomy(raw[None].astype(np.float32), 1.0)
    assert a.lesion[0].sum() == 0
    assert dice(a.ventricles[0], truth["ventricles"]) > 0.8


def test_csf_open_to_the_outside_is_not_ventricle():
    img, truth = phantom(96)
    # A dark cistern-like blob in the central region, joined to the outside by a channel.
    r, c = np.mgrid[:96, :96]
    cistern = ((r - 68) ** 2 + (c - 47.5) ** 2 <= 5**2) | ((np.abs(c - 47.5) <= 1) & (r >= 68))
    img = img.copy()
    img[cistern & truth["brain"]] = img.min() + 0.3
    a = compute_anatomy(img[None], 1.0)
    v = a.ventricles[0]
    assert not (v & cistern).any()
    assert dice(v, truth["ventricles"]) > 0.8


def test_midline_follows_the_fissure_not_only_the_outline():
    img, truth = phantom(128)
    # The outline is symmetric about the centre column; the fissure (a thin dark line in
    # front of and behind the ventricles) lies 3 px towards higher columns.
    img = img.copy()
    col = int(round((128 - 1) / 2 + 3))
    rows = np.r_[12:35, 90:116]
    img[rows, col] = img.min() + 0.2
    off = {}
    for refine in (False, True):
        cfg = AnatomyConfig(fissure_refine=refine)
        off[refine] = compute_anatomy(img[None], 1.0, config=cfg).table["midline_offset_px"][0]
    assert abs(off[True] - 3.0) < 1.0
    assert abs(off[False] - 3.0) > abs(off[True] - 3.0)


def test_cache_key_names_the_method_version(monkeypatch):
    import hypo.features.anatomy as anatomy

    key = AnatomyConfig().key()
    assert AnatomyConfig(lesion_z=3.5).key() != key
    monkeypatch.setattr(anatomy, "ANATOMY_VERSION", anatomy.ANATOMY_VERSION + 1)
    assert AnatomyConfig().key() != key


def test_fissure_point_is_the_middle_of_a_flat_valley_bottom():
    # Bright CSF clipped to one level (b0, T2, ADC) gives the fissure a flat bottom two
    # pixels wide, columns 60 and 61: its middle is 60.5, not its first column.
    from hypo.features.anatomy import _fissure_line

    r = np.ones((120, 120), np.float32)
    brain = np.zeros((120, 120), bool)
    brain[10:110, 20:100] = True
    r[~brain] = 0.0
    r[15:105, 60:62] = 0.0
    p0, p1 = _fissure_line(r, brain, (58.0, 0.0), (58.0, 119.0), 1.0, 1.0, AnatomyConfig())
    assert p0[0] == pytest.approx(60.5) and p1[0] == pytest.approx(60.5)
    # A one-pixel valley is found at its column.
    r[15:105, 61] = 1.0
    p0, p1 = _fissure_line(r, brain, (58.0, 0.0), (58.0, 119.0), 1.0, 1.0, AnatomyConfig())
    assert p0[0] == pytest.approx(60.0) and p1[0] == pytest.approx(60.0)
