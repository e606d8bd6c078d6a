import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hypo.nets.architectures import build_model  # noqa: E402
from hypo.nets.mc_dropout import mc_predict, mc_samples, uncertainty  # noqa: E402


@pytest.fixture(scope="module")
def model_and_images():
    m = build_model("shallow", (16, 16, 1), seed=0)
    # Non-trivial BN statistics, so "BN in inference mode" is a real constraint.
    for layer in m.layers:
        if layer.name.endswith("_bn"):
            mean, var = layer.moving_mean, layer.moving_variance
            mean.assign(np.linspace(-0.5, 0.5, mean.shape[0]).astype("float32"))
            var.assign(np.linspace(0.5, 2.0, var.shape[0]).astype("float32"))
    x = np.random.default_rng(0).normal(size=(7, 16, 16)).astype("float32")
    return m, x


def test_passes_vary_bn_unchanged_predict_deterministic(model_and_images):
    m, x = model_and_images
    before = [v.numpy().copy() for v in m.non_trainable_variables]
    p1 = m.predict(x[..., None], verbose=0)
    s = mc_samples(m, x, T=6, seed=1)
    assert s.shape == (6, 7, 2)
    assert s.std(axis=0).max() > 1e-3  # dropout is active
    after = [v.numpy() for v in m.non_trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    np.testing.assert_array_equal(p1, m.predict(x[..., None], verbose=0))


def test_mc_is_seeded(model_and_images):
    m, x = model_and_images
    a = mc_predict(m, x, T=4, seed=3)
    b = mc_predict(m, x, T=4, seed=3)
    c = mc_predict(m, x, T=4, seed=4)
    assert a.equals(b)
    assert not np.allclose(a["p_1"], c["p_1"])


def test_zero_dropout_equals_deterministic_output():
    m = build_model("shallow", (16, 16, 1), seed=0, dropout=0.0)
    x = np.random.default_rng(1).normal(size=(5, 16, 16, 1)).astype("float32")
    s = mc_samples(m, x, T=3, seed=0, batch_size=2)
    det = m.predict(x, verbose=0)
    for t in range(3):
        np.testing.assert_allclose(s[t], det, rtol=1e-5, atol=1e-6)
    u = uncertainty(s)
    assert np.allclose(u["mutual_information"], 0, atol=1e-6)
    assert np.allclose(u["variation_ratio"], 0) and np.allclose(u["total_variance"], 0)


def test_uncertainty_formulas_on_known_samples():
    # Two passes that disagree completely about one image, agree about the other.
    s = np.array([[[1.0, 0.0], [0.9, 0.1]], [[0.0, 1.0], [0.9, 0.1]]])
    u = uncertainty(s, ["no stroke", "stroke"])
    np.testing.assert_allclose(u["p_stroke"], [0.5, 0.1])
    np.testing.assert_allclose(u["predictive_entropy"][0], np.log(2), rtol=1e-9)
    np.testing.assert_allclose(u["mutual_information"][0], np.log(2), rtol=1e-6)
    np.testing.assert_allclose(u["mutual_information"][1], 0, atol=1e-9)
    np.testing.assert_allclose(u["variation_ratio"], [0.5, 0.0])
    np.testing.assert_allclose(u["total_variance"], [0.5, 0.0])


def test_bad_images_raise(model_and_images):
    m, _ = model_and_images
    with pytest.raises(ValueError, match="images have shape"):
        mc_predict(m, np.zeros((2, 16)), T=2)
    with pytest.raises(ValueError, match="T=0"):
        mc_predict(m, np.zeros((2, 16, 16)), T=0)
