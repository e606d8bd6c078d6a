"""Preprocessing: black slices, the paper's crop box, mask alignment, inverse transform, store."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypo.cohort.orientation import axial_slices, slices_to_volume
from hypo.preprocess import (
    PreprocessConfig,
    SliceStore,
    SliceTransform,
    build_slice_store,
    crop_box,
    is_black,
    preprocess_volume,
)


def _ellipse_slice(rows=120, cols=100, center=(60, 45), axes=(35, 25), value=200.0):
    # Under 30 % of the field is bright, so the 70th percentile sits in the background.
    r, c = np.mgrid[:rows, :cols]
    inside = ((r - center[0]) / axes[0]) ** 2 + ((c - center[1]) / axes[1]) ** 2 <= 1
    img = np.zeros((rows, cols), np.float32)
    img[inside] = value
    return img, inside


def test_black_slice_rule():
    assert is_black(np.zeros((20, 20)))
    assert is_black(np.full((20, 20), 5.0))  # p99 < 10
    img, _ = _ellipse_slice()
    assert not is_black(img)


def test_crop_box_is_the_bright_object_box():
    img, inside = _ellipse_slice()
    r0, r1, c0, c1 = crop_box(img)
    rr, cc = np.nonzero(inside)
    assert (r0, r1, c0, c1) == (rr.min(), rr.max() + 1, cc.min(), cc.max() + 1)


def test_crop_box_spans_all_contours_not_the_largest():
    img, _ = _ellipse_slice(center=(60, 40), axes=(30, 20))
    img[5:9, 90:95] = 255.0  # a small bright blob far away: the paper's box includes it
    r0, r1, c0, c1 = crop_box(img)
    assert r0 == 5 and c1 == 95


def test_mask_goes_through_identical_geometry():
    img, inside = _ellipse_slice()
    lesion = np.zeros_like(img, dtype=np.uint8)
    lesion[50:60, 30:40] = 1
    img[lesion == 1] = 250.0
    cfg = PreprocessConfig(size=64)
    images, masks, kept, transforms = preprocess_volume(
        img[None], cfg, {"lesion": lesion[None], "brain": inside[None].astype(np.uint8)}
    )
    assert kept == [0] and images.shape == (1, 64, 64)
    t = transforms[0]
    # The lesion mask lands where the bright square landed in the image.
    bright = images[0] > np.percentile(images[0], 97)
    m = masks["lesion"][0].astype(bool)
    assert m.sum() > 0
    assert (bright & m).sum() / m.sum() > 0.8
    # The brain mask fills the crop box edge to edge (the crop box is the brain's box).
    brain = masks["brain"][0]
    assert brain[32, :].any() and brain[:, 32].any()
    cols = np.flatnonzero(brain.any(axis=0))
    assert cols.min() <= 1 and cols.max() >= 62  # the ellipse's tips are a pixel wide
    # Inverse of a forward-transformed mask is the mask, up to resampling on the border.
    back = t.inverse(masks["lesion"][0].astype(np.float32), "nearest")
    assert back.shape == lesion.shape
    overlap = ((back > 0.5) & (lesion == 1)).sum() / lesion.sum()
    assert overlap > 0.75  # two nearest-neighbour resamplings of a 10x10 square
    np.testing.assert_allclose(
        np.argwhere(back > 0.5).mean(axis=0), np.argwhere(lesion == 1).mean(axis=0), atol=1.0
    )


def test_enlarged_mask_is_centred_on_its_image():
    """An upsampled mask sits where its image sits (INTER_NEAREST would shift it ~0.5 px
    towards higher rows and columns)."""
    img, inside = _ellipse_slice(rows=60, cols=50, center=(30, 22), axes=(18, 13))
    lesion = np.zeros_like(img, dtype=np.uint8)
    lesion[24:31, 15:22] = 1
    img[lesion == 1] = 250.0
    images, masks, _, _ = preprocess_volume(
        img[None], PreprocessConfig(size=192), {"lesion": lesion[None]}
    )
    import cv2

    # The image's bright square: the largest component above the midpoint of the tissue
    # and lesion levels (bicubic ringing leaves small bright specks on the brain's edge).
    m = masks["lesion"][0] > 0
    mid = (np.median(images[0][~m]) + np.median(images[0][m])) / 2
    _, lab, stats, _ = cv2.connectedComponentsWithStats((images[0] > mid).astype(np.uint8))
    bright = lab == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])
    shift = np.argwhere(m).mean(0) - np.argwhere(bright).mean(0)
    assert np.abs(shift).max() < 0.3, shift


def test_inverse_round_trip_of_smooth_map():
    t = SliceTransform(10, 90, 20, 80, 100, 100, 48, 48)
    r, c = np.mgrid[:100, :100]
    native = np.exp(-((r - 50) ** 2 + (c - 50) ** 2) / 400.0).astype(np.float32)
    back = t.inverse(t.forward(native, "linear"), "linear")
    box = (slice(12, 88), slice(22, 78))
    assert np.abs(back[box] - native[box]).max() < 0.02
    assert back[:10].max() == 0 and back[:, :20].max() == 0


def test_normalisations():
    img, _ = _ellipse_slice()
    z, *_ = preprocess_volume(img[None], PreprocessConfig(size=32))
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    tf, *_ = preprocess_volume(img[None], PreprocessConfig(size=32, normalization="tf"))
    assert tf.min() >= -1 - 1e-6 and tf.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="normalization"):
        PreprocessConfig(normalization="minmax")


class _FakeVolume:
    def __init__(self, data):
        self.data = data
        self.zooms = np.array([1.5, 1.2, 5.0])


class _FakeCohort:
    """The ``hypo.cohort.Cohort`` contract, in memory."""

    def __init__(self, n=3, seed=0):
        rng = np.random.default_rng(seed)
        self.cohort_id = "fake"
        self.root = Path("/nonexistent")
        self.is_synthetic = True
        self._vols, self._lesions = {}, {}
        rows = []
        for i in range(n):
            pid = f"sub-{i + 1:03d}"
            sl = np.zeros((6, 80, 70), np.float32)
            for k in range(1, 5):  # slices 0 and 5 stay black
                s, _ = _ellipse_slice(80, 70, (40 + i, 35), (30 - k, 25), 150 + 10 * k)
                sl[k] = s + rng.uniform(0, 3, s.shape)
            les = np.zeros_like(sl, np.uint8)
            les[2:4, 30:40, 20:30] = 1
            self._vols[pid] = slices_to_volume(sl)
            self._lesions[pid] = slices_to_volume(les)
            rows.append({"participant_id": pid, "group": "stroke", "mrs_3months": i})
        self.participants = pd.DataFrame(rows).set_index("participant_id")

    def participant_ids(self):
        return list(self.participants.index)

    def dwi(self, pid):
        return _FakeVolume(self._vols[pid])

    def lesion_mask(self, pid):
        return self._lesions[pid]

    def truth_mask(self, pid, label):
        return self._lesions[pid] if label == "lesion" else None

    def slice_labels(self):
        rows = []
        for pid in self.participant_ids():
            area = axial_slices(self._lesions[pid]).sum(axis=(1, 2)) * 1.8
            for k, a in enumerate(area):
                rows.append(
                    {
                        "participant_id": pid,
                        "slice": k,
                        "lesion_visible": int(a >= 10),
                        "lesion_area_mm2": a,
                        "label_source": "mask",
                    }
                )
        return pd.DataFrame(rows)

    def generator(self):
        return {"hash": "abc"}

    def content_hash(self):
        return "0123456789abcdef"


def test_store_build_table_and_cache(tmp_path):
    cohort = _FakeCohort()
    store = build_slice_store(
        cohort, PreprocessConfig(size=32), cache_root=tmp_path, progress=False
    )
    assert len(store) == 12  # 4 non-black slices x 3 patients
    assert store.images.shape == (12, 32, 32) and store.images.dtype == np.float32
    assert set(store.masks) == {"lesion", "truth_lesion"}
    t = store.table
    assert list(t["slice"][:4]) == [1, 2, 3, 4]
    assert t["lesion_visible"].tolist()[:4] == [0, 1, 1, 0]
    # Pixel size after resize: crop height in native pixels x 1.2 mm / 32.
    row0 = t.iloc[0]
    expected = (row0.crop_r1 - row0.crop_r0) * 1.2 / 32
    assert row0.pixel_mm_row == pytest.approx(expected)
    # Lesion slices carry the lesion mask.
    assert store.masks["lesion"][t["lesion_visible"].to_numpy() == 1].sum() > 0
    # Second call reuses the cache (same folder, memory-mapped).
    again = build_slice_store(cohort, PreprocessConfig(size=32), cache_root=tmp_path)
    assert again.path == store.path
    assert isinstance(again.images, np.memmap)
    reopened = SliceStore.open(store.path)
    np.testing.assert_array_equal(np.asarray(reopened.images), np.asarray(store.images))


def _build_in_process(root):
    import os

    build_slice_store(_FakeCohort(), PreprocessConfig(size=32), cache_root=root, progress=False)
    # The store is published (atomic rename) once build_slice_store returns. Skip the
    # interpreter's teardown: in one CI run a native thread pool aborted a spawned child at
    # exit ("terminate called without an active exception", exit -6) after its work was done,
    # which says nothing about concurrent building.
    os._exit(0)


def test_two_processes_building_the_same_store(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_build_in_process, args=(tmp_path,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stores = [d for d in tmp_path.iterdir() if not d.name.startswith(".")]
    assert len(stores) == 1
    store = SliceStore.open(stores[0])
    assert len(store) == 12
    assert not [d for d in tmp_path.iterdir() if d.name.startswith(".")]
