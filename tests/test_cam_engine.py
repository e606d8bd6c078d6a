"""Correctness of the CAM engine against hand computations, finite differences,
mirror symmetry and tf-keras-vis."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hypo.cam import compute, default_cam_layer, spatial_layers  # noqa: E402
from hypo.cam.engine import score_gradients  # noqa: E402
from hypo.cam.sweep import layer_sweep  # noqa: E402

ALL = ("gradcam", "gradcampp", "hirescam", "layercam")


def flatten_model(h=6, w=5, k=3, n_classes=3, seed=0):
    """conv(3x3, same) -> ReLU -> Flatten -> Dense logits -> Softmax: spatially varying
    gradients, so a wrong spatial reduction shows up."""
    inp = keras.Input((h, w, 1))
    x = keras.layers.Conv2D(k, 3, padding="same", name="conv")(inp)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(n_classes, name="logits")(x)
    out = keras.layers.Softmax(name="probabilities")(x)
    m = keras.Model(inp, out, name="flat_model")
    _set_random_weights(m, seed)
    return m


def gap_model(
    shape=(8, 8, 1), n_classes=3, seed=1, softmax_dense=False, bias_shift=0.0, nesting="flat"
):
    """conv -> BN -> ReLU -> GAP -> logits -> softmax; with ``nesting`` "functional" or
    "sequential" the conv block is a nested model named ``body``."""
    conv = keras.layers.Conv3D if len(shape) == 4 else keras.layers.Conv2D
    gap = (
        keras.layers.GlobalAveragePooling3D
        if len(shape) == 4
        else keras.layers.GlobalAveragePooling2D
    )
    block = [
        conv(4, 3, padding="same", name="block1_conv"),
        keras.layers.BatchNormalization(name="block1_bn"),
        keras.layers.ReLU(name="block1_relu"),
    ]
    inp = keras.Input(shape)
    if nesting == "flat":
        x = inp
        for la in block:
            x = la(x)
        body = None
    elif nesting == "sequential":
        body = keras.Sequential([keras.Input(shape), *block], name="body")
        x = body(inp)
    else:
        b_in = keras.Input(shape)
        y = b_in
        for la in block:
            y = la(y)
        body = keras.Model(b_in, y, name="body")
        x = body(inp)
    x = gap(name="gap")(x)
    if softmax_dense:
        out = keras.layers.Dense(n_classes, activation="softmax", name="dense_out")(x)
    else:
        x = keras.layers.Dense(n_classes, name="logits")(x)
        out = keras.layers.Softmax(name="probabilities")(x)
    m = keras.Model(inp, out, name="gap_model")
    _set_random_weights(m, seed)
    bn = block[1]
    g, b, mu, var = bn.get_weights()
    bn.set_weights([g, b, mu, np.abs(var) + 0.5])
    if bias_shift:
        d = m.layers[-1] if softmax_dense else m.get_layer("logits")
        kw, bw = d.get_weights()
        d.set_weights([kw, bw + bias_shift])
    return m


def _set_random_weights(model, seed):
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in ws])


def _leaf_layers(model):
    for la in model.layers:
        if isinstance(la, keras.Model):
            yield from _leaf_layers(la)
        else:
            yield la


def _conv_same(x, kern, bias):
    """Zero-padded 'same' cross-correlation, x (n, *S, 1), kern (*3, 1, K)."""
    nd = x.ndim - 2
    xp = np.pad(x[..., 0], [(0, 0)] + [(1, 1)] * nd)
    S = x.shape[1:-1]
    out = np.zeros((x.shape[0], *S, kern.shape[-1]))
    for off in np.ndindex(*(3,) * nd):
        sl = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(off, S))
        out += xp[sl][..., None] * kern[off][0]
    return out + bias


def _cams_numpy(A, G):
    """Reference formulas, A (n, *S, K), G (n, C, *S, K) -> dict of (n, C, *S)."""
    axes = tuple(range(2, G.ndim - 1))
    A_ = A[:, None]
    gc = np.maximum((G.mean(axis=axes, keepdims=True) * A_).sum(-1), 0)
    s = A_.sum(axis=axes, keepdims=True)
    num, den = G**2, 2 * G**2 + s * G**3
    alpha = np.divide(num, den, out=np.zeros_like(G), where=(num != 0) & (den != 0))
    w = (alpha * np.maximum(G, 0)).sum(axis=axes, keepdims=True)
    gpp = np.maximum((w * A_).sum(-1), 0)
    hires = np.maximum((G * A_).sum(-1), 0)
    layer = np.maximum((np.maximum(G, 0) * A_).sum(-1), 0)
    return {"gradcam": gc, "gradcampp": gpp, "hirescam": hires, "layercam": layer}


def test_flatten_model_matches_numpy_by_hand():
    m = flatten_model()
    x = np.random.default_rng(2).normal(size=(4, 6, 5, 1)).astype("float32")
    kern, bias = m.get_layer("conv").get_weights()
    wd, bd = m.get_layer("logits").get_weights()
    A = np.maximum(_conv_same(x.astype(float), kern, bias), 0)
    # d logit_c / d A = the Dense column reshaped to A's layout (Flatten is row-major).
    G = np.broadcast_to(wd.T.reshape(1, 3, 6, 5, 3), (4, 3, 6, 5, 3))
    ref = _cams_numpy(A, G)
    res = compute(m, x, layer="relu", methods=ALL, resize=False)
    for meth in ALL:
        np.testing.assert_allclose(res[meth], ref[meth], rtol=1e-4, atol=1e-5, err_msg=meth)
        np.testing.assert_array_equal(res.raw[meth], res[meth])
    logits = A.reshape(4, -1) @ wd + bd
    np.testing.assert_allclose(res.logits, logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0, rtol=1e-5)
    assert any(res[meth].max() > 0 for meth in ALL)


@pytest.mark.parametrize("fused", [False, True], ids=["ops", "xla"])
@pytest.mark.parametrize("nesting", ["flat", "functional", "sequential"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (6, 6, 4, 1)])
def test_gap_model_matches_numpy_2d_and_3d(shape, nesting, fused, monkeypatch):
    from hypo.cam import engine

    # The channel weights of a large layer are computed by XLA: force either path here.
    monkeypatch.setattr(engine, "FUSE_MIN_ELEMENTS", 0 if fused else 2**62)
    m = gap_model(shape, nesting=nesting)
    x = np.random.default_rng(3).normal(size=(3, *shape)).astype("float32")
    body = m if nesting == "flat" else m.get_layer("body")
    kern, bias = body.get_layer("block1_conv").get_weights()
    gamma, beta, mu, var = body.get_layer("block1_bn").get_weights()
    eps = body.get_layer("block1_bn").epsilon
    wd, _ = m.get_layer("logits").get_weights()
    z = _conv_same(x.astype(float), kern, bias)
    A = np.maximum((z - mu) / np.sqrt(var + eps) * gamma + beta, 0)
    n_cells = np.prod(shape[:-1])
    G = np.broadcast_to(
        (wd.T / n_cells).reshape((1, 3) + (1,) * (len(shape) - 1) + (4,)), (3, 3, *A.shape[1:])
    )
    ref = _cams_numpy(A, G)
    res = compute(m, x, methods=ALL, resize=False)
    prefix = "" if nesting == "flat" else "body/"
    assert res.layer == prefix + "block1_relu"
    assert res.provenance["layer_choice"].startswith("automatic")
    for meth in ALL:
        assert res[meth].max() > 0
        np.testing.assert_allclose(res[meth], ref[meth], rtol=1e-4, atol=1e-6, err_msg=meth)
    assert res["gradcam"].shape == (3, 3, *shape[:-1])
    if nesting != "flat":  # the inner layer by bare name and by object: the same maps
        for key in ("block1_relu", body.get_layer("block1_relu")):
            again = compute(m, x, layer=key, methods=("hirescam",), resize=False)
            assert again.layer == "body/block1_relu"
            np.testing.assert_array_equal(again["hirescam"], res["hirescam"])


def test_gradients_match_finite_differences():
    # A nonlinear head (tanh hidden layer), so the gradient varies with A.
    inp = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inp)
    head = [
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(5, activation="tanh", name="hidden"),
        keras.layers.Dense(3, name="logits"),
    ]
    x = a
    for la in head:
        x = la(x)
    m = keras.Model(inp, keras.layers.Softmax()(x))
    _set_random_weights(m, 4)
    imgs = np.random.default_rng(5).normal(size=(2, 6, 6, 1)).astype("float32")
    A, G = score_gradients(m, imgs, layer="conv")
    assert G.shape == (2, 3, 6, 6, 2)

    def logits_of(a64):
        t = a64.astype("float64")
        t = t.reshape(len(t), -1)
        w1, b1 = (v.astype("float64") for v in head[1].get_weights())
        w2, b2 = (v.astype("float64") for v in head[2].get_weights())
        return np.tanh(t @ w1 + b1) @ w2 + b2

    rng = np.random.default_rng(6)
    h = 1e-4
    for _ in range(12):
        idx = tuple(rng.integers(0, s) for s in A.shape[1:])
        ap, am = A.astype("float64").copy(), A.astype("float64").copy()
        ap[(slice(None), *idx)] += h
        am[(slice(None), *idx)] -= h
        fd = (logits_of(ap) - logits_of(am)) / (2 * h)  # (n, C)
        np.testing.assert_allclose(G[(slice(None), slice(None), *idx)], fd, rtol=1e-3, atol=1e-5)
    # The maps are the reference formulas applied to these gradients.
    ref = _cams_numpy(A.astype("float64"), G.astype("float64"))
    res = compute(m, imgs, layer="conv", methods=ALL, resize=False)
    for meth in ALL:
        np.testing.assert_allclose(res[meth], ref[meth], rtol=1e-4, atol=1e-6, err_msg=meth)


def _symmetric_model():
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="block1_conv")(inp)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.AveragePooling2D(2, name="block1_pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block2_conv")(x)
    x = keras.layers.ReLU(name="block2_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2, name="logits")(x)
    m = keras.Model(inp, keras.layers.Softmax()(x))
    _set_random_weights(m, 7)
    for name in ("block1_conv", "block2_conv"):
        k, b = m.get_layer(name).get_weights()
        m.get_layer(name).set_weights([(k + k[:, ::-1]) / 2, b])  # left-right symmetric
    return m


def test_mirror_equivariance():
    m = _symmetric_model()
    x = np.random.default_rng(8).normal(size=(3, 16, 16, 1)).astype("float32")
    a = compute(m, x, methods=ALL)
    b = compute(m, x[:, :, ::-1], methods=ALL)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    for meth in ALL:
        assert a[meth].max() > 0
        np.testing.assert_allclose(b[meth], a[meth][..., ::-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.raw[meth], a.raw[meth][..., ::-1], rtol=1e-4, atol=1e-5)
    # and the maps are not themselves symmetric, so the check has teeth
    assert np.abs(a["gradcam"] - a["gradcam"][..., ::-1]).max() > 1e-3


def _minmax(m):
    m = np.asarray(m, dtype="float64")
    ax = tuple(range(1, m.ndim))
    lo, hi = m.min(axis=ax, keepdims=True), m.max(axis=ax, keepdims=True)
    return np.divide(m - lo, hi - lo, out=np.zeros_like(m), where=hi > lo)


def test_agrees_with_tf_keras_vis():
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    inp = keras.Input((24, 24, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv")(inp)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="block2_conv")(x)
    x = keras.layers.ReLU(name="block2_relu")(x)
    x = keras.layers.Flatten()(x)  # spatially varying gradients
    logits = keras.layers.Dense(3, name="logits")(x)
    m = keras.Model(inp, logits)  # output = logits, so tf-keras-vis scores the logit
    _set_random_weights(m, 9)
    for la in ("block1_conv", "block2_conv"):
        k, b = m.get_layer(la).get_weights()
        m.get_layer(la).set_weights([k * 0.5, np.abs(b)])
    imgs = np.random.default_rng(10).normal(size=(4, 24, 24, 1)).astype("float32")
    ours = compute(
        m,
        imgs,
        layer="block2_relu",
        methods=("gradcam", "gradcampp"),
        resize=False,
        gradcampp_alpha_norm=True,
    )
    for c in range(3):
        kw = dict(
            penultimate_layer="block2_relu",
            seek_penultimate_conv_layer=False,
            expand_cam=False,
            normalize_cam=False,
        )
        ref_gc = Gradcam(m, clone=False)(CategoricalScore([c] * 4), imgs, **kw)
        ref_pp = GradcamPlusPlus(m, clone=False)(CategoricalScore([c] * 4), imgs, **kw)
        assert np.ptp(ref_gc) > 0 and np.ptp(ref_pp) > 0
        diff_gc = np.abs(_minmax(ours["gradcam"][:, c]) - _minmax(ref_gc)).max()
        diff_pp = np.abs(_minmax(ours["gradcampp"][:, c]) - _minmax(ref_pp)).max()
        assert diff_gc <= 1e-4, (c, diff_gc)
        assert diff_pp <= 1e-4, (c, diff_pp)
    # Without the alpha normalisation the maps differ: the option matters and is honoured.
    plain = compute(m, imgs, layer="block2_relu", methods=("gradcampp",), resize=False)
    assert np.abs(_minmax(plain["gradcampp"]) - _minmax(ours["gradcampp"])).max() > 1e-3


def test_softmax_dense_equals_logits_layer_and_no_overflow():
    # Same weights, once as Dense(softmax), once as Dense logits + Softmax; huge logits.
    a = gap_model(softmax_dense=True, bias_shift=500.0)
    b = gap_model(softmax_dense=False, bias_shift=500.0)
    x = np.random.default_rng(11).normal(size=(3, 8, 8, 1)).astype("float32")
    ra, rb = compute(a, x, methods=ALL), compute(b, x, methods=ALL)
    assert ra.logits.min() > 400  # exp(S) would overflow float32 here
    np.testing.assert_allclose(ra.logits, rb.logits, rtol=1e-5)
    for meth in ALL:
        assert np.isfinite(ra[meth]).all()
        np.testing.assert_allclose(ra[meth], rb[meth], rtol=1e-4, atol=1e-6)
    assert "pre-activation" in ra.provenance["score_source"]
    assert ra.provenance["score"] == "pre-softmax logit"


def test_zero_gradients_give_zero_maps():
    m = gap_model()
    d = m.get_layer("logits")
    d.set_weights([np.zeros_like(w) for w in d.get_weights()])
    x = np.random.default_rng(12).normal(size=(2, 8, 8, 1)).astype("float32")
    res = compute(m, x, methods=ALL, normalize="image")
    for meth in ALL:
        assert np.isfinite(res[meth]).all() and not res[meth].any()
        assert not res.raw[meth].any()


def test_classes_order_resize_normalise_and_provenance():
    m = gap_model()
    x = np.random.default_rng(13).normal(size=(5, 8, 8, 1)).astype("float32")
    full = compute(m, x, methods=ALL, resize=False, batch_size=2)
    sub = compute(m, x, methods=ALL, classes=[2, 0], resize=False)
    assert sub.classes == (2, 0)
    for meth in ALL:
        np.testing.assert_allclose(sub[meth], full[meth][:, [2, 0]], rtol=1e-5, atol=1e-7)
    up = compute(m, x, interpolation="bicubic")
    assert up["gradcam"].shape == (5, 3, 8, 8) and "bicubic" in up.provenance["interpolation"]
    img = compute(m, x, normalize="image")
    mx = img["gradcam"].reshape(5, 3, -1).max(-1)
    assert np.all((np.isclose(mx, 1.0)) | (mx == 0))
    scaled = compute(m, x, normalize=np.array([2.0, 4.0, 8.0]), resize=False)
    np.testing.assert_allclose(
        scaled["gradcam"],
        full["gradcam"] / np.array([2.0, 4.0, 8.0])[None, :, None, None],
        rtol=1e-6,
    )
    # raw maps are never normalised (batch size changes float rounding only)
    np.testing.assert_allclose(scaled.raw["gradcam"], full.raw["gradcam"], rtol=1e-5, atol=1e-7)
    again = compute(m, x, methods=ALL, resize=False, batch_size=2)
    for meth in ALL:
        np.testing.assert_array_equal(again[meth], full[meth])  # deterministic
    p = full.provenance
    assert p["layer"] == "block1_relu" and p["gradcampp_alpha_norm"] is False
    assert len(p["model_hash"]) == 16 and "tensorflow" in p["versions"]
    m.get_layer("logits").set_weights([w + 1 for w in m.get_layer("logits").get_weights()])
    assert compute(m, x, resize=False).provenance["model_hash"] != p["model_hash"]


def test_cell_size_and_default_layer_from_card():
    m = _symmetric_model()
    x = np.zeros((1, 16, 16, 1), "float32")
    res = compute(m, x, resize=False)
    assert res.layer == "block2_relu" and res.cell_size == (2.0, 2.0)
    assert res["gradcam"].shape == (1, 2, 8, 8)
    m.hypo_card = {"cam_layer": "block1_relu"}
    assert default_cam_layer(m) == "block1_relu"
    assert compute(m, x, resize=False).cell_size == (1.0, 1.0)


def test_bad_inputs_raise_clear_errors():
    m = gap_model()
    x = np.zeros((2, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="no layer 'nope'.*block1_relu"):
        compute(m, x, layer="nope")
    with pytest.raises(ValueError, match="'gap' .*no spatial output"):
        compute(m, x, layer="gap")
    with pytest.raises(ValueError, match=r"images\[\.\.\., None\]"):
        compute(m, x[..., 0])
    with pytest.raises(ValueError, match="expects"):
        compute(m, np.zeros((2, 9, 8, 1), "float32"))
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[1\]"):
        compute(m, bad)
    with pytest.raises(ValueError, match="class index 3 is out of range.*3 classes"):
        compute(m, x, classes=[0, 3])
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute(m, x, methods=("scorecam",))
    with pytest.raises(ValueError, match="interpolation"):
        compute(m, x, interpolation="lanczos")
    with pytest.raises(ValueError, match="scale"):
        compute(m, x, normalize=-1.0)


def test_layer_sweep_matches_single_layer_calls():
    m = _symmetric_model()
    x = np.random.default_rng(14).normal(size=(2, 16, 16, 1)).astype("float32")
    layers = spatial_layers(m)
    assert layers == ["block1_conv", "block1_relu", "block1_pool", "block2_conv", "block2_relu"]
    sweep = layer_sweep(m, x, methods=("gradcam", "layercam"), resize=False)
    assert list(sweep) == layers
    for name in layers:
        one = compute(m, x, layer=name, methods=("gradcam", "layercam"), resize=False)
        for meth in ("gradcam", "layercam"):
            np.testing.assert_allclose(sweep[name][meth], one[meth], rtol=1e-5, atol=1e-6)
    assert sweep["block1_conv"]["gradcam"].shape == (2, 2, 16, 16)
    assert sweep["block2_relu"]["gradcam"].shape == (2, 2, 8, 8)


def test_trilinear_resize_agrees_with_bilinear_and_3d_compute_resizes():
    from hypo.cam.resize import resize_maps

    rng = np.random.default_rng(15)
    m2 = rng.random((2, 4, 5)).astype("float32")
    two = resize_maps(m2, (8, 10), "bilinear")
    # a volume constant along its third axis must resize like its 2D slices
    vol = np.repeat(m2[..., None], 3, axis=-1)
    three = resize_maps(vol, (8, 10, 6), "trilinear")
    for k in range(6):
        np.testing.assert_allclose(three[..., k], two, rtol=1e-5, atol=1e-6)
    cubic = resize_maps(np.pad(np.ones((1, 1)), 2)[None], (20, 20), "bicubic")
    assert cubic.min() >= 0  # cubic overshoot clipped: CAMs are non-negative
    m = gap_model((6, 6, 4, 1))
    x = rng.normal(size=(2, 6, 6, 4, 1)).astype("float32")
    res = compute(m, x, layer="block1_relu", interpolation="trilinear")
    assert res["gradcam"].shape == (2, 3, 6, 6, 4)
    assert "trilinear" in res.provenance["interpolation"]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_many_maps_resized_in_threads_equal_one_by_one(interpolation, monkeypatch):
    import cv2

    from hypo.cam import resize

    monkeypatch.setattr(resize, "_n_cpus", lambda: 3)  # three threads whatever the machine
    maps = np.random.default_rng(16).random((7, 11, 5, 6)).astype("float32")
    assert 77 // resize.MIN_MAPS_PER_THREAD >= 3
    got = resize.resize_maps(maps, (20, 24), interpolation)
    flag = resize._CV2_FLAGS[resize.canonical_interpolation(interpolation)]
    one = np.stack([cv2.resize(m, (24, 20), interpolation=flag) for m in maps.reshape(-1, 5, 6)])
    if interpolation == "bicubic":
        one = np.maximum(one, 0)
    np.testing.assert_array_equal(got, one.reshape(7, 11, 20, 24))


def test_bag_weights_trace_once_for_any_batch_size_and_equal_the_fused_ones():
    # Bags hold per-patient slice counts: one trace for all sizes (no retracing warning),
    # the same fused weights as the per-shape XLA function, to the bit.
    import tensorflow as tf

    from hypo.cam import engine

    methods = ("gradcam", "gradcampp")
    rng = np.random.default_rng(0)
    dims = (16, 16, 256)  # at FUSE_MIN_ELEMENTS for one class: the fused path
    for size in (3, 5, 3, 2):
        a = tf.constant(np.maximum(rng.normal(size=(size, *dims)), 0).astype(np.float32))
        g = tf.constant(rng.normal(0, 1e-3, (size, *dims)).astype(np.float32))
        got = engine._weigher(a, 1, methods, any_batch=True)(a, [g])
        want = engine._fused_channel_weights(a, [g], methods)
        for m in methods:
            np.testing.assert_array_equal(got[m].numpy(), want[m].numpy())
    assert engine._fused_any_batch(dims, 1, methods).experimental_get_tracing_count() == 1
