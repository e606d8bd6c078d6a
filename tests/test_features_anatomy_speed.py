"""The anatomy's faster paths give the same numbers as the slower ones they replaced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

import hypo.cohort as hc
from hypo.features.anatomy import _near
from hypo.features.brain3d import fast_median


@pytest.mark.parametrize("pr, pc", [(1.0, 1.0), (0.94, 1.31), (1.7, 0.63)])
@pytest.mark.parametrize("radius, strict", [(5.0, False), (8.0, True), (1.5, True)])
def test_near_is_the_distance_transform_thresholded(pr, pc, radius, strict):
    rng = np.random.default_rng(0)
    for _ in range(5):
        blob = ndimage.gaussian_filter(rng.random((90, 110)), 4) > 0.5
        depth = ndimage.distance_transform_edt(blob, sampling=(pr, pc))
        want = (depth < radius) if strict else (depth <= radius)
        assert np.array_equal(_near(~blob, radius, pr, pc, strict=strict), want)


def _sample(rng, n: int, k: int) -> np.ndarray:
    """The k-th kind (cyclic) of test vector: float32 normal, float32 with ties, or a
    sorted heavy-tailed float64."""
    if k % 3 == 0:
        return rng.normal(size=n).astype(np.float32)
    if k % 3 == 1:
        return rng.integers(0, 30, n).astype(np.float32)
    return np.sort(np.abs(rng.standard_cauchy(n)))


def test_fast_median_is_np_median():
    rng = np.random.default_rng(1)
    for k in range(200):
        v = _sample(rng, int(rng.integers(1, 40000)), k)
        assert fast_median(v) == float(np.median(v))
    v = rng.normal(size=10000)
    v[17] = np.nan
    assert np.isnan(fast_median(v))


def test_parallel_store_anatomy_is_the_serial_one(tmp_path, monkeypatch):
    from hypo.cohort.synthetic import generate_cohort
    from hypo.features.anatomy import anatomy_for_store, anatomy_path
    from hypo.preprocess import PreprocessConfig, build_slice_store

    monkeypatch.setenv("HYPO_CACHE", str(tmp_path / "cache"))
    root = generate_cohort(tmp_path / "c", 3, seed=4, workers=1, progress=False)
    store = build_slice_store(hc.load(root), PreprocessConfig(size=96), progress=False)
    one = anatomy_for_store(store, progress=False, workers=1)
    labels, table = np.array(one.labels), one.table.copy()
    patients = pd.read_parquet(anatomy_path(store) / "patients.parquet")
    import shutil

    shutil.rmtree(anatomy_path(store))
    two = anatomy_for_store(store, progress=False, workers=2)
    assert np.array_equal(np.asarray(two.labels), labels)
    pd.testing.assert_frame_equal(two.table, table)
    pd.testing.assert_frame_equal(
        pd.read_parquet(anatomy_path(store) / "patients.parquet"), patients
    )


def test_fill_slice_holes_matches_labelling():
    # The flood fill from each slice's frame against labelling the background per slice.
    from hypo.features.brain3d import _fill_slice_holes

    rng = np.random.default_rng(3)
    n_holes = 0
    for shape in [(40, 50, 6), (17, 9, 3), (1, 5, 2)]:
        m = ndimage.gaussian_filter(rng.random(shape), (2, 2, 0)) > 0.5
        m[:, :, 0] = True  # a slice with no background
        within = np.zeros((3, 3, 3), bool)
        within[:, :, 1] = ndimage.generate_binary_structure(2, 1)
        lab, n = ndimage.label(~m, within)
        edge = np.zeros(n + 1, bool)
        for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
            edge[np.unique(face)] = True
        edge[0] = True
        want = m | ~edge[lab]
        got = _fill_slice_holes(m)
        assert got.dtype == bool and np.array_equal(got, want)
        n_holes += int((got & ~m).sum())
    assert n_holes > 0  # the blobs did enclose background


def test_smooth3d_is_scipys_gaussian():
    from hypo.features.brain3d import _smooth3d

    rng = np.random.default_rng(4)
    for shape, sigma in [((40, 50, 7), (0.75, 0.6, 0.3)), ((30, 30, 10), (2.0, 1.0, 1.2))]:
        f = rng.random(shape).astype(np.float32)
        want = ndimage.gaussian_filter(f, sigma, mode="constant")
        got = _smooth3d(f, sigma)
        assert got.shape == f.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_fast_percentile_is_np_percentile():
    from hypo.features.brain3d import fast_percentile

    rng = np.random.default_rng(5)
    for k in range(300):
        v = _sample(rng, int(rng.integers(1, 60000)), k)
        if k % 3 == 2:
            rng.shuffle(v)  # unsorted too
        q = float(rng.choice([0.0, 1.0, 50.0, 99.5, 100.0, rng.uniform(0, 100)]))
        assert fast_percentile(v, q) == float(np.percentile(v, q))
        # Of the positive values, without extracting them.
        v[rng.random(v.size) < 0.4] = 0
        n_pos = int((v > 0).sum())
        if n_pos:
            assert fast_percentile(v, q, n_top=n_pos) == float(np.percentile(v[v > 0], q))
    with pytest.raises(ValueError, match="n_top"):
        fast_percentile(np.ones(10), 50, n_top=0)


def test_small_helpers_match_numpy():
    from hypo.features.anatomy import _correlation, _line_fit, _small_median

    rng = np.random.default_rng(6)
    for n in (1, 2, 7, 150):
        v = rng.normal(size=n)
        assert _small_median(v) == float(np.median(v))
    assert np.isnan(_small_median(np.array([])))
    y = np.arange(40, dtype=float)
    x = 3.0 + 0.2 * y + rng.normal(0, 0.5, 40)
    np.testing.assert_allclose(_line_fit(y, x), np.polyfit(y, x, 1), rtol=1e-10)
    a, b = rng.normal(size=500).astype(np.float32), rng.normal(size=500).astype(np.float32)
    b += a
    assert _correlation(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert np.isnan(_correlation(a, np.ones(500, np.float32)))
