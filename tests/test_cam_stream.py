"""Cohort streaming (resumable chunked cache) and NIfTI export of CAMs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import cv2  # noqa: E402
import keras  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hypo.cam import compute, model_hash  # noqa: E402
from hypo.cam.export import export_patient, maps_to_nifti  # noqa: E402
from hypo.cam.stream import CamStore, compute_store  # noqa: E402
from hypo.cohort.orientation import axial_slices  # noqa: E402


def _model(seed=0):
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="block1_conv")(inp)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.AveragePooling2D(2, name="block1_pool")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2, name="logits")(x)
    m = keras.Model(inp, keras.layers.Softmax(name="probabilities")(x))
    rng = np.random.default_rng(seed)
    for la in m.layers:
        if la.get_weights():
            la.set_weights(
                [rng.normal(0, 0.5, w.shape).astype("float32") for w in la.get_weights()]
            )
    return m


def _store(n=50):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(n, 8, 8)).astype("float32")
    table = pd.DataFrame(
        {"participant_id": [f"sub-{i // 10:02d}" for i in range(n)], "slice": np.arange(n) % 10}
    )
    return SimpleNamespace(images=images, table=table)


class _Kill(Exception):
    pass


def test_stream_resumes_after_kill_to_identical_results(tmp_path):
    m, store = _model(), _store()
    kw = dict(methods=("gradcam", "gradcampp"), chunk_size=16, batch_size=8, progress=False)
    full = compute_store(m, store, tmp_path / "a", **kw)
    assert full.n_chunks == 4 and full.complete

    def kill_after_two(i):
        if i == 1:
            raise _Kill

    with pytest.raises(_Kill):
        compute_store(m, store, tmp_path / "b", on_chunk=kill_after_two, **kw)
    part = CamStore.open(tmp_path / "b")
    assert not part.complete
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "incomplete"
    assert sorted(p.name for p in (tmp_path / "b" / "chunks").iterdir()) == ["00000", "00001"]
    # a chunk being written when the process died leaves only a hidden temporary folder
    (tmp_path / "b" / "chunks" / ".00002.abc.tmp").mkdir()
    redone = []
    resumed = compute_store(m, store, tmp_path / "b", on_chunk=redone.append, **kw)
    assert redone == [2, 3]
    assert not list((tmp_path / "b" / "chunks").glob(".*"))
    for meth in ("gradcam", "gradcampp"):
        np.testing.assert_array_equal(
            resumed.maps(meth, resized=False), full.maps(meth, resized=False)
        )
    np.testing.assert_array_equal(resumed.logits, full.logits)
    assert resumed.manifest["status"] == "complete"
    assert resumed.provenance["score"] == "pre-softmax logit"


def test_stream_accessor_matches_direct_compute(tmp_path):
    m, store = _model(), _store()
    kw = dict(layer="block1_pool", chunk_size=16, progress=False)
    cs = compute_store(m, store, tmp_path / "c", **kw)
    idx = [3, 40, 17]
    direct = compute(m, store.images[idx][..., None], layer="block1_pool")
    for meth in ("gradcam", "gradcampp"):
        got = cs.maps(meth, idx)
        assert got.shape == (3, 2, 8, 8)
        np.testing.assert_allclose(got, direct[meth], rtol=1e-4, atol=1e-6)
        chunks = list(cs.iter_chunks(meth))
        assert [(a, b) for a, b, _ in chunks] == [(0, 16), (16, 32), (32, 48), (48, 50)]
        assert chunks[0][2].shape == (16, 2, 4, 4)
    np.testing.assert_allclose(cs.probabilities[idx], direct.probabilities, rtol=1e-5)
    res = cs.result(idx)
    assert res.classes == (0, 1) and res.cell_size == (2.0, 2.0)
    assert list(cs.index["participant_id"][:2]) == ["sub-00", "sub-00"]
    # stored resized maps equal on-read resizing
    cr = compute_store(m, store, tmp_path / "r", resize=True, **kw)
    np.testing.assert_allclose(cr.maps("gradcam", idx), cs.maps("gradcam", idx), rtol=1e-6)


def test_stream_refuses_mixing_different_runs(tmp_path):
    m, store = _model(), _store(20)
    compute_store(m, store, tmp_path / "d", chunk_size=8, progress=False)
    with pytest.raises(ValueError, match="methods"):
        compute_store(m, store, tmp_path / "d", methods=("gradcam",), chunk_size=8, progress=False)
    other = _model(seed=5)
    with pytest.raises(ValueError, match="model_hash"):
        compute_store(other, store, tmp_path / "d", chunk_size=8, progress=False)
    cs = compute_store(other, store, tmp_path / "d", chunk_size=8, progress=False, overwrite=True)
    assert cs.manifest["key"]["model_hash"] == model_hash(other) != model_hash(m)
    with pytest.raises(ValueError, match="table has 3 rows"):
        compute_store(
            m, SimpleNamespace(images=store.images, table=store.table[:3]), tmp_path / "e"
        )


def _forward(native, r0, r1, c0, c1, size):
    return cv2.resize(native[r0:r1, c0:c1], (size, size), interpolation=cv2.INTER_LINEAR)


def test_export_round_trips_through_crop_and_resize(tmp_path):
    # A smooth canonical "truth" volume: its axial slices, cropped and resized as the
    # preprocessing does, are the maps; export must give the truth back inside the crops.
    X, Y, Z, size = 30, 36, 4, 16
    xx, yy = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    truth = np.stack(
        [np.exp(-((xx - 8 - 3 * k) ** 2 + (yy - 20) ** 2) / 60.0) for k in range(Z)], axis=-1
    ).astype("float32")
    truth[:, :, 0] = 0  # slice 0 is "black": not in the store, must come back as zeros
    native_slices = axial_slices(truth)  # (Z, Y, X)
    boxes = {1: (4, 30, 2, 28), 2: (6, 34, 3, 25), 3: (0, 36, 0, 30)}
    rows, maps = [], []
    for k, (r0, r1, c0, c1) in boxes.items():
        maps.append(_forward(native_slices[k], r0, r1, c0, c1, size))
        rows.append(
            dict(
                participant_id="sub-01",
                slice=k,
                crop_r0=r0,
                crop_r1=r1,
                crop_c0=c0,
                crop_c1=c1,
                native_rows=Y,
                native_cols=X,
            )
        )
    table = pd.DataFrame(rows)
    # The reference is stored LAS (x flipped): canonical output must still match truth.
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [30.0, -40.0, -10.0]
    ref = nib.Nifti1Image(np.zeros((X, Y, Z), np.int16), affine)
    img = maps_to_nifti(np.stack(maps), table, ref, tmp_path / "p.nii.gz")
    assert (tmp_path / "p.nii.gz").exists()
    vol = np.asarray(img.dataobj)
    assert vol.shape == (X, Y, Z)
    np.testing.assert_allclose(img.affine, nib.as_closest_canonical(ref).affine)
    assert not vol[:, :, 0].any()
    for k, (r0, r1, c0, c1) in boxes.items():
        inside = np.zeros((Y, X), bool)
        inside[r0:r1, c0:c1] = True
        got = axial_slices(vol)[k]
        assert np.abs(got - native_slices[k])[inside].max() < 0.05
        assert not got[~inside].any()
    # peak location survives exactly (left stays left)
    k = 2
    assert np.unravel_index(vol[:, :, k].argmax(), (X, Y)) == np.unravel_index(
        truth[:, :, k].argmax(), (X, Y)
    )
    nat = maps_to_nifti(np.stack(maps), table, ref, native_orientation=True)
    np.testing.assert_allclose(nat.affine, affine)
    np.testing.assert_allclose(np.asarray(nib.as_closest_canonical(nat).dataobj), vol)
    with pytest.raises(ValueError, match="does not fit"):
        maps_to_nifti(np.stack(maps), table, nib.Nifti1Image(np.zeros((X, Y + 1, Z)), affine))


def test_export_patient_writes_one_volume_per_class_and_method(tmp_path):
    m = _model()
    Y = X = 10
    table = pd.DataFrame(
        [
            dict(
                participant_id=p,
                slice=k,
                crop_r0=1,
                crop_r1=9,
                crop_c0=0,
                crop_c1=10,
                native_rows=Y,
                native_cols=X,
            )
            for p in ("sub-a", "sub-b")
            for k in (0, 2)
        ]
    )
    images = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype("float32")
    res = compute(m, images, methods=("gradcam", "layercam"))
    ref = nib.Nifti1Image(np.zeros((X, Y, 3), np.float32), np.eye(4))
    paths = export_patient(res, table, "sub-b", ref, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"sub-b_desc-{mm}_class-{c}_cam.nii.gz" for mm in ("gradcam", "layercam") for c in (0, 1)
    )
    vol = nib.load(paths[0]).get_fdata()
    assert vol.shape == (X, Y, 3) and not vol[..., 1].any()
    expected = np.zeros((Y, X), np.float32)  # sub-b's slice 2 is result row 3
    expected[1:9, 0:10] = cv2.resize(res["gradcam"][3, 0], (10, 8), interpolation=cv2.INTER_LINEAR)
    assert expected.max() > 0
    np.testing.assert_allclose(axial_slices(vol)[2], expected, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="sub-zz"):
        export_patient(res, table, "sub-zz", ref, tmp_path)
