"""Multi-layer fusion of LayerCAM maps (Jiang et al., IEEE TIP 2021, section III-C).

A deep layer's map is coarse but class-specific; a shallow layer's is fine but noisy and
weak. LayerCAM fuses them after bringing them to one scale: each layer's maps (resized to
the input) are divided by a scale of that layer, the shallow layers' are passed through
``tanh(gamma * M)`` (the paper's gamma = 2, which lifts their weak but localised relevance),
and the fused map is the elementwise maximum over layers.

The paper scales by each map's own maximum. Here the scale is one number per layer (its
largest value over the maps being fused, :func:`layer_scales`): a per-map maximum would make
every slice's fused map peak at 1, so a slice the model barely uses would weigh as much as
its lesion slices in a map-mass-weighted patient mean. With one scale per layer the fused
maps keep the relative mass of the slices, as each layer's maps do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["FUSION_GAMMA", "FUSION_LAYER", "fuse_layer_maps", "layer_scales"]

#: Shallow-layer scaling of the paper.
FUSION_GAMMA = 2.0
#: Layer name under which fused maps are recorded (feature tables, candidates).
FUSION_LAYER = "fusion"


def layer_scales(chunks_by_layer: Sequence[Iterable[np.ndarray]]) -> np.ndarray:
    """The largest value of each layer's maps over all its chunks (1 where a layer's maps
    are all zero, so that dividing by it leaves them zero)."""
    out = []
    for chunks in chunks_by_layer:
        m = 0.0
        for c in chunks:
            c = np.asarray(c)
            if c.size:
                m = max(m, float(np.nanmax(c)))
        out.append(m if m > 0 else 1.0)
    return np.asarray(out, float)


def fuse_layer_maps(
    maps: Sequence[np.ndarray], scales: Sequence[float], deep: int = 0, gamma: float = FUSION_GAMMA
) -> np.ndarray:
    """Fuse same-shaped maps of several layers into one (elementwise maximum).

    Parameters
    ----------
    maps : sequence of arrays
        One array per layer, all of the same shape (e.g. ``(n, classes, H, W)``, resized to
        the input), non-negative (LayerCAM maps are).
    scales : sequence of float
        One positive scale per layer (:func:`layer_scales`).
    deep : int
        Index of the deepest layer, which is scaled linearly; the others get ``tanh(gamma
        * M / scale)``.
    gamma : float
        Shallow-layer scaling (paper: 2).

    Returns
    -------
    ndarray (float32), the maps' shape, values in [0, 1].
    """
    if len(maps) != len(scales) or not maps:
        raise ValueError(f"{len(maps)} layer map arrays but {len(scales)} scales")
    shape = np.shape(maps[0])
    for i, m in enumerate(maps):
        if np.shape(m) != shape:
            raise ValueError(f"layer {i}: maps of shape {np.shape(m)}, expected {shape}")
    if np.any(np.asarray(scales, float) <= 0):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    out = None
    for i, (m, s) in enumerate(zip(maps, scales)):
        x = np.clip(np.asarray(m, np.float32) / np.float32(s), 0.0, None)
        if i != deep:
            x = np.tanh(np.float32(gamma) * x)
        out = x if out is None else np.maximum(out, x)
    return np.minimum(out, 1.0).astype(np.float32, copy=False)
