"""Localisation metrics and sanity checks (randomisation test, negative controls)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from hypo.cam import compute, model_hash  # noqa: E402
from hypo.cam.metrics import (  # noqa: E402
    localisation_table,
    mask_auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from hypo.cam.sanity import (  # noqa: E402
    cascading_randomisation,
    negative_controls,
    spearman_per_map,
)


def _case():
    maps = np.zeros((4, 4, 4))
    masks = np.zeros((4, 4, 4), bool)
    masks[:, 1:3, 1:3] = True
    maps[0, 1, 1] = 3.0  # peak in the mask
    maps[0, 0, 0] = 1.0
    maps[1, 0, 0] = 3.0  # peak outside
    maps[1, 2, 2] = 1.0
    masks[2] = False  # empty mask
    maps[2, 1, 1] = 1.0
    # image 3: all-zero map
    return maps, masks


def test_pointing_game_and_relevance_mass_by_hand():
    maps, masks = _case()
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 0.0, np.nan, np.nan])
    np.testing.assert_allclose(relevance_mass_accuracy(maps, masks), [0.75, 0.25, np.nan, np.nan])
    brain = np.ones_like(masks)
    brain[:, 0, 0] = False  # the bright outside pixel is background: it no longer counts
    np.testing.assert_array_equal(pointing_game(maps, masks, brain)[:2], [1.0, 1.0])
    np.testing.assert_allclose(relevance_mass_accuracy(maps, masks, brain)[:2], [1.0, 1.0])


def test_rank_topk_and_auc():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 6, 6))
    masks = rng.random((5, 6, 6)) > 0.7
    brain = np.zeros((5, 6, 6), bool)
    brain[:, 1:, :5] = True
    # a map equal to its mask ranks perfectly
    np.testing.assert_allclose(relevance_rank_accuracy(masks * 1.0 + 0.1 * maps, masks), 1.0)
    np.testing.assert_allclose(mask_auc(masks * 1.0 + 0.1 * maps, masks), 1.0)
    # AUC against scikit-learn, with and without the brain restriction
    for b in (None, brain):
        got = mask_auc(maps, masks, b)
        for i in range(5):
            sel = np.ones(36, bool) if b is None else b[i].ravel()
            s = (masks[i].ravel() & sel)[sel]
            ref = roc_auc_score(s, maps[i].ravel()[sel])
            assert got[i] == pytest.approx(ref, abs=1e-12)
    # top-k by brute force
    k = 7
    got = top_k_intersection(maps, masks, k=k)
    for i in range(5):
        top = np.argsort(-maps[i].ravel(), kind="stable")[:k]
        assert got[i] == pytest.approx(masks[i].ravel()[top].mean())
    kk = masks.reshape(5, -1).sum(1)
    rra = relevance_rank_accuracy(maps, masks)
    for i in range(5):
        top = np.argsort(-maps[i].ravel(), kind="stable")[: kk[i]]
        assert rra[i] == pytest.approx(masks[i].ravel()[top].mean())
    tab = localisation_table(maps, masks, brain, k=5)
    assert list(tab.columns[:3]) == ["map_index", "mask_pixels", "pointing_game"]
    assert len(tab) == 5 and tab["brain_restricted"].all()
    assert np.isclose(mask_auc(np.ones((1, 3, 3)), masks[:1, :3, :3]), 0.5)
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(maps, masks[:, :5])


def _gap_model(seed=0):
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(inp)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="block2_conv")(x)
    x = keras.layers.ReLU(name="block2_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2, name="logits")(x)
    m = keras.Model(inp, keras.layers.Softmax()(x))
    rng = np.random.default_rng(seed)
    for la in m.layers:
        if la.get_weights():
            la.set_weights(
                [rng.normal(0, 0.5, w.shape).astype("float32") for w in la.get_weights()]
            )
    return m


def test_spearman_per_map_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 5, 5)), rng.random((3, 5, 5))
    b[1] = a[1] ** 2  # monotone: rho = 1
    got = spearman_per_map(a, b)
    for i in range(3):
        assert got[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel())[0])
    assert got[1] == pytest.approx(1.0)
    assert np.isnan(spearman_per_map(a[:1], np.zeros((1, 5, 5))))[0]


def test_cascading_randomisation_restores_weights_and_decorrelates():
    m = _gap_model()
    x = np.random.default_rng(2).normal(size=(3, 12, 12, 1)).astype("float32")
    before = model_hash(m)
    ref = compute(m, x, resize=False)
    df = cascading_randomisation(m, x, methods=("gradcam", "gradcampp"), seed=3)
    assert model_hash(m) == before
    np.testing.assert_array_equal(compute(m, x, resize=False)["gradcam"], ref["gradcam"])
    order = ["logits", "block2_conv", "block1_conv"]
    assert list(df.drop_duplicates("step")["randomised_layer"]) == order
    assert len(df) == 3 * 2 * 3 * 2  # steps x methods x images x classes
    assert df["model_hash"].nunique() == 3 and before not in set(df["model_hash"])
    rho = df["spearman_rho"].dropna()
    assert len(rho) > 0 and rho.between(-1, 1).all()
    last = df[df["step"] == 3]["spearman_rho"].dropna()
    assert len(last) > 0 and last.mean() < 0.9
    again = cascading_randomisation(m, x, methods=("gradcam", "gradcampp"), seed=3)
    np.testing.assert_array_equal(again["spearman_rho"], df["spearman_rho"])
    with pytest.raises(ValueError, match="nope"):
        cascading_randomisation(m, x, layers=["nope"])
    assert model_hash(m) == before


def test_model_hash_is_cached_and_follows_weights_changed_in_place():
    from hypo._util import _sha256_of_weights

    def sha(model):
        return _sha256_of_weights(model.weights)[:16]

    m = _gap_model()
    h = model_hash(m)
    assert h == sha(m) and model_hash(m) == h  # hashed, then fingerprinted
    k = m.get_layer("block1_conv").kernel
    orig = k.numpy()
    k.assign(orig[..., ::-1])  # the same values in another order
    shuffled = model_hash(m)  # seen by the eager fingerprints
    assert shuffled != h and shuffled == sha(m)
    k.assign(orig)
    assert model_hash(m) == h  # and by the compiled ones
    k.assign(orig[..., ::-1])
    assert model_hash(m) == shuffled and model_hash(m, length=8) == shuffled[:8]
    k.assign(orig)
    other = _gap_model(seed=1)
    m.set_weights(other.get_weights())
    assert model_hash(m) == model_hash(other) == sha(other) != h


def test_negative_controls():
    m = _gap_model()
    x = np.random.default_rng(4).normal(size=(2, 12, 12, 1)).astype("float32")
    before = model_hash(m)
    res = negative_controls(m, x, seed=1)
    assert model_hash(m) == before
    assert set(res.methods) == {"control_uniform", "control_intensity", "control_random_model"}
    for meth in res.methods:
        assert res[meth].shape == (2, 2, 12, 12)
    assert (res["control_uniform"] == 1).all()
    expect = x[..., 0] - x[..., 0].min(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(res["control_intensity"][:, 1], expect, rtol=1e-6)
    real = compute(m, x)
    assert not np.allclose(res["control_random_model"], real["gradcam"])
    np.testing.assert_array_equal(
        negative_controls(m, x, seed=1)["control_random_model"], res["control_random_model"]
    )
    with pytest.raises(ValueError, match="negative control"):
        negative_controls(m, x, controls=("control_noise",))
