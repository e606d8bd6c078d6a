"""CAMs of the models researchers bring: Keras Applications backbones nested under a new
head, a nested 3D model, mixed-precision models (maps in float32), and clear errors for
what cannot be reached."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hypo.cam import (  # noqa: E402
    compute,
    default_cam_layer,
    layer_sweep,
    precision_effect,
    spatial_layers,
)
from hypo.nets import build_model  # noqa: E402

ALL = ("gradcam", "gradcampp", "hirescam", "layercam")
BACKBONES = {
    "resnet50": (keras.applications.ResNet50, "conv5_block3_out", "conv4_block6_out"),
    "densenet121": (keras.applications.DenseNet121, "relu", "pool4_relu"),
    "efficientnetb0": (keras.applications.EfficientNetB0, "top_activation", "block6d_add"),
}


def _rel_diff(a, b):
    """Max |a - b| per map, relative to that map's maximum (of b)."""
    axes = tuple(range(2, a.ndim))
    scale = np.abs(b).max(axis=axes)
    return np.abs(a - b).max(axis=axes) / np.where(scale > 0, scale, 1.0)


def _nested_and_flat(base, n_classes=3):
    """The backbone called inside a functional model with a new head, and the same layers
    built flat (one graph from the backbone's own input), sharing every weight."""
    gap = keras.layers.GlobalAveragePooling2D(name="head_gap")
    dense = keras.layers.Dense(n_classes, activation="softmax", name="head_dense")
    inp = keras.Input(base.input_shape[1:], name="image")
    nested = keras.Model(inp, dense(gap(base(inp))), name=f"{base.name}_nested")
    flat = keras.Model(base.inputs, dense(gap(base.outputs[0])), name=f"{base.name}_flat")
    rng = np.random.default_rng(0)
    kw, bw = dense.get_weights()
    dense.set_weights([rng.normal(0, 0.05, kw.shape).astype("float32"), bw])
    return nested, flat


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def backbone(request):
    fn, last, inner = BACKBONES[request.param]
    keras.utils.set_random_seed(0)
    base = fn(weights=None, include_top=False, input_shape=(64, 64, 3))
    nested, flat = _nested_and_flat(base)
    return request.param, base, nested, flat, last, inner


def test_nested_backbone_maps_equal_flat(backbone):
    name, base, nested, flat, last, inner = backbone
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")
    # the automatic choice follows the path into the backbone to its last activation
    assert default_cam_layer(nested) == f"{name}/{last}"
    assert default_cam_layer(flat) == last
    cands = spatial_layers(nested)
    assert f"{name}/{last}" in cands and f"{name}/{inner}" in cands
    # the inner layer given as the layer object, the last one by path: one graph, one pass
    sweep_n = layer_sweep(nested, x, layers=[f"{name}/{last}", base.get_layer(inner)],
                          methods=ALL, resize=False)  # fmt: skip
    sweep_f = layer_sweep(flat, x, layers=[last, inner], methods=ALL, resize=False)
    for (pn, rn), (pf, rf) in zip(sweep_n.items(), sweep_f.items()):
        assert pn == f"{name}/{pf}"
        np.testing.assert_allclose(rn.logits, rf.logits, rtol=1e-5, atol=1e-6)
        for meth in ALL:
            assert rn.raw[meth].shape[:2] == (2, 3)
            assert rf.raw[meth].max() > 0, (pf, meth)
            assert _rel_diff(rn.raw[meth], rf.raw[meth]).max() <= 1e-5, (pn, meth)


def _body3d():
    inp = keras.Input((8, 8, 4, 1), name="vol")
    x = keras.layers.Conv3D(4, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.MaxPooling3D((2, 2, 1), name="pool1")(x)
    y = keras.layers.Conv3D(4, 3, padding="same", name="c2")(x)
    y = keras.layers.Add(name="res")([x, y])
    y = keras.layers.ReLU(name="r2")(y)
    return keras.Model(inp, y, name="body3d")


def test_nested_3d_model_maps_equal_flat():
    keras.utils.set_random_seed(2)
    body = _body3d()
    gap = keras.layers.GlobalAveragePooling3D(name="gap")
    logits = keras.layers.Dense(2, name="logits")
    soft = keras.layers.Softmax(name="probabilities")
    inp = keras.Input((8, 8, 4, 1))
    # a Sequential head around the functional body: two levels of nesting
    outer = keras.Sequential([keras.Input((8, 8, 4, 1)), body], name="wrap")
    nested = keras.Model(inp, soft(logits(gap(outer(inp)))))
    flat = keras.Model(body.inputs, soft(logits(gap(body.outputs[0]))))
    bn = body.get_layer("bn1")
    g, b, mu, var = bn.get_weights()
    bn.set_weights([g + 0.5, b + 0.1, mu + 0.1, var + 0.5])
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 4, 1)).astype("float32")
    assert default_cam_layer(nested) == "wrap/body3d/r2"
    for layer in ("r1", "r2"):
        rn = compute(nested, x, layer=f"wrap/body3d/{layer}", methods=ALL)
        rf = compute(flat, x, layer=layer, methods=ALL)
        for meth in ALL:
            assert rf[meth].max() > 0
            assert rn[meth].shape == (2, 2, 8, 8, 4)
            assert _rel_diff(rn.raw[meth], rf.raw[meth]).max() <= 1e-5, (layer, meth)
            assert _rel_diff(rn[meth], rf[meth]).max() <= 1e-5, (layer, meth)


class _Inner(keras.Model):
    def __init__(self):
        super().__init__(name="inner")
        self.conv = keras.layers.Conv2D(2, 3, padding="same", name="hidden_conv")

    def call(self, x):
        return keras.ops.relu(self.conv(x))


def test_unreachable_layers_raise_clear_errors():
    inp = keras.Input((8, 8, 1))
    x = _Inner()(inp)
    x = keras.layers.Conv2D(2, 3, padding="same", name="outer_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(2, name="logits")(x))
    xs = np.zeros((1, 8, 8, 1), "float32")
    assert compute(m, xs, layer="outer_conv").layer == "outer_conv"
    with pytest.raises(ValueError, match=r"inside _Inner 'inner'.*functional API"):
        compute(m, xs, layer="inner/hidden_conv")
    with pytest.raises(ValueError, match=r"subclassed.*functional API"):
        compute(_Inner(), xs)
    with pytest.raises(ValueError, match=r"no layer 'nope'.*outer_conv"):
        compute(m, xs, layer="nope")
    # a layer name that occurs in two nested models needs its full path
    b1 = gap_body("twin")
    b2 = gap_body("twin2")
    y = keras.layers.Concatenate()([b1(inp), b2(inp)])
    y = keras.layers.GlobalAveragePooling2D()(y)
    m2 = keras.Model(inp, keras.layers.Dense(2, name="logits")(y))
    with pytest.raises(ValueError, match=r"several nested models.*\['twin/conv', 'twin2/conv'\]"):
        compute(m2, xs, layer="conv")
    assert compute(m2, xs, layer="twin2/conv").layer == "twin2/conv"


def gap_body(name):
    inp = keras.Input((8, 8, 1))
    return keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same", name="conv")(inp), name=name)


def test_mixed_precision_model_gives_float32_maps(tmp_path):
    """A model saved under mixed_bfloat16 is explained in float32: its maps equal those of
    its float32 twin (same weights); computed in its own precision they do not."""
    bf = build_model("shallow", (32, 32, 1), 3, seed=0, precision="mixed_bfloat16")
    f32 = build_model("shallow", (32, 32, 1), 3, seed=0)
    f32.set_weights(bf.get_weights())
    bf.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert "mixed_bfloat16" in {la.dtype_policy.name for la in loaded.layers}
    x = np.random.default_rng(4).normal(size=(4, 32, 32, 1)).astype("float32")
    ref = compute(f32, x, methods=ALL, resize=False)
    res = compute(loaded, x, methods=ALL, resize=False)
    own = compute(loaded, x, methods=ALL, resize=False, precision="model")
    assert res.provenance["precision"]["maps"].startswith("float32")
    assert "mixed_bfloat16" in res.provenance["precision"]["model"]
    for meth in ALL:
        assert ref[meth].max() > 0
        assert _rel_diff(res.raw[meth], ref.raw[meth]).max() <= 1e-5, meth
    np.testing.assert_allclose(res.logits, ref.logits, rtol=1e-5, atol=1e-5)
    # bfloat16 (8 bits of mantissa) moves the maps by far more than 1e-5
    assert _rel_diff(own.raw["gradcam"], ref.raw["gradcam"]).max() > 1e-3
    table, own2, f32_2 = precision_effect(loaded, x, methods=("gradcam",))
    assert len(table) == 4 * 3 and table["rel_max_diff"].max() > 1e-3
    np.testing.assert_array_equal(f32_2.raw["gradcam"], res.raw["gradcam"])
    assert (table["spearman"] > 0.5).all()
    # weights changed in place after the first call reach the float32 computation
    d = loaded.get_layer("logits")
    d.set_weights([w * 2 for w in d.get_weights()])
    f32.get_layer("logits").set_weights(d.get_weights())
    again = compute(loaded, x, methods=("gradcam",), resize=False)
    ref2 = compute(f32, x, methods=("gradcam",), resize=False)
    assert _rel_diff(again.raw["gradcam"], ref2.raw["gradcam"]).max() <= 1e-5
    assert np.abs(again.raw["gradcam"] - res.raw["gradcam"]).max() > 0


def _bag_model(policy):
    """A bag model (TimeDistributed functional encoder) built under a dtype policy."""
    keras.config.set_dtype_policy(policy)
    try:
        b_in = keras.Input((8, 8, 1))
        y = keras.layers.Conv2D(4, 3, padding="same", name="c")(b_in)
        body = keras.Model(b_in, keras.layers.ReLU(name="r")(y), name="body")
        bag = keras.Input((3, 8, 8, 1))
        f = keras.layers.TimeDistributed(body, name="td")(bag)
        f = keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D(), name="g")(f)
        f = keras.layers.GlobalAveragePooling1D()(f)
        return keras.Model(bag, keras.layers.Dense(2, name="logits", dtype="float32")(f))
    finally:
        keras.config.set_dtype_policy("float32")


def test_mixed_precision_nested_bag_model_gives_float32_maps():
    bf, f32 = _bag_model("mixed_bfloat16"), _bag_model("float32")
    f32.set_weights(bf.get_weights())
    assert bf.get_layer("td").layer.get_layer("c").dtype_policy.name == "mixed_bfloat16"
    x = np.random.default_rng(5).normal(size=(2, 3, 8, 8, 1)).astype("float32")
    res = compute(bf, x, methods=ALL, resize=False)
    ref = compute(f32, x, methods=ALL, resize=False)
    assert res.layer == "td/body/r"
    for meth in ALL:
        assert ref.raw[meth].max() > 0
        assert _rel_diff(res.raw[meth], ref.raw[meth]).max() <= 1e-5, meth


def test_cascading_randomisation_steps_into_nested_models():
    from hypo.cam import cascading_randomisation

    keras.utils.set_random_seed(6)
    body = _body3d()
    inp = keras.Input((8, 8, 4, 1))
    x = keras.layers.GlobalAveragePooling3D()(body(inp))
    m = keras.Model(inp, keras.layers.Dense(2, name="logits")(x))
    before = [w.numpy().copy() for w in m.weights]
    x_img = np.random.default_rng(7).normal(size=(2, 8, 8, 4, 1)).astype("float32")
    df = cascading_randomisation(m, x_img, seed=1)
    steps = list(df.drop_duplicates("step")["randomised_layer"])
    assert steps == ["logits", "body3d/c2", "body3d/bn1", "body3d/c1"]
    assert df["spearman_rho"].notna().any()
    for w, b in zip(m.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_streamed_store_of_a_nested_model(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from hypo.cam.stream import compute_store

    keras.utils.set_random_seed(8)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(gap_body("backbone")(inp))
    m = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="out")(x))
    images = np.random.default_rng(9).normal(size=(5, 8, 8)).astype("float32")
    store = SimpleNamespace(images=images, table=pd.DataFrame({"participant_id": ["a"] * 5}))
    cs = compute_store(m, store, tmp_path / "cams", chunk_size=2, progress=False)
    assert cs.manifest["key"]["layer"] == "backbone/conv"
    assert cs.manifest["key"]["maps_dtype"] == "float32"
    direct = compute(m, images[..., None], resize=False)
    stored = np.concatenate(
        [np.load(p) for p in sorted((tmp_path / "cams").rglob("raw_gradcam.npy"))]
    )
    np.testing.assert_allclose(stored, direct.raw["gradcam"], rtol=1e-6, atol=1e-8)
