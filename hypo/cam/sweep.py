"""Layer sweep: maps at every layer with spatial output, from one forward + backward pass.

This is the paper's layer-iteration experiment (section 4.1.3): the same image explained
at each evaluation layer in turn, to see where class-discriminating features appear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .engine import (
    CamConfig,
    _assemble,
    _check_classes,
    _check_images,
    _check_methods,
    _probabilities,
    _run,
    model_hash,
    spatial_layers,
)
from .resize import canonical_interpolation
from .result import CamResult


def layer_sweep(
    model,
    images,
    layers: Sequence[str] | None = None,
    methods: Sequence[str] = ("gradcam",),
    classes: Sequence[int] | None = None,
    resize: bool = True,
    normalize: Any = "none",
    interpolation: str = "bilinear",
    gradcampp_alpha_norm: bool = False,
    batch_size: int = 32,
) -> dict[str, CamResult]:
    """CAMs of ``images`` at several layers at once.

    One extractor model returns every requested layer's activation and the logits; one
    persistent tape gives, per class, the gradients w.r.t. all layers in one backward pass.

    Parameters
    ----------
    layers : sequence of str, optional
        Evaluation layers; default every layer with spatial output
        (:func:`hypo.cam.spatial_layers`), in model order.
    Other parameters
        As in :func:`hypo.cam.compute`.

    Returns
    -------
    dict of str -> CamResult
        One result per layer, in the order of ``layers``.
    """
    images = _check_images(model, images)
    methods = _check_methods(methods)
    classes = _check_classes(model, classes)
    canonical_interpolation(interpolation)
    layers = list(spatial_layers(model) if layers is None else layers)
    if not layers:
        raise ValueError(f"model {model.name!r} has no layer with spatial output")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} contain duplicates")
    cfg = CamConfig(
        methods=methods,
        resize=resize,
        normalize=normalize,
        interpolation=interpolation,
        gradcampp_alpha_norm=gradcampp_alpha_norm,
        batch_size=batch_size,
    )
    raws, logits, outs, score_desc = _run(
        model, images, layers, methods, classes, gradcampp_alpha_norm, batch_size
    )
    probs = _probabilities(model, logits, outs)
    mhash = model_hash(model)
    return {
        name: _assemble(
            model, images, name, raw, logits, probs, classes, methods, cfg, score_desc, mhash
        )
        for name, raw in zip(layers, raws)
    }
