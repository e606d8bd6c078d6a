"""Map features on constructed maps with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from hypo.features.anatomy import BRAIN, EDGE, LEFT, LESION, RIGHT, VENTRICLE, compute_anatomy
from hypo.features.maps import (
    FEATURE_DICTIONARY,
    control_maps,
    features_for_store,
    image_covariates,
    lesion_side,
    map_features,
)

H = W = 32


def labels_box(vent_width=4, lesion=(slice(10, 14), slice(22, 26))):
    """Square brain rows 4..27, cols 4..27; midline between cols 15 and 16 (16+ = patient's
    left); a 2-px edge band; ventricles at rows 12..19 around the midline; lesion on the left."""
    lab = np.zeros((H, W), np.uint8)
    lab[4:28, 4:28] = BRAIN
    lab[4:28, 4:16] |= RIGHT
    lab[4:28, 16:28] |= LEFT
    band = np.zeros((H, W), bool)
    band[4:28, 4:28] = True
    band[6:26, 6:26] = False
    lab[band] |= EDGE
    lab[12:20, 16 - vent_width : 16 + vent_width] |= VENTRICLE
    if lesion is not None:
        lab[lesion] |= LESION
    return lab


def test_all_mass_in_lesion():
    lab = labels_box()
    m = np.zeros((H, W), np.float32)
    m[10:14, 22:26] = 3.0
    f = map_features(m[None], lab[None]).iloc[0]
    assert f["relevance_mass_lesion"] == pytest.approx(1.0)
    assert f["pointing_game_hit"] == 1.0
    assert f["relevance_rank_accuracy"] == pytest.approx(1.0)
    assert f["asymmetry_index"] == pytest.approx(1.0)
    assert f["asymmetry_ipsi_contra"] == pytest.approx(1.0)  # lesion on the left
    # No mass outside the lesion: densities of non-lesion regions are NaN (0 / 0).
    assert np.isnan(f["ventricle_density_ratio"])
    # Top 5 % of 576 brain pixels = 29 pixels, all in the 16-pixel lesion: IoU 16/29.
    assert f["top_iou_lesion"] == pytest.approx(16 / 29)


def test_asymmetry_sign_and_mirror():
    lab = labels_box(lesion=None)
    m = np.zeros((H, W), np.float32)
    m[8:20, 18:26] = 1.0  # patient's left = high columns
    f = map_features(m[None], lab[None]).iloc[0]
    assert f["asymmetry_index"] == pytest.approx(1.0)
    mirrored = map_features(m[None, :, ::-1].copy(), lab[None]).iloc[0]
    assert mirrored["asymmetry_index"] == pytest.approx(-1.0)
    assert np.isnan(f["asymmetry_ipsi_contra"])  # no lesion, no side
    # A mixed map: 3 parts left, 1 part right -> (3 - 1) / 4.
    m2 = np.zeros((H, W), np.float32)
    m2[8:12, 18:22] = 3.0
    m2[8:12, 8:12] = 1.0
    assert map_features(m2[None], lab[None]).iloc[0]["asymmetry_index"] == pytest.approx(0.5)


def test_mirroring_slice_and_map_flips_the_sign():
    from tests.test_features_anatomy import phantom

    img, tr = phantom(96, 6.0, lesion=(40, 60, 6))
    m = tr["lesion"].astype(np.float32) + 0.1 * tr["brain"]
    imgs = np.stack([img, img[:, ::-1]])
    maps = np.stack([m, m[:, ::-1]])
    an = compute_anatomy(imgs, 1.0)
    f = map_features(maps, an.labels)
    assert f["asymmetry_index"][0] > 0.15
    assert f["asymmetry_index"][1] == pytest.approx(-f["asymmetry_index"][0], abs=0.03)
    assert f["asymmetry_ipsi_contra"].notna().all()  # the image-derived lesion has a side
    assert f["asymmetry_ipsi_contra"][1] == pytest.approx(f["asymmetry_ipsi_contra"][0], abs=0.03)


def test_ipsi_contra_uses_the_given_side():
    lab = labels_box()
    m = np.zeros((H, W), np.float32)
    m[8:20, 6:14] = 1.0  # all on the right
    f = map_features(np.stack([m, m]), np.stack([lab, lab]), side=np.array(["right", "left"]))
    assert f["asymmetry_ipsi_contra"].tolist() == pytest.approx([1.0, -1.0])


def test_uniform_map_restates_anatomy():
    lab = labels_box()
    f = map_features(np.ones((1, H, W), np.float32), lab[None]).iloc[0]
    assert f["ventricle_density_ratio"] == pytest.approx(1.0)
    assert f["edge_density_ratio"] == pytest.approx(1.0)
    assert f["outside_density_ratio"] == pytest.approx(1.0)
    assert f["entropy_norm"] == pytest.approx(1.0)
    assert f["top_share"] == pytest.approx(29 / 576, rel=1e-3)  # binned to 1/4096 of the max
    assert f["asymmetry_index"] == pytest.approx(0.0)
    assert f["ventricle_mass_fraction"] == pytest.approx(64 / 576)


def test_density_does_not_fall_with_a_compressed_ventricle():
    wide, narrow = labels_box(vent_width=4), labels_box(vent_width=2)
    m = np.ones((H, W), np.float32)
    m[10:22, 10:22] = 4.0  # the map is hot around the ventricles, same in both
    f = map_features(np.stack([m, m]), np.stack([wide, narrow]))
    assert f["ventricle_density_ratio"][0] == pytest.approx(
        f["ventricle_density_ratio"][1], rel=0.1
    )
    assert f["ventricle_mass_fraction"][1] < 0.6 * f["ventricle_mass_fraction"][0]


def test_lesion_pixels_are_excluded_from_edge_density():
    lab = labels_box(lesion=(slice(4, 10), slice(20, 28)))  # a cortical lesion in the band
    m = np.ones((H, W), np.float32)
    m[lab & LESION > 0] = 50.0
    f = map_features(m[None], lab[None]).iloc[0]
    assert f["edge_density_ratio"] == pytest.approx(1.0)
    plain = map_features(np.ones((1, H, W), np.float32), lab[None]).iloc[0]
    # The secondary mass fraction does see the lesion.
    assert f["edge_mass_fraction"] > 1.5 * plain["edge_mass_fraction"]


def test_scale_invariance_and_external_lesion():
    lab = labels_box(lesion=None)
    rng = np.random.default_rng(0)
    m = rng.random((2, H, W)).astype(np.float32)
    les = np.zeros((2, H, W), np.uint8)
    les[:, 20:24, 8:12] = 1  # manual mask on the right
    f1 = map_features(m, np.stack([lab, lab]), lesion=les)
    f2 = map_features(7.0 * m, np.stack([lab, lab]), lesion=les)
    cols = [c for c in f1.columns if not c.startswith("map_")]
    pd.testing.assert_frame_equal(f1[cols], f2[cols], rtol=1e-5)
    assert np.isfinite(f1["relevance_mass_lesion"]).all()


def test_zero_maps_give_documented_values_without_warnings():
    lab = labels_box()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = map_features(np.zeros((3, H, W), np.float32), np.stack([lab] * 3))
    assert (f["map_mass_brain"] == 0).all()
    for c in (
        "relevance_mass_lesion",
        "pointing_game_hit",
        "asymmetry_index",
        "entropy_norm",
        "ventricle_density_ratio",
        "top_share",
        "outside_mass_fraction",
    ):
        assert f[c].isna().all(), c


def test_bad_inputs():
    lab = labels_box()
    with pytest.raises(ValueError, match="shape"):
        map_features(np.ones((1, 16, 16)), lab[None])
    with pytest.raises(ValueError, match="negative"):
        map_features(-np.ones((1, H, W)), lab[None])
    with pytest.raises(ValueError, match="no brain"):
        map_features(np.ones((1, H, W)), np.zeros((1, H, W), np.uint8))
    f = map_features(np.ones((1, H, W)), np.zeros((1, H, W), np.uint8), on_empty_brain="nan")
    assert np.isnan(f["asymmetry_index"][0])


def test_lesion_side_rule():
    assert lesion_side([10, 0, 5, 0, 95], [0, 10, 5, 0, 5]).tolist() == [
        "left",
        "right",
        "bilateral",
        "none",
        "left",
    ]


def test_dictionary_covers_every_column():
    lab = labels_box()
    f = map_features(np.ones((1, H, W)), lab[None])
    cov = image_covariates(
        lab[None],
        compute_anatomy(np.zeros((1, H, W)), 1.0).table,
        np.array([[1.0, 1.0]]),
        5.0,
    )
    names = {c for c, _, _ in FEATURE_DICTIONARY}
    assert set(f.columns) <= names
    assert set(cov.columns) <= names
    assert cov["lesion_volume_ml"][0] == pytest.approx(16 * 1.0 * 5.0 / 1000)


def test_features_for_store_with_controls(tmp_path):
    from tests.test_features_anatomy import phantom

    imgs, les, pids = [], [], []
    for p, col in (("sub-1", 62), ("sub-2", 34)):  # lesion on the patient's left, then right
        for k in range(2):
            img, tr = phantom(96, 0.0, lesion=(45, col, 5), seed=k)
            imgs.append(img)
            les.append(tr["lesion"].astype(np.uint8))
            pids.append(p)
    from hypo.features.anatomy import AnatomyConfig, anatomy_for_store

    class Store:
        path = tmp_path
        images = np.stack(imgs)
        masks = {"lesion": np.stack(les)}
        table = pd.DataFrame(
            {
                "participant_id": pids,
                "slice": [3, 4, 3, 4],
                "pixel_mm_row": 2.0,
                "pixel_mm_col": 2.0,
                "slice_thickness_mm": 5.0,
            }
        )

    # A bare stack of phantom slices has no volumes: the per-slice method.
    an = anatomy_for_store(Store, AnatomyConfig(volume=False), progress=False)
    f = features_for_store(Store, an, progress=False)
    assert len(f) == 8 and set(f["map_source"]) == {"control_uniform", "control_intensity"}
    u = f[f["map_source"] == "control_uniform"].set_index("participant_id")
    assert (u["lesion_source"] == "mask").all()
    assert (u.loc["sub-1", "lesion_side"] == "left").all()
    assert (u.loc["sub-2", "lesion_side"] == "right").all()
    # The intensity control "finds" the bright lesion; the uniform control does not.
    i = f[f["map_source"] == "control_intensity"]
    assert (i["relevance_mass_lesion"].to_numpy() > 2 * u["relevance_mass_lesion"].to_numpy()).all()
    assert np.allclose(u["ventricle_density_ratio"], 1.0)
    np.testing.assert_allclose(control_maps(Store.images, "control_uniform"), 1.0)
    # The controls' rows cached for the next model of the store: written, then read back
    # into the same table to the bit.
    cache = tmp_path / "controls.parquet"
    written = features_for_store(Store, an, progress=False, control_cache=cache)
    assert cache.is_file()
    read = features_for_store(Store, an, progress=False, control_cache=cache)
    pd.testing.assert_frame_equal(written, f, check_exact=True)
    pd.testing.assert_frame_equal(read, f, check_exact=True)


def test_features_for_store_reads_cam_chunks_and_records_cell_size(tmp_path):
    from tests.test_features_anatomy import phantom

    img, tr = phantom(64, 0.0, lesion=(30, 42, 4))
    images = np.stack([img, img[:, ::-1]])

    class Store:
        path = tmp_path
        masks = {}
        table = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "slice": [0, 0],
                              "pixel_mm_row": 1.5, "pixel_mm_col": 1.5,
                              "slice_thickness_mm": 5.0})  # fmt: skip

    Store.images = images
    raw = np.zeros((2, 2, 4, 4), np.float32)
    raw[0, 1, 1:3, 2:4] = 1.0  # class 1 of slice 0 lights the patient's left
    raw[1, 1, 1:3, 0:2] = 1.0  # ... and of the mirrored slice the right

    class Cams:  # the CamStore interface features_for_store uses
        methods, classes, layer = ("gradcam",), (0, 1), "block5"
        input_shape, n_chunks, manifest, path = (64, 64, 1), 1, {}, tmp_path

        raw_shape = raw.shape[2:]

        def iter_chunks(self, method, resized=False):
            big = np.repeat(np.repeat(raw, 16, axis=2), 16, axis=3)
            yield 0, 2, big

    from hypo.features.anatomy import compute_anatomy

    an = compute_anatomy(images, 1.5)
    f = features_for_store(Store, an, [Cams()], controls=(), progress=False)
    cam = f[(f.map_source == "cam") & (f.class_index == 1)].set_index("participant_id")
    assert cam.loc["sub-1", "asymmetry_index"] > 0.9 and cam.loc["sub-2", "asymmetry_index"] < -0.9
    assert np.allclose(cam["cell_mm"], 16 * 1.5)
    zero = f[(f.map_source == "cam") & (f.class_index == 0)]
    assert zero["asymmetry_index"].isna().all() and (zero["map_mass_brain"] == 0).all()
    both = features_for_store(Store, an, [("control_random_model", Cams())], progress=False)
    assert set(both["map_source"]) == {
        "control_random_model",
        "control_uniform",
        "control_intensity",
    }
