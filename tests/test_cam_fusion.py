"""LayerCAM multi-layer fusion (hypo.cam.fusion): scaling, shallow-layer tanh, maximum."""

from __future__ import annotations

import numpy as np
import pytest

from hypo.cam.fusion import FUSION_GAMMA, fuse_layer_maps, layer_scales


def test_deep_layer_is_linear_shallow_layers_are_lifted_and_the_maximum_wins():
    deep = np.array([[[0.0, 2.0], [4.0, 1.0]]], np.float32)  # scale 4
    shallow = np.array([[[1.0, 0.0], [0.0, 0.25]]], np.float32)  # scale 1
    fused = fuse_layer_maps([deep, shallow], [4.0, 1.0], deep=0)
    want = np.maximum(deep / 4.0, np.tanh(FUSION_GAMMA * shallow / 1.0))
    np.testing.assert_allclose(fused, want, rtol=1e-6)
    assert fused.dtype == np.float32 and fused.max() <= 1.0 and fused.min() >= 0.0
    # tanh(2 * 0.25) = 0.46 > 1 / 4: a weak shallow cell beats the deep layer there
    assert fused[0, 1, 1] == pytest.approx(np.tanh(0.5), rel=1e-6)


def test_one_scale_per_layer_keeps_the_slices_relative_mass():
    # Slice 1's maps are half of slice 0's in both layers: so are its fused maps where the
    # deep layer wins (a per-map maximum would make both peak at 1).
    rng = np.random.default_rng(0)
    deep = rng.uniform(0.5, 1.0, size=(1, 1, 4, 4)).astype(np.float32)
    deep = np.concatenate([deep, deep / 2])
    shallow = np.zeros_like(deep)
    scales = layer_scales([[deep[:1], deep[1:]], [shallow]])
    assert scales.tolist() == [pytest.approx(float(deep.max())), 1.0]  # all-zero layer -> 1
    fused = fuse_layer_maps([deep, shallow], scales)
    np.testing.assert_allclose(fused[1], fused[0] / 2, rtol=1e-6)


def test_mismatched_inputs_are_refused():
    a = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="expected"):
        fuse_layer_maps([a, np.zeros((2, 1, 8, 8))], [1.0, 1.0])
    with pytest.raises(ValueError, match="scales"):
        fuse_layer_maps([a, a], [1.0])
    with pytest.raises(ValueError, match="positive"):
        fuse_layer_maps([a, a], [1.0, 0.0])
