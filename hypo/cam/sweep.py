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
    _class_names,
    _layer_key,
    _model_inputs,
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
    layers: Sequence | None = None,
    methods: Sequence[str] = ("gradcam",),
    classes: Sequence[int] | None = None,
    resize: bool = True,
    normalize: Any = "none",
    interpolation: str = "bilinear",
    gradcampp_alpha_norm: bool = False,
    batch_size: int = 32,
    *,
    inputs: dict | None = None,
    image_input: str | None = None,
    class_names: Sequence[str] | None = None,
    score_layer=None,
    precision: str = "float32",
) -> dict[str, CamResult]:
    """CAMs of ``images`` at several layers at once.

    One extractor model returns every requested layer's activation and the logits; one
    persistent tape gives, per class, the gradients w.r.t. all layers in one backward pass.

    Parameters
    ----------
    layers : sequence of str or keras.Layer, optional
        Evaluation layers (paths into nested models allowed); default every layer with
        spatial output on the way to the score (:func:`hypo.cam.spatial_layers`), in
        model order.
    Other parameters
        As in :func:`hypo.cam.compute`.

    Returns
    -------
    dict of str -> CamResult
        One result per layer, in the order of ``layers``.
    """
    images = _check_images(model, images, image_input)
    arrays = _model_inputs(model, images, image_input, inputs)
    methods = _check_methods(methods)
    score_layer = None if score_layer is None else _layer_key(model, score_layer)
    names = _class_names(model, class_names, score_layer)
    classes = _check_classes(model, classes, score_layer, names)
    canonical_interpolation(interpolation)
    if layers is None:
        layers = spatial_layers(model, score_layer, image_input)
    layers = [_layer_key(model, la) for la in layers]
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
        image_input=image_input,
        score_layer=score_layer,
        precision=precision,
    )
    raws, logits, outs, probe = _run(
        model,
        arrays,
        layers,
        methods,
        classes,
        gradcampp_alpha_norm,
        batch_size,
        score_layer,
        image_input,
        precision,
    )
    probs = _probabilities(probe, logits, outs)
    mhash = model_hash(model)
    extra = {"layer_choice": "layer sweep", "class_names": names}
    return {
        path: _assemble(
            model, images, path, raw, logits, probs, classes, methods, cfg, probe, mhash, extra
        )
        for path, raw in zip(probe.paths, raws)
    }
