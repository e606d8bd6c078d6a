"""Sanity checks for saliency maps and negative-control maps.

- :func:`cascading_randomisation`: the model-parameter randomisation test of Adebayo et al.
  (2018, "Sanity checks for saliency maps"): re-draw the weights of the layers from the top
  (output) down, cumulatively, and measure how similar each map stays to the original
  (Spearman rank correlation). A map that does not change is an edge detector, not an
  explanation of the model.
- :func:`negative_controls`: maps any later stage can use in place of a CAM method to see
  what a feature or metric gives without an explanation: a uniform map, the image
  intensity, and Grad-CAM of a fully weight-randomised model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .._util import rng_for
from .engine import _check_classes, _check_images, compute, default_cam_layer
from .graph import is_container, layer_tree
from .resize import resize_maps
from .result import CamResult

CONTROLS = ("control_uniform", "control_intensity", "control_random_model")


def weighted_layers(model) -> list:
    """Top-level layers with trainable weights, in model order (a nested model counts as
    one layer: randomising it re-draws all its weights)."""
    return [la for la in model.layers if la.trainable_weights]


def weighted_layer_paths(model) -> list[str]:
    """Paths of the leaf layers with trainable weights, nested models included, in model
    order (``"resnet50/conv1_conv"``): the steps of a cascading randomisation."""
    return [
        path
        for path, la, _ in layer_tree(model)
        if not is_container(la)
        and not isinstance(la, keras.layers.Wrapper)
        and la.trainable_weights
    ]


def _layer_at(model, name: str):
    """A layer by top-level name or path into nested models."""
    for path, la, _ in layer_tree(model):
        if path == name:
            return la
    return model.get_layer(name)  # raises Keras's error naming the layer


_weighted_layers = weighted_layers


@contextlib.contextmanager
def randomised_weights(model, layers: Sequence[str], seed: int = 0) -> Iterator[None]:
    """Temporarily re-draw the trainable weights of ``layers``; restored on exit.

    Each weight gets ``Normal(0, sd)`` values with ``sd`` its own standard deviation (0.05
    where that is 0, e.g. zero biases), from a stream keyed by seed and layer name, so the
    same seed randomises a layer identically whatever else is randomised. Non-trainable
    state (BatchNorm moving statistics) is kept.
    """
    saved = {}
    try:
        for name in layers:
            layer = _layer_at(model, name)
            saved[name] = [w.numpy().copy() for w in layer.trainable_weights]
            rng = rng_for(seed, name)
            for w, orig in zip(layer.trainable_weights, saved[name]):
                sd = float(orig.std()) or 0.05
                w.assign(rng.normal(0.0, sd, orig.shape).astype(orig.dtype))
        yield
    finally:
        for name, values in saved.items():
            for w, v in zip(_layer_at(model, name).trainable_weights, values):
                w.assign(v)


def spearman_per_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between matching maps of two batches ``(n, ...)``.

    NaN where either map is constant.
    """
    n = a.shape[0]
    ra = rankdata(np.asarray(a, np.float64).reshape(n, -1), axis=1)
    rb = rankdata(np.asarray(b, np.float64).reshape(n, -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)


def cascading_randomisation(
    model,
    images,
    layer: str | None = None,
    methods: Sequence[str] = ("gradcam",),
    classes: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    resize: bool = False,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation test.

    Parameters
    ----------
    model : keras.Model
        Its weights are changed in place during the test and restored afterwards (also on
        error).
    images : ndarray
        As in :func:`hypo.cam.compute`.
    layer : str, optional
        Evaluation layer (default as in :func:`hypo.cam.compute`).
    methods, classes
        CAM methods and classes to test.
    layers : sequence of str, optional
        Layers (names or paths into nested models) to randomise, top (output side) first;
        default every leaf layer with trainable weights, nested ones included, from the
        output down.
    seed : int
        Seed of the random weights.
    resize : bool
        Compare input-size maps (default: raw layer-resolution maps).

    Returns
    -------
    DataFrame
        One row per (step, method, image, class): ``step`` (1 = only the top layer
        randomised), ``randomised_layer`` (the layer added at this step), ``method``,
        ``image``, ``class``, ``spearman_rho`` (original vs randomised map; NaN if either
        is constant), ``model_hash`` of the randomised model.
    """
    layer = layer if layer is not None else default_cam_layer(model)
    order = list(reversed(weighted_layer_paths(model))) if layers is None else list(layers)
    if not order:
        raise ValueError(f"model {model.name!r} has no layer with trainable weights")
    for name in order:
        _layer_at(model, name)  # unknown names fail here, before any weight changes
    kw = dict(layer=layer, methods=methods, classes=classes, resize=resize, batch_size=batch_size)
    original = compute(model, images, **kw)
    rows = []
    for step in range(1, len(order) + 1):
        with randomised_weights(model, order[:step], seed=seed):
            rand = compute(model, images, **kw)
        for m in original.methods:
            a, b = original.maps[m], rand.maps[m]
            n, c = a.shape[:2]
            rho = spearman_per_map(a.reshape(n * c, -1), b.reshape(n * c, -1)).reshape(n, c)
            for i in range(n):
                for j, cls in enumerate(original.classes):
                    rows.append(
                        {
                            "step": step,
                            "randomised_layer": order[step - 1],
                            "method": m,
                            "image": i,
                            "class": cls,
                            "spearman_rho": float(rho[i, j]),
                            "model_hash": rand.provenance["model_hash"],
                        }
                    )
    return pd.DataFrame(rows)


def uniform_map(images, n_classes: int) -> np.ndarray:
    """All-ones maps ``(n_images, n_classes, *spatial)``: relevance spread evenly."""
    x = np.asarray(images)
    return np.ones((x.shape[0], n_classes, *x.shape[1:-1]), np.float32)


def intensity_map(images, n_classes: int) -> np.ndarray:
    """The image itself as a map (channel mean, shifted so its minimum is 0), repeated
    per class: what a CAM that only tracks brightness (e.g. a bright DWI lesion) gives."""
    x = np.asarray(images, np.float32).mean(axis=-1)
    axes = tuple(range(1, x.ndim))
    x = x - x.min(axis=axes, keepdims=True)
    return np.repeat(x[:, None], n_classes, axis=1)


def negative_controls(
    model,
    images,
    layer: str | None = None,
    classes: Sequence[int] | None = None,
    controls: Sequence[str] = CONTROLS,
    seed: int = 0,
    resize: bool = True,
    interpolation: str = "bilinear",
    batch_size: int = 32,
) -> CamResult:
    """Negative-control maps as a :class:`CamResult` whose "methods" are the controls.

    ``control_uniform`` and ``control_intensity`` are at input size (their raw maps too);
    ``control_random_model`` is Grad-CAM of the model with every weighted layer
    re-drawn (seeded; the model is restored afterwards), raw at layer resolution.
    """
    images = _check_images(model, images)
    classes = _check_classes(model, classes)
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown negative control(s) {unknown}; expected some of {CONTROLS}")
    layer = layer if layer is not None else default_cam_layer(model)
    real = compute(
        model,
        images,
        layer=layer,
        methods=("gradcam",),
        classes=classes,
        resize=resize,
        interpolation=interpolation,
        batch_size=batch_size,
    )
    maps, raw = {}, {}
    spatial_in = images.shape[1:-1]
    for c in controls:
        if c == "control_random_model":
            names = [la.name for la in weighted_layers(model)]
            with randomised_weights(model, names, seed=seed):
                r = compute(
                    model,
                    images,
                    layer=layer,
                    methods=("gradcam",),
                    classes=classes,
                    resize=False,
                    batch_size=batch_size,
                )
            raw[c] = r.raw["gradcam"]
            maps[c] = resize_maps(raw[c], spatial_in, interpolation) if resize else raw[c]
        else:
            fn = uniform_map if c == "control_uniform" else intensity_map
            full = fn(images, len(classes))
            raw[c] = full
            maps[c] = (
                full if resize else resize_maps(full, real.raw["gradcam"].shape[2:], interpolation)
            )
    prov = {
        **real.provenance,
        "methods": list(controls),
        "negative_controls": True,
        "random_model_seed": seed,
    }
    return CamResult(
        maps=maps,
        raw=raw,
        probabilities=real.probabilities,
        logits=real.logits,
        classes=real.classes,
        layer=layer,
        cell_size=real.cell_size,
        provenance=prov,
    )


def precision_effect(
    model,
    images,
    layer: str | None = None,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    classes=None,
    batch_size: int = 32,
) -> tuple[pd.DataFrame, CamResult, CamResult]:
    """How much the model's own (reduced) precision changes its maps.

    Computes the maps twice, in the model's dtype policy (``precision="model"``, e.g.
    bfloat16 for a ``mixed_bfloat16`` model) and in float32 (the default), and compares
    each raw map with its float32 counterpart.

    Returns
    -------
    table : DataFrame
        One row per image x class x method: ``image``, ``class``, ``method``,
        ``rel_max_diff`` (max |own - float32| / max float32 map; NaN for an all-zero float32
        map), ``spearman`` (rank correlation of the two maps), ``logit_diff`` (|own -
        float32| logit of that class).
    own, float32 : CamResult
        The two results (maps resized as by :func:`hypo.cam.compute`).
    """
    kw = dict(layer=layer, methods=methods, classes=classes, batch_size=batch_size)
    own = compute(model, images, precision="model", **kw)
    f32 = compute(model, images, **kw)
    rows = []
    n, k = f32.logits.shape[0], len(f32.classes)
    for m in f32.methods:
        a = own.raw[m].reshape(n, k, -1).astype(np.float64)
        b = f32.raw[m].reshape(n, k, -1).astype(np.float64)
        scale = b.max(axis=-1)
        rel = np.divide(
            np.abs(a - b).max(axis=-1), scale, out=np.full(scale.shape, np.nan), where=scale > 0
        )
        rho = spearman_per_map(a.reshape(n * k, -1), b.reshape(n * k, -1)).reshape(n, k)
        for i in range(n):
            for j, c in enumerate(f32.classes):
                rows.append(
                    {
                        "image": i,
                        "class": c,
                        "method": m,
                        "rel_max_diff": rel[i, j],
                        "spearman": rho[i, j],
                        "logit_diff": abs(float(own.logits[i, c]) - float(f32.logits[i, c])),
                    }
                )
    return pd.DataFrame(rows), own, f32
