"""CAMs of multi-input models, bag (patient-level) models, single-sigmoid heads, named
classes and named score layers, each against a hand computation."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hypo.cam import compute, default_cam_layer, spatial_layers  # noqa: E402

ALL = ("gradcam", "gradcampp", "hirescam", "layercam")


def _seeded(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, tuple(w.shape)).astype("float32"))
    return model


def _relu_conv(x, kern, bias):
    """'same' 3x3 conv + ReLU in NumPy; x (n, H, W, 1)."""
    xp = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    H, W = x.shape[1:3]
    out = np.zeros((x.shape[0], H, W, kern.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += xp[:, i : i + H, j : j + W, None] * kern[i, j, 0]
    return np.maximum(out + bias, 0)


def _gradcam(A, G):
    """A (n, *S, K), G (n, *S, K) -> (n, *S)."""
    axes = tuple(range(1, A.ndim - 1))
    return np.maximum((G.mean(axis=axes, keepdims=True) * A).sum(-1), 0)


def test_multi_input_model_holds_other_inputs_fixed():
    img = keras.Input((8, 8, 1), name="image")
    clin = keras.Input((2,), name="clinical")
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(img)
    x = keras.layers.GlobalAveragePooling2D()(a)
    x = keras.layers.Concatenate()([x, clin])
    x = keras.layers.Dense(4, activation="tanh", name="hidden")(x)  # clinical changes dS/dA
    out = keras.layers.Dense(2, activation="softmax", name="out")(x)
    m = _seeded(keras.Model([img, clin], out), 0)
    rng = np.random.default_rng(1)
    x_img = rng.normal(size=(3, 8, 8, 1)).astype("float32")
    c1 = rng.normal(size=(3, 2)).astype("float32")
    r1 = compute(m, x_img, inputs={"clinical": c1}, methods=ALL, resize=False)
    r2 = compute(m, x_img, inputs={"clinical": c1 + 2}, methods=ALL, resize=False)
    assert r1.layer == "conv" and default_cam_layer(m) == "conv"
    np.testing.assert_allclose(r1.probabilities, m.predict([x_img, c1], verbose=0), rtol=1e-5)
    assert np.abs(r1["gradcam"] - r2["gradcam"]).max() > 1e-4  # the inputs reach the head
    # by hand: dS_c/dA = (W2[:, c] * (1 - h^2)) @ W1[:3] / 64 at every position
    kern, bias = m.get_layer("conv").get_weights()
    w1, b1 = m.get_layer("hidden").get_weights()
    w2, _ = m.get_layer("out").get_weights()
    A = _relu_conv(x_img.astype(float), kern, bias)
    h = np.tanh(np.concatenate([A.mean((1, 2)), c1], 1) @ w1 + b1)
    for c in range(2):
        g = ((w2[:, c] * (1 - h**2)) @ w1[:3].T) / 64  # (n, K)
        G = np.broadcast_to(g[:, None, None, :], A.shape)
        np.testing.assert_allclose(r1["gradcam"][:, c], _gradcam(A, G), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"inputs= must give exactly \['clinical'\]"):
        compute(m, x_img)
    with pytest.raises(ValueError, match=r"input 'clinical' has shape \(2, 2\)"):
        compute(m, x_img, inputs={"clinical": c1[:2]})
    with pytest.raises(ValueError, match="no input named 'mri'"):
        compute(m, x_img, inputs={"clinical": c1}, image_input="mri")


def _encoder():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="enc_conv")(inp)
    x = keras.layers.ReLU(name="enc_relu")(x)
    return keras.Model(inp, x, name="encoder")


def test_bag_model_gives_per_slice_maps_of_the_patient_score():
    T = 4
    enc = _encoder()
    bag = keras.Input((T, 8, 8, 1), name="slices")
    f = keras.layers.TimeDistributed(enc, name="per_slice")(bag)  # (B, T, 8, 8, 3)
    f = keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D(), name="gap")(f)
    f = keras.layers.GlobalAveragePooling1D(name="slice_pool")(f)
    logits = keras.layers.Dense(3, name="logits")(f)
    m = _seeded(keras.Model(bag, keras.layers.Softmax()(logits), name="bag"), 2)
    x = np.random.default_rng(3).normal(size=(2, T, 8, 8, 1)).astype("float32")
    inner = ["per_slice/encoder/enc_conv", "per_slice/encoder/enc_relu", "per_slice/encoder"]
    assert spatial_layers(m) == inner
    assert default_cam_layer(m) == "per_slice/encoder/enc_relu"
    res = compute(m, x, methods=ALL)
    assert res["gradcam"].shape == (2, 3, T, 8, 8) and res.provenance["per_slice"]
    assert res.cell_size == (1.0, 1.0, 1.0)
    kern, bias = enc.get_layer("enc_conv").get_weights()
    wd, _ = m.get_layer("logits").get_weights()
    A = _relu_conv(x.reshape(-1, 8, 8, 1).astype(float), kern, bias).reshape(2, T, 8, 8, 3)
    for c in range(3):
        # the patient score averages T slices x 64 cells: dS/dA = W[:, c] / (64 T)
        G = np.broadcast_to(wd[:, c] / (64 * T), A.shape)
        ref = _gradcam(A.reshape(-1, 8, 8, 3), G.reshape(-1, 8, 8, 3)).reshape(2, T, 8, 8)
        np.testing.assert_allclose(res.raw["gradcam"][:, c], ref, rtol=1e-4, atol=1e-7)
    # a slice that does not reach the patient score (max over slices) gets an empty map
    g = keras.layers.TimeDistributed(enc, name="per_slice")(bag)
    g = keras.layers.TimeDistributed(keras.layers.GlobalMaxPooling2D(), name="gmp")(g)
    g = keras.layers.GlobalMaxPooling1D()(keras.layers.Dense(1, name="slice_score")(g))
    m2 = keras.Model(bag, keras.layers.Dense(1, activation="sigmoid", name="out")(g))
    _seeded(m2, 4)
    r2 = compute(m2, x, methods=("layercam",), resize=False)
    per_slice = np.abs(r2.raw["layercam"]).reshape(2, 2, T, -1).max(-1)
    assert ((per_slice > 0).sum(-1) <= 1).all() and per_slice.max() > 0
    with pytest.raises(ValueError, match="TimeDistributed wrapper; per-slice maps"):
        compute(m, x, layer="per_slice")


def test_single_sigmoid_unit_has_negative_and_positive_classes():
    inp = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(a)
    m = _seeded(keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="p")(x)), 5)
    lin = keras.Model(inp, keras.layers.Dense(1, name="z")(x))
    lin.get_layer("z").set_weights(m.get_layer("p").get_weights())
    lin.get_layer("conv").set_weights(m.get_layer("conv").get_weights())
    x_img = np.random.default_rng(6).normal(size=(3, 8, 8, 1)).astype("float32")
    res = compute(m, x_img, methods=ALL, resize=False, class_names=["no stroke", "stroke"])
    ref = compute(lin, x_img, methods=ALL, resize=False)
    assert res.classes == (0, 1) and res.class_names == ("no stroke", "stroke")
    p = m.predict(x_img, verbose=0)[:, 0]
    np.testing.assert_allclose(res.probabilities, np.stack([1 - p, p], 1), rtol=1e-5)
    np.testing.assert_allclose(res.logits[:, 1], ref.logits[:, 0], rtol=1e-5)
    np.testing.assert_allclose(res.logits[:, 0], -ref.logits[:, 0], rtol=1e-5)
    for meth in ALL:
        np.testing.assert_allclose(res.class_maps(meth, "stroke"), ref[meth][:, 0], rtol=1e-5)
    # HiResCAM is linear in the gradient: positive minus negative map = sum_k g_k A_k
    diff = res["hirescam"][:, 1] - res["hirescam"][:, 0]
    assert np.abs(diff).max() > 0 and (res["hirescam"][:, 0] * res["hirescam"][:, 1] == 0).all()
    by_name = compute(m, x_img, classes=["stroke"], class_names=["no stroke", "stroke"])
    assert by_name.classes == (1,) and by_name.provenance["class_names"] == ["stroke"]
    with pytest.raises(ValueError, match="name 3 classes.*has 2"):
        compute(m, x_img, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="class 'stroke'.*class_names="):
        compute(m, x_img, classes=["stroke"])


def test_classes_by_name_from_the_card_and_ordinal_score_layer():
    inp = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(a)
    eta = keras.layers.Dense(1, name="eta")(x)  # linear predictor of a cumulative-link head
    cum = keras.layers.Dense(2, activation="sigmoid", name="cumulative")(eta)
    m = _seeded(keras.Model(inp, cum), 7)
    m.get_layer("cumulative").set_weights([np.ones((1, 2), "float32"), np.array([1.0, -1.0])])
    lin = keras.Model(inp, keras.layers.Dense(1, name="z")(x))
    lin.get_layer("z").set_weights(m.get_layer("eta").get_weights())
    lin.get_layer("conv").set_weights(m.get_layer("conv").get_weights())
    x_img = np.random.default_rng(8).normal(size=(2, 8, 8, 1)).astype("float32")
    res = compute(m, x_img, score_layer="eta", methods=ALL, resize=False)
    ref = compute(lin, x_img, methods=ALL, resize=False)
    assert res.provenance["score_source"] == "output of score layer 'eta'"
    np.testing.assert_allclose(res.probabilities, m.predict(x_img, verbose=0), rtol=1e-5)
    for meth in ALL:
        np.testing.assert_allclose(res[meth], ref[meth], rtol=1e-5, atol=1e-8)
    three = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    object.__setattr__(three, "hypo_card", {"classes": ["no stroke", "mRS 0-2", "mRS 3-6"]})
    r = compute(three, x_img, classes=["mRS 3-6", "no stroke"], resize=False)
    assert r.classes == (2, 0) and r.class_names[2] == "mRS 3-6"
    np.testing.assert_array_equal(r.class_maps("gradcam", "mRS 3-6"), r["gradcam"][:, 0])


def test_softmax_head_inside_a_nested_model_is_split_into_logits():
    inp = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    head = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="head",
    )
    m = _seeded(keras.Model(inp, head(a)), 9)
    flat = keras.Model(inp, keras.layers.Dense(3, name="logits")(head.layers[0](a)))
    flat.get_layer("logits").set_weights(head.get_layer("out").get_weights())
    x = np.random.default_rng(10).normal(size=(2, 8, 8, 1)).astype("float32")
    res = compute(m, x, methods=ALL, resize=False)
    ref = compute(flat, x, methods=ALL, resize=False)
    assert res.provenance["score_source"] == "pre-activation of final Dense layer 'head/out'"
    np.testing.assert_allclose(res.logits, ref.logits, rtol=1e-5, atol=1e-6)
    for meth in ALL:
        assert ref[meth].max() > 0
        np.testing.assert_allclose(res[meth], ref[meth], rtol=1e-5, atol=1e-7)
