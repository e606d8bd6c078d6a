"""The shared worker processes: each parallel stage gives the serial stage's bytes, the pool
is started once per run, and its workers run their native libraries on one thread."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import hypo.cohort as hc  # noqa: E402
from hypo._util import process_pool, shutdown_process_pool  # noqa: E402


def _blas_threads(_=None) -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]


def _environ(name: str):
    return os.environ.get(name)


def test_the_pool_is_shared_restarted_on_new_settings_and_single_threaded(monkeypatch):
    monkeypatch.setenv("HYPO_CACHE", "/nonexistent/a")
    a = process_pool(2)
    assert process_pool(2) is a  # one start per run, whatever the number of stages
    assert list(a.map(_environ, ["HYPO_CACHE"] * 2)) == ["/nonexistent/a"] * 2
    assert all(t == [1] * len(t) for t in a.map(_blas_threads, range(2)))
    monkeypatch.setenv("HYPO_CACHE", "/nonexistent/b")  # a worker reads it once, at start
    b = process_pool(2)
    assert b is not a
    assert list(b.map(_environ, ["HYPO_CACHE"])) == ["/nonexistent/b"]
    assert process_pool(1) is not b
    shutdown_process_pool()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from hypo.cohort.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("par") / "c"
    return hc.load(generate_cohort(root, 3, seed=4, workers=1, progress=False))


def test_parallel_slice_store_is_the_serial_one(cohort, tmp_path, monkeypatch):
    import hypo._util
    import hypo.preprocess as pp

    monkeypatch.setattr(pp, "PARALLEL_MIN_PATIENTS", 1)
    used, real = [], hypo._util.pool_map
    monkeypatch.setattr(hypo._util, "pool_map", lambda *a, **k: used.append(a[2]) or real(*a, **k))
    stores = {}
    for w in ("1", "2"):
        monkeypatch.setenv("HYPO_WORKERS", w)
        stores[w] = pp.build_slice_store(
            cohort, pp.PreprocessConfig(size=64), cache_root=tmp_path / w, progress=False
        )
    assert used == [1, 2]
    one, two = stores["1"], stores["2"]
    assert np.array_equal(np.asarray(one.images), np.asarray(two.images))
    assert sorted(one.masks) == sorted(two.masks) and one.masks
    for k in one.masks:
        assert np.array_equal(np.asarray(one.masks[k]), np.asarray(two.masks[k]))
    pd.testing.assert_frame_equal(one.table, two.table)
    assert (one.path / "meta.json").read_text() == (two.path / "meta.json").read_text()
    shutdown_process_pool()


def _tiny_cam_model():
    import keras

    inp = keras.Input((64, 64, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(inp)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.MaxPooling2D(8, name="block1_pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block2_conv")(x)
    x = keras.layers.ReLU(name="block2_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3, name="logits")(x)
    m = keras.Model(inp, keras.layers.Softmax(name="probabilities")(x))
    rng = np.random.default_rng(0)
    for la in m.layers:
        if la.get_weights():
            la.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                            for w in la.get_weights()])  # fmt: skip
    return m


def test_parallel_slice_features_are_the_serial_ones(cohort, tmp_path, monkeypatch):
    from hypo.cam.stream import compute_store
    from hypo.features.anatomy import anatomy_for_store
    from hypo.features.maps import features_for_store
    from hypo.preprocess import PreprocessConfig, build_slice_store

    monkeypatch.setenv("HYPO_CACHE", str(tmp_path / "cache"))
    store = build_slice_store(cohort, PreprocessConfig(size=64), progress=False)
    anatomy = anatomy_for_store(store, progress=False, cohort=cohort)
    m = _tiny_cam_model()
    # Small chunks, and a second cache chunked otherwise: units hold several caches whose
    # chunks need not line up.
    cs = compute_store(m, store, tmp_path / "a", layer="block2_relu", chunk_size=16,
                       progress=False)  # fmt: skip
    cs2 = compute_store(m, store, tmp_path / "b", layer="block1_relu", methods=("gradcam",),
                        classes=(2,), chunk_size=40, progress=False)  # fmt: skip
    assert cs.n_chunks > 2 and cs2.n_chunks != cs.n_chunks
    cams = [cs, ("control_random_model", cs2)]
    kw = {"controls": ("control_uniform", "control_intensity"), "progress": False}
    import hypo._util

    used = []
    real = hypo._util.pool_map

    def spy(fn, args, n_workers, chunksize=1):
        used.append(n_workers)
        return real(fn, args, n_workers, chunksize)

    monkeypatch.setattr(hypo._util, "pool_map", spy)
    one = features_for_store(store, anatomy, cams, workers=1, **kw)
    assert used == []
    two = features_for_store(store, anatomy, cams, workers=2, **kw)
    assert used == [2]  # the workers did it
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    # A store restricted to some rows in memory keeps its folder's path: never sent by path.
    from hypo.study.outcome_maps import _rows

    rows = np.arange(10, 60)
    sub, sub_an = _rows(store, anatomy, rows)
    part = features_for_store(sub, sub_an, controls=kw["controls"], progress=False, workers=2)
    assert used == [2]
    assert len(part) == 2 * len(rows)
    assert len(one) == len(store.table) * (2 * 3 + 1 + 2)
    assert set(one["map_source"]) == {"cam", "control_random_model", "control_uniform",
                                      "control_intensity"}  # fmt: skip
    # Rows in the serial order: cache by cache, method, chunk, class; then the controls.
    first = one[one["map_source"] == "cam"]
    assert list(dict.fromkeys(first["method"])) == ["gradcam", "gradcampp"]
    shutdown_process_pool()


def test_a_script_without_a_main_guard_runs_in_one_process_with_a_warning(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "my_analysis.py"
    script.write_text(
        "from hypo._util import pool_map\n"
        "print(list(pool_map(abs, [-1, -2, -3], 2)))\n"
        "print(list(pool_map(abs, [-4, -5], 2)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HYPO_WORKERS"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-2:] == ["[1, 2, 3]", "[4, 5]"]
    assert out.stderr.count("worker processes could not start") == 1  # then stays in-process
    assert 'if __name__ == "__main__":' in out.stderr
