"""Deletion, insertion and ROAD on a model whose relevant pixels are known."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hypo.cam import compute  # noqa: E402
from hypo.cam.faithfulness import (  # noqa: E402
    deletion_insertion,
    faithfulness_table,
    noisy_linear_imputation,
    road,
)

S = 12


def quadrant_model():
    """Identity 1x1 conv -> ReLU -> Flatten -> Dense(2): class 0 scores the mean of the
    top-left quadrant, class 1 that of the bottom-right (hand-set weights, no training)."""
    inp = keras.Input((S, S, 1))
    a = keras.layers.Conv2D(1, 1, name="conv")(inp)
    a = keras.layers.ReLU(name="relu")(a)
    x = keras.layers.Flatten()(a)
    m = keras.Model(inp, keras.layers.Dense(2, name="logits")(x), name="quadrants")
    m.get_layer("conv").set_weights([np.ones((1, 1, 1, 1), "float32"), np.zeros(1, "float32")])
    w = np.zeros((S, S, 2), "float32")
    h = S // 2
    w[:h, :h, 0] = 4.0 / (h * h)
    w[h:, h:, 1] = 4.0 / (h * h)
    m.get_layer("logits").set_weights([w.reshape(-1, 2), np.zeros(2, "float32")])
    return m


def _images(n=3):
    return np.random.default_rng(0).uniform(0.5, 1.5, size=(n, S, S, 1)).astype("float32")


def _oracle(n, reverse=False):
    q = np.zeros((n, 2, S, S))
    h = S // 2
    q[:, 0, :h, :h] = 1.0
    q[:, 1, h:, h:] = 1.0
    return 1.0 - q if reverse else q


def test_deletion_and_insertion_rank_a_faithful_map_first():
    m = quadrant_model()
    x = _images()
    res = compute(m, x, methods=("gradcam", "hirescam"), layer="relu")
    # Grad-CAM averages the gradient over the image: a map of the whole image; HiResCAM
    # keeps the gradient's location: the scored quadrant only
    assert res["gradcam"][:, 0, -1, -1].min() > 0 and res["hirescam"][:, 0, -1, -1].max() == 0
    kw = dict(classes=(0, 1), steps=12, score="logit", insertion_baseline=0.0)
    auc = {}
    for name, maps in (
        ("oracle", _oracle(3)),
        ("anti", _oracle(3, reverse=True)),
        ("gradcam", res["gradcam"]),
        ("hirescam", res["hirescam"]),
    ):
        di = deletion_insertion(m, x, maps, **kw)
        t = di.table.groupby("curve")["auc"].mean()
        auc[name] = t
        start = di.table[di.table.curve == "deletion"]["score_start"].to_numpy()
        np.testing.assert_allclose(start, m.predict(x, verbose=0).reshape(-1), rtol=1e-5)
        # every pixel deleted (to 0): both quadrant means are 0
        np.testing.assert_allclose(di.table[di.table.curve == "deletion"]["score_end"], 0,
                                   atol=1e-6)  # fmt: skip
    # HiResCAM ranks the quadrant's brightest pixels first: even faster than the indicator
    assert auc["hirescam"]["deletion"] < auc["oracle"]["deletion"] < auc["gradcam"]["deletion"]
    assert auc["gradcam"]["deletion"] < auc["anti"]["deletion"]
    assert auc["hirescam"]["insertion"] > auc["oracle"]["insertion"] > auc["gradcam"]["insertion"]
    assert auc["gradcam"]["insertion"] > auc["anti"]["insertion"]
    # by hand: deleting the scored quadrant first, the logit falls linearly to 0 over the
    # first quarter of the pixels, then stays at 0 -> AUC = 0.25 * score / 2
    np.testing.assert_allclose(auc["oracle"]["deletion"],
                               (m.predict(x, verbose=0).mean() * 0.125), rtol=0.05)  # fmt: skip


def test_road_most_relevant_first_drops_the_score():
    m = quadrant_model()
    x = _images(2)
    kw = dict(classes=(0, 1), fractions=(0.25, 0.5), score="logit", noise=0.0)
    good = road(m, x, _oracle(2), **kw).table.groupby("curve")["auc"].mean()
    bad = road(m, x, _oracle(2, reverse=True), **kw).table.groupby("curve")["auc"].mean()
    assert good["road_morf"] < bad["road_morf"]
    assert good["road_lerf"] > bad["road_lerf"]
    # removing the least relevant 50% (outside the scored quadrant) leaves the score intact
    t = road(m, x, _oracle(2), **kw).curves
    lerf = t[(t.curve == "road_lerf") & (t.fraction == 0.5)]["score"].to_numpy()
    np.testing.assert_allclose(lerf, m.predict(x, verbose=0).reshape(-1), rtol=1e-5)


def test_noisy_linear_imputation_solves_the_neighbour_mean():
    img = np.random.default_rng(1).normal(size=(6, 7, 1))
    removed = np.zeros((6, 7), bool)
    removed[2:4, 2:5] = True
    out = noisy_linear_imputation(img, removed, noise=0.0)[..., 0]
    np.testing.assert_array_equal(out[~removed], img[..., 0][~removed].astype("float32"))
    pad = np.pad(out.astype(float), 1, mode="constant", constant_values=np.nan)
    for i, j in zip(*np.nonzero(removed)):
        nb = [pad[i, j + 1], pad[i + 2, j + 1], pad[i + 1, j], pad[i + 1, j + 2]]
        np.testing.assert_allclose(out[i, j], np.nanmean(nb), rtol=1e-5)


def test_faithfulness_table_per_method_and_layer():
    m = quadrant_model()
    x = _images(2)
    t = faithfulness_table(m, x, methods=("gradcam", "hirescam"), layers=["conv", "relu"],
                           steps=6, road_fractions=(0.5,), score="logit",
                           insertion_baseline=0.0)  # fmt: skip
    assert list(t["layer"]) == ["conv", "conv", "relu", "relu"]
    cols = {"deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc"}
    assert cols <= set(t.columns) and (t["n_maps"] == 4).all()
    h = t[t.method == "hirescam"].iloc[0]
    g = t[t.method == "gradcam"].iloc[0]
    assert h["deletion_auc"] < g["deletion_auc"] and h["insertion_auc"] > g["insertion_auc"]
    with pytest.raises(ValueError, match="maps have shape"):
        deletion_insertion(m, x, np.zeros((2, 2, 4, 4)), classes=(0, 1))
