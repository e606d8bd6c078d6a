"""hypo.cohort.load / Cohort / Volume: orientation, windowing, masks, tables, hashing."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import hypo.cohort
from hypo.cohort import CohortError, layout
from hypo.cohort.io import WindowConfig, _otsu_threshold, window_intensities
from hypo.cohort.orientation import axial_slices
from tests.helpers import (
    TINY_SHAPE,
    canonical_affine,
    make_tiny_cohort,
    reorient,
    tiny_volume,
    write_nifti,
)

ORDERS = ["LPS", "PIR", "ASL", "SRA"]

pytestmark = pytest.mark.usefixtures("hypo_cache")


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, hypo.cohort; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'h5py')"
        " or m.startswith('hypo.cohort.synthetic')]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("axcodes", ORDERS)
def test_any_storage_order_gives_same_canonical_volume(tmp_path, axcodes):
    ref = hypo.cohort.load(make_tiny_cohort(tmp_path, 1, name="ras"))
    other = hypo.cohort.load(make_tiny_cohort(tmp_path, 1, name="other", axcodes=axcodes))
    a, b = ref.dwi("sub-001"), other.dwi("sub-001")
    assert b.native_axcodes == tuple(axcodes)
    stored, _ = reorient(np.zeros(TINY_SHAPE), canonical_affine(), axcodes)
    assert b.native_shape == stored.shape and a.native_shape == TINY_SHAPE
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_allclose(a.zooms, b.zooms)
    np.testing.assert_array_equal(axial_slices(a.data), axial_slices(b.data))
    np.testing.assert_array_equal(ref.lesion_mask("sub-001"), other.lesion_mask("sub-001"))


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PIR"])
def test_left_stays_left(tmp_path, axcodes):
    """A marker in the patient's left hemisphere (world x < 0) lands right of centre."""
    shape = (30, 26, 6)
    data, _ = tiny_volume(shape, lesion=False)
    affine = canonical_affine(shape, (2.0, 2.0, 5.0))
    stored, stored_aff = reorient(data, affine, axcodes)
    ijk = np.indices(stored.shape).reshape(3, -1)
    world = (stored_aff[:3, :3] @ ijk + stored_aff[:3, 3:4]).reshape(3, *stored.shape)
    marker = (world[0] < -12) & (world[0] > -20) & (np.abs(world[1]) < 6)
    stored = stored.copy()
    stored[marker] = 1000.0
    root = make_tiny_cohort(tmp_path, 1)
    write_nifti(layout.dwi_path(root, "sub-001"), stored, stored_aff)
    (root / "derivatives").rename(tmp_path / "unused_masks")  # masks no longer match
    vol = hypo.cohort.load(root).dwi("sub-001")
    sl = axial_slices(vol.data)[shape[2] // 2]
    rows, cols = np.nonzero(sl == sl.max())
    assert len(cols) > 0
    assert np.all(cols > sl.shape[1] / 2), "patient's left must be on the right of the image"


def test_float_and_int16_are_windowed_uint8_is_not(tmp_path):
    f = hypo.cohort.load(make_tiny_cohort(tmp_path, 1, name="f", dtype="float32")).dwi("sub-001")
    i = hypo.cohort.load(make_tiny_cohort(tmp_path, 1, name="i", dtype="int16")).dwi("sub-001")
    u = hypo.cohort.load(make_tiny_cohort(tmp_path, 1, name="u", dtype="uint8")).dwi("sub-001")
    for v in (f, i, u):
        assert v.data.dtype == np.float32
        assert v.data.min() >= 0 and v.data.max() <= 255
    assert f.window is not None and i.window is not None and u.window is None
    raw = nib.load(make_tiny_cohort(tmp_path, 1, name="raw") / "sub-001/dwi/sub-001_dwi.nii.gz")
    nz = np.asanyarray(raw.dataobj)[np.asanyarray(raw.dataobj) != 0]
    head = nz[nz > _otsu_threshold(nz)]
    np.testing.assert_allclose(f.window, np.percentile(head, [0.5, 99.8]), rtol=1e-6)
    # int16 stores 10x the float values: same window scaled, same grey values up to rounding.
    np.testing.assert_allclose(np.asarray(i.window) / 10, f.window, rtol=0.02)
    assert np.abs(i.data - f.data).max() < 2.0
    # uint8 values are passed through untouched.
    u_raw = nib.load(
        make_tiny_cohort(tmp_path, 1, name="u2", dtype="uint8") / layout.dwi_path(".", "sub-001")
    )
    np.testing.assert_array_equal(u.data, np.asanyarray(u_raw.dataobj).astype(np.float32))


def test_window_config_changes_window_and_clips():
    rng = np.random.default_rng(1)
    data = np.zeros((10, 10, 4), np.float32)
    data[2:8, 2:8] = rng.uniform(50, 150, (6, 6, 4))
    grey, (lo, hi) = window_intensities(data, WindowConfig(10, 90, foreground="nonzero"))
    nz = data[data != 0]
    assert lo == pytest.approx(np.percentile(nz, 10)) and hi == pytest.approx(np.percentile(nz, 90))
    assert grey[data > hi].min() == 255 and grey[(data < lo) & (data != 0)].max() == 0
    with pytest.raises(ValueError, match="percentiles"):
        WindowConfig(99, 1)
    with pytest.raises(ValueError, match="foreground"):
        WindowConfig(foreground="brain")


def test_noisy_background_does_not_clip_a_small_infarct_into_normal_tissue():
    # Scanner noise makes the background non-zero: percentiles of all non-zero voxels then
    # clip bright normal tissue and a small infarct alike; the head window keeps them apart.
    rng = np.random.default_rng(2)
    data = rng.uniform(1, 10, (60, 60, 20)).astype(np.float32)
    data[15:45, 15:45, 5:15] = rng.normal(100, 8, (30, 30, 10))
    data[28:31, 28:31, 9:11] = 200.0  # 18 voxels, 0.2 % of the head
    lesion = data == 200.0
    brain = (data > 20) & ~lesion
    head_grey, _ = window_intensities(data, WindowConfig())
    nz_grey, _ = window_intensities(data, WindowConfig(0.5, 99.5, foreground="nonzero"))
    # The infarct is at the top of the scale either way; what differs is how much normal
    # brain is clipped to the same value.
    assert head_grey[lesion].min() == 255 and nz_grey[lesion].min() == 255
    assert (head_grey[brain] == 255).mean() < 0.005
    assert (nz_grey[brain] == 255).mean() > 0.02


def test_mask_and_labels_derived_from_masks(tmp_path):
    cohort = hypo.cohort.load(make_tiny_cohort(tmp_path, 2, axcodes="PIR"), min_lesion_area_mm2=0.0)
    _, mask = tiny_volume(TINY_SHAPE, seed=0, lesion=True)
    got = cohort.lesion_mask("sub-001")
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    np.testing.assert_array_equal(got, mask)
    labels = cohort.slice_labels()
    assert list(labels.columns[:5]) == [
        "participant_id",
        "slice",
        "lesion_visible",
        "lesion_area_mm2",
        "label_source",
    ]
    assert (labels["label_source"] == "mask").all() and labels["lesion_visible"].dtype == bool
    one = labels[labels.participant_id == "sub-001"]
    np.testing.assert_allclose(one["lesion_area_mm2"], mask.sum(axis=(0, 1)) * 2.0 * 2.0)
    np.testing.assert_array_equal(one["lesion_visible"], mask.sum(axis=(0, 1)) > 0)
    assert not labels[labels.participant_id == "sub-002"]["lesion_visible"].any()


def test_min_lesion_area_threshold(tmp_path):
    root = make_tiny_cohort(tmp_path, 1)
    areas = hypo.cohort.load(root, min_lesion_area_mm2=0).slice_labels()["lesion_area_mm2"]
    cut = float(np.unique(areas[areas > 0]).min()) + 1.0
    strict = hypo.cohort.load(root, min_lesion_area_mm2=cut).slice_labels()
    np.testing.assert_array_equal(strict["lesion_visible"], strict["lesion_area_mm2"] >= cut)
    assert strict["lesion_visible"].sum() < (areas > 0).sum()


def test_reader_labels_win_over_masks(tmp_path):
    root = make_tiny_cohort(tmp_path, 2, slice_labels=True)
    table = pd.read_csv(root / layout.SLICE_LABELS, sep="\t")
    table.loc[0, "lesion_visible"] = 1 - table.loc[0, "lesion_visible"]  # reader disagrees
    table.to_csv(root / layout.SLICE_LABELS, sep="\t", index=False)
    labels = hypo.cohort.load(root).slice_labels()
    assert (labels["label_source"] == "reader").all()
    assert labels.loc[0, "lesion_visible"] == bool(table.loc[0, "lesion_visible"])
    assert labels["lesion_area_mm2"].notna().all()


def test_no_masks_no_labels(tmp_path):
    root = make_tiny_cohort(tmp_path, 2, masks=False)
    cohort = hypo.cohort.load(root)
    assert cohort.lesion_mask("sub-001") is None and not cohort.has_lesion_masks
    labels = cohort.slice_labels()
    assert len(labels) == 2 * TINY_SHAPE[2]
    assert (labels["label_source"] == "none").all() and labels["lesion_visible"].isna().all()
    assert labels["lesion_area_mm2"].isna().all()


def test_participants_typed(tiny_cohort):
    p = hypo.cohort.load(tiny_cohort).participants
    assert p.index.name == "participant_id" and list(p.index) == ["sub-001", "sub-002", "sub-003"]
    assert pd.api.types.is_numeric_dtype(p["mrs_3months"]) and np.isnan(p["mrs_3months"].iloc[-1])
    assert pd.api.types.is_numeric_dtype(p["age"]) and p["sex"].dtype == object
    assert set(p["group"]) == {"stroke", "TIA"}


def test_group_spelling_is_normalised(tiny_cohort):
    t = pd.read_csv(tiny_cohort / layout.PARTICIPANTS, sep="\t")
    t["group"] = t["group"].str.upper()
    t.to_csv(tiny_cohort / layout.PARTICIPANTS, sep="\t", index=False)
    assert set(hypo.cohort.load(tiny_cohort).participants["group"]) == {"stroke", "TIA"}


def test_synthetic_extras(tmp_path):
    cohort = hypo.cohort.load(make_tiny_cohort(tmp_path, 2, synthetic=True, axcodes="LPS"))
    assert cohort.is_synthetic and cohort.generator()["n"] == 2
    assert list(cohort.truth().index) == ["sub-001", "sub-002"]
    np.testing.assert_array_equal(
        cohort.truth_mask("sub-001", "lesion"), cohort.lesion_mask("sub-001")
    )
    assert cohort.truth_mask("sub-001", "ventricles") is None
    plain = hypo.cohort.load(make_tiny_cohort(tmp_path, 1, name="plain"))
    assert not plain.is_synthetic and plain.generator() is None and plain.truth() is None


def test_content_hash_is_stable_and_sensitive(tmp_path):
    a = make_tiny_cohort(tmp_path, 2, name="same")
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    b = shutil.copytree(a, copy / "same")
    ca, cb = hypo.cohort.load(a), hypo.cohort.load(b)
    assert ca.content_hash() == cb.content_hash() and ca.cohort_id == cb.cohort_id
    assert ca.cohort_id.startswith("same-")
    data, _ = tiny_volume(seed=99)
    write_nifti(layout.dwi_path(b, "sub-002"), data, canonical_affine())
    assert hypo.cohort.load(b).content_hash() != ca.content_hash()
    t = pd.read_csv(a / layout.PARTICIPANTS, sep="\t")
    t.loc[0, "age"] = 99
    t.to_csv(a / layout.PARTICIPANTS, sep="\t", index=False, na_rep="n/a")
    assert ca.content_hash() != hypo.cohort.load(copy / "same").content_hash()


def test_unknown_participant_is_a_clear_key_error(tiny_cohort):
    cohort = hypo.cohort.load(tiny_cohort)
    with pytest.raises(KeyError, match="sub-999"):
        cohort.dwi("sub-999")


def test_load_raises_with_all_problems_or_skips(tiny_cohort):
    write_nifti(
        layout.dwi_path(tiny_cohort, "sub-002"), np.full((4, 4, 4), np.nan, np.float32), np.eye(4)
    )
    (layout.dwi_path(tiny_cohort, "sub-003")).unlink()
    with pytest.raises(CohortError) as err:
        hypo.cohort.load(tiny_cohort)
    msg = str(err.value)
    assert "sub-002" in msg and "sub-003" in msg and len(err.value.problems) >= 2
    with pytest.warns(UserWarning, match="skipping sub-00[23]"):
        cohort = hypo.cohort.load(tiny_cohort, skip_invalid=True)
    assert cohort.participant_ids() == ["sub-001"]
    assert {p.participant_id for p in cohort.skipped} == {"sub-002", "sub-003"}
    assert all(str(p).startswith("sub-00") for p in cohort.skipped)


def test_cohort_level_problem_raises_even_when_skipping(tiny_cohort):
    t = pd.read_csv(tiny_cohort / layout.PARTICIPANTS, sep="\t").drop(columns="group")
    t.to_csv(tiny_cohort / layout.PARTICIPANTS, sep="\t", index=False)
    with pytest.raises(CohortError, match="group"):
        hypo.cohort.load(tiny_cohort, skip_invalid=True)


def test_four_d_single_volume_is_squeezed(tiny_cohort):
    img = nib.load(layout.dwi_path(tiny_cohort, "sub-001"))
    data = np.asanyarray(img.dataobj)[..., None]
    write_nifti(layout.dwi_path(tiny_cohort, "sub-001"), data, img.affine)
    vol = hypo.cohort.load(tiny_cohort).dwi("sub-001")
    assert vol.data.shape == TINY_SHAPE


def test_clean_validation_is_remembered_until_inputs_change(tiny_cohort, monkeypatch):
    import hypo.cohort.loading as loading

    calls = []
    real = loading.validate
    monkeypatch.setattr(loading, "validate", lambda *a, **k: calls.append(1) or real(*a, **k))
    hypo.cohort.load(tiny_cohort)
    hypo.cohort.load(tiny_cohort)
    assert len(calls) == 1
    write_nifti(
        layout.dwi_path(tiny_cohort, "sub-002"),
        np.zeros(TINY_SHAPE, np.float32),
        canonical_affine(),
    )
    with pytest.raises(CohortError, match="empty"):
        hypo.cohort.load(tiny_cohort)
    assert len(calls) == 2


@pytest.mark.parametrize("axcodes", ORDERS)
def test_header_only_shape_and_zooms_match_canonical(tmp_path, axcodes):
    from hypo.cohort.io import canonical_zooms, read_image, to_canonical_shape

    zooms = (1.5, 2.0, 5.0)
    root = make_tiny_cohort(tmp_path, 1, axcodes=axcodes, zooms=zooms)
    img = read_image(layout.dwi_path(root, "sub-001"))
    vol = hypo.cohort.load(root).dwi("sub-001")
    assert to_canonical_shape(img) == vol.data.shape == TINY_SHAPE
    np.testing.assert_allclose(canonical_zooms(img), vol.zooms)
    np.testing.assert_allclose(vol.zooms, zooms)


def test_skipping_every_patient_raises(tiny_cohort):
    for pid in ("sub-001", "sub-002", "sub-003"):
        layout.dwi_path(tiny_cohort, pid).unlink()
    with pytest.raises(CohortError, match="every patient"), pytest.warns(UserWarning):
        hypo.cohort.load(tiny_cohort, skip_invalid=True)


def test_truncated_truth_mask_read_names_the_file(tmp_path):
    root = make_tiny_cohort(tmp_path, 1, synthetic=True)
    path = layout.truth_mask_path(root, "sub-001", "brain")
    hypo.cohort.load(root)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    cohort = hypo.cohort.load(root)  # truth masks get header checks only
    with pytest.raises(CohortError, match="label-brain_mask.nii.gz: voxels cannot be read"):
        cohort.truth_mask("sub-001", "brain")
