"""Gradient-based class activation maps (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM).

Every map is computed from the pre-softmax score (the logit) of its class, for all
selected classes from one forward pass: a cached extractor model returns the evaluation
layer's activation ``A`` and the logits, and inside one ``tf.function`` the gradient
``g = dS_c/dA`` of each class's logit is taken from one persistent tape. Since the
backward pass only runs from the logits down to ``A``, a CAM costs little more than the
forward pass.

Notation: ``k`` channel, ``ij`` (``ijk`` in 3D) position, ``sum_ab`` a spatial sum.

- ``gradcam`` (Selvaraju et al.): ``w_k = mean_ij g``; ``ReLU(sum_k w_k A_k)``.
- ``gradcampp`` (Chattopadhyay et al. 2018, eq. 19 with ``Y = exp(S)``, whose exponential
  cancels): ``alpha = g^2 / (2 g^2 + sum_ab A_k * g^3)`` (0 where ``g == 0`` or the
  denominator is 0); ``w_k = sum_ij alpha * ReLU(g)``; ``ReLU(sum_k w_k A_k)``. With
  ``gradcampp_alpha_norm=True`` alpha is divided by its spatial sum per channel, as in the
  authors' code and tf-keras-vis.
- ``hirescam`` (Draelos & Carin): ``ReLU(sum_k g_k * A_k)`` elementwise.
- ``layercam`` (Jiang et al.): ``ReLU(sum_k ReLU(g_k) * A_k)`` elementwise.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util import library_versions as _versions
from .result import CamResult

METHODS = ("gradcam", "gradcampp", "hirescam", "layercam")
SCORE = "pre-softmax logit"
_CONV_CLASSES = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "SeparableConv2D",
    "DepthwiseConv2D",
    "Conv2DTranspose",
    "Conv3DTranspose",
)
_ELEMENTWISE_CLASSES = ("BatchNormalization", "LayerNormalization", "GroupNormalization")
_ACTIVATION_CLASSES = ("ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Softmax")


@dataclass(frozen=True)
class CamConfig:
    """How CAMs are computed (defaults follow the paper: Grad-CAM and Grad-CAM++ at the
    activation after the last convolution, all classes, bilinear resize to the input).

    Parameters
    ----------
    layer : str or None
        Evaluation layer; None = the model card's ``cam_layer``, else the last activation
        after the last convolution.
    methods : tuple of str
        Any of :data:`METHODS`.
    classes : tuple of int or None
        Class indices in the order wanted; None = every class in model order.
    resize : bool
        Resize maps to the input size.
    normalize : "none" | "image" | float | array
        ``"none"`` raw values; ``"image"`` min-max per map (display only; constant maps
        give 0); a number or array divides by a cohort-level scale.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resize kernel (trilinear etc. in 3D).
    gradcampp_alpha_norm : bool
        Divide Grad-CAM++ alphas by their spatial sum per channel (tf-keras-vis behaviour).
    batch_size : int
        Images per forward pass.
    """

    layer: str | None = None
    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    classes: tuple[int, ...] | None = None
    resize: bool = True
    normalize: Any = "none"
    interpolation: str = "bilinear"
    gradcampp_alpha_norm: bool = False
    batch_size: int = 32


# ---------------------------------------------------------------------------------------
# Model inspection
# ---------------------------------------------------------------------------------------


def _class_name(layer) -> str:
    return type(layer).__name__


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") if act is not None else ""


def _input_ndim(model) -> int:
    if len(model.inputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(model.inputs)} inputs; hypo.cam needs exactly one"
        )
    return len(model.inputs[0].shape)


def spatial_layers(model) -> list[str]:
    """Names of the layers whose output has spatial axes (the possible evaluation layers).

    A layer qualifies when its output has the input's rank (batch, spatial..., channels)
    and at least one spatial axis longer than 1.
    """
    nd = _input_ndim(model)
    names = []
    for layer in model.layers:
        if _class_name(layer) == "InputLayer":
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == nd and any(s is not None and s > 1 for s in shape[1:-1]):
            names.append(layer.name)
    return names


def default_cam_layer(model) -> str:
    """The model card's ``cam_layer`` if the model carries one, else the last activation
    that directly follows the last convolution (through normalisation layers only)."""
    card = getattr(model, "hypo_card", None)
    if isinstance(card, dict) and card.get("cam_layer"):
        return str(card["cam_layer"])
    layers = list(model.layers)
    conv_idx = [i for i, la in enumerate(layers) if _class_name(la) in _CONV_CLASSES]
    if not conv_idx:
        raise ValueError(
            f"model {model.name!r} has no convolution layer; name the evaluation layer "
            f"(layers with spatial output: {spatial_layers(model)})"
        )
    i = conv_idx[-1]
    chosen = layers[i].name
    for la in layers[i + 1 :]:
        cls = _class_name(la)
        if cls in _ACTIVATION_CLASSES:
            chosen = la.name
        elif cls not in _ELEMENTWISE_CLASSES:
            break
    return chosen


def _resolve_layers(model, layers: Sequence[str]) -> list:
    candidates = spatial_layers(model)
    out = []
    for name in layers:
        try:
            layer = model.get_layer(name)
        except ValueError:
            nested = [
                la.name for la in model.layers if hasattr(la, "layers") and _has_layer(la, name)
            ]
            hint = (
                f" It lives inside the nested model(s) {nested}; hypo.cam works on the top "
                "level only, so build the model flat (or call it on the nested model)."
                if nested
                else ""
            )
            raise ValueError(
                f"model {model.name!r} has no layer {name!r}.{hint} "
                f"Layers with spatial output: {candidates}"
            ) from None
        if name not in candidates:
            raise ValueError(
                f"layer {name!r} of model {model.name!r} has no spatial output "
                f"(output shape {tuple(layer.output.shape)}); choose one of {candidates}"
            )
        out.append(layer)
    return out


def _has_layer(container, name: str) -> bool:
    try:
        container.get_layer(name)
        return True
    except (ValueError, AttributeError):
        return False


def _producer(tensor):
    hist = getattr(tensor, "_keras_history", None)
    return hist[0] if hist is not None else None


def _score_source(model):
    """Find the pre-softmax score: ``(tensor, head, description)``.

    ``head`` maps ``tensor`` to the logits; it is the identity except for a final
    ``Dense(activation="softmax"/"sigmoid")``, whose pre-activation is recomputed from its
    own kernel and bias (no copy of the model is made).
    """
    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; expected one")
    if _has_layer(model, "logits"):
        return model.get_layer("logits").output, None, "output of layer 'logits'"
    out = model.outputs[0]
    layer = _producer(out)
    cls = _class_name(layer) if layer is not None else ""
    act = _activation_name(layer) if layer is not None else ""
    if cls == "Softmax" or (cls == "Activation" and act in ("softmax", "sigmoid")):
        return layer.input, None, f"input of final {cls} layer {layer.name!r}"
    if cls == "Dense" and act in ("softmax", "sigmoid"):
        return layer.input, layer, f"pre-activation of final Dense layer {layer.name!r}"
    if cls == "Dense" and act == "linear":
        return out, None, f"output of final linear Dense layer {layer.name!r}"
    raise ValueError(
        f"cannot find the pre-softmax score of model {model.name!r}: its output layer "
        f"{getattr(layer, 'name', '?')!r} ({cls}, activation {act!r}) is neither a layer named "
        "'logits', a Softmax, nor a Dense layer; name the logit layer 'logits'"
    )


def _final_is_probability(model) -> bool:
    layer = _producer(model.outputs[0])
    if layer is None:
        return False
    cls = _class_name(layer)
    return cls == "Softmax" or _activation_name(layer) in ("softmax", "sigmoid")


def model_hash(model, length: int = 16) -> str:
    """SHA-256 of the model's weights (names, shapes and bytes), first ``length`` hex digits."""
    h = hashlib.sha256()
    for w in model.weights:
        arr = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{w.path}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:length]


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape a map (recorded in its provenance)."""
    return _versions(("hypo", "tensorflow", "keras", "numpy", "scipy", "opencv"))


# ---------------------------------------------------------------------------------------
# The compiled core, cached per model + layers + classes + methods
# ---------------------------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cam_maps(a, g, methods, alpha_norm):
    """Maps of one class at one layer; ``a``, ``g``: (batch, *spatial, channels)."""
    import tensorflow as tf

    axes = list(range(1, len(a.shape) - 1))
    out = {}
    if "gradcam" in methods:
        w = tf.reduce_mean(g, axis=axes, keepdims=True)
        out["gradcam"] = tf.nn.relu(tf.reduce_sum(w * a, axis=-1))
    if "gradcampp" in methods:
        # Eq. 19 after dividing numerator and denominator by g^2 (exp(S) cancels): no
        # exponential, so no overflow for large logits.
        s = tf.reduce_sum(a, axis=axes, keepdims=True)
        denom = 2.0 + s * g
        ok = tf.logical_and(tf.not_equal(g * g, 0.0), tf.not_equal(denom, 0.0))
        alpha = tf.where(ok, 1.0 / tf.where(ok, denom, tf.ones_like(denom)), 0.0)
        if alpha_norm:
            z = tf.reduce_sum(alpha, axis=axes, keepdims=True)
            alpha = alpha / tf.where(tf.equal(z, 0.0), tf.ones_like(z), z)
        w = tf.reduce_sum(alpha * tf.nn.relu(g), axis=axes, keepdims=True)
        out["gradcampp"] = tf.nn.relu(tf.reduce_sum(w * a, axis=-1))
    if "hirescam" in methods:
        out["hirescam"] = tf.nn.relu(tf.reduce_sum(g * a, axis=-1))
    if "layercam" in methods:
        out["layercam"] = tf.nn.relu(tf.reduce_sum(tf.nn.relu(g) * a, axis=-1))
    return out


def _get_core(model, layer_names, classes, methods, alpha_norm):
    import keras
    import tensorflow as tf

    per_model = _CACHE.setdefault(model, {})
    ext_key = ("extractor", tuple(layer_names))
    if ext_key not in per_model:
        layers = _resolve_layers(model, layer_names)
        score_tensor, dense, score_desc = _score_source(model)
        extractor = keras.Model(
            model.inputs, [*(la.output for la in layers), score_tensor, model.outputs[0]]
        )
        per_model[ext_key] = (extractor, dense, score_desc)
    extractor, dense, score_desc = per_model[ext_key]
    key = ("fn", tuple(layer_names), tuple(classes), tuple(methods), bool(alpha_norm))
    if key not in per_model:
        n_layers = len(layer_names)
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)

        @tf.function(input_signature=[spec])
        def core(x):
            with tf.GradientTape(persistent=True) as tape:
                outs = extractor(x, training=False)
                acts = list(outs[:n_layers])
                for a in acts:
                    tape.watch(a)
                logits = outs[n_layers]
                if dense is not None:
                    logits = tf.matmul(logits, tf.cast(dense.kernel, logits.dtype))
                    if dense.use_bias:
                        logits = logits + tf.cast(dense.bias, logits.dtype)
                scores = [tf.reduce_sum(logits[:, c]) for c in classes]
            # Samples are independent (inference mode), so the gradient of the batch sum
            # is each sample's own gradient.
            per_layer = [{m: [] for m in methods} for _ in range(n_layers)]
            for s in scores:
                grads = tape.gradient(s, acts)
                for li, (a, g) in enumerate(zip(acts, grads)):
                    if g is None:
                        g = tf.zeros_like(a)
                    maps = _cam_maps(
                        tf.cast(a, tf.float32), tf.cast(g, tf.float32), methods, alpha_norm
                    )
                    for m in methods:
                        per_layer[li][m].append(maps[m])
            del tape
            stacked = [{m: tf.stack(v[m], axis=1) for m in methods} for v in per_layer]
            return stacked, tf.cast(logits, tf.float32), tf.cast(outs[n_layers + 1], tf.float32)

        per_model[key] = core
    return per_model[key], score_desc


# ---------------------------------------------------------------------------------------
# Validation and the public entry points
# ---------------------------------------------------------------------------------------


def _check_images(model, images) -> np.ndarray:
    x = np.asarray(images)
    want = tuple(model.inputs[0].shape[1:])
    if x.ndim != len(want) + 1 or any(w is not None and w != s for w, s in zip(want, x.shape[1:])):
        hint = ""
        if x.ndim == len(want) and want[-1] == 1:
            hint = " (add the channel axis: images[..., None])"
        raise ValueError(
            f"images have shape {x.shape}; model {model.name!r} expects (n_images, "
            f"{', '.join(str(w) for w in want)}){hint}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"images have dtype {x.dtype}; expected a numeric array")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"images contain NaN or inf values (image indices {idx[:10].tolist()}"
            f"{' ...' if len(idx) > 10 else ''}); clean or drop them first"
        )
    return x


def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown CAM method(s) {unknown}; expected some of {METHODS}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {methods} contain duplicates")
    return methods


def _n_classes(model) -> int:
    score_tensor, dense, _ = _score_source(model)
    return int(dense.units) if dense is not None else int(score_tensor.shape[-1])


def _check_classes(model, classes) -> tuple[int, ...]:
    n = _n_classes(model)
    if classes is None:
        return tuple(range(n))
    if np.isscalar(classes):
        classes = [classes]
    out = []
    for c in classes:
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= c < n:
            raise ValueError(
                f"class index {c!r} is out of range: model {model.name!r} has {n} classes "
                f"(0..{n - 1})"
            )
        out.append(int(c))
    if len(set(out)) != len(out) or not out:
        raise ValueError(f"classes {list(classes)} must be a non-empty list without duplicates")
    return tuple(out)


def _normalise(maps: np.ndarray, normalize, n_classes: int) -> tuple[np.ndarray, Any]:
    if isinstance(normalize, str):
        if normalize == "none":
            return maps, "none"
        if normalize == "image":
            axes = tuple(range(2, maps.ndim))
            lo = maps.min(axis=axes, keepdims=True)
            span = maps.max(axis=axes, keepdims=True) - lo
            out = np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)
            return out, "image (min-max per map; constant maps -> 0)"
        raise ValueError(f"normalize={normalize!r}; expected 'none', 'image', or a scale")
    scale = np.asarray(normalize, dtype=np.float32)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"normalize scale must be finite and > 0, got {normalize!r}")
    if scale.ndim == 1 and scale.shape[0] == n_classes and maps.ndim > 2:
        scale_b = scale.reshape((1, n_classes) + (1,) * (maps.ndim - 2))
    else:
        scale_b = scale
    try:
        out = maps / scale_b
    except ValueError:
        raise ValueError(
            f"normalize scale of shape {scale.shape} does not broadcast to maps {maps.shape}"
        ) from None
    return out.astype(np.float32), {"divided_by_scale": scale.tolist()}


def _run(model, images, layer_names, methods, classes, alpha_norm, batch_size):
    """Raw maps per layer, logits and probabilities, batch by batch."""
    core, score_desc = _get_core(model, layer_names, classes, methods, alpha_norm)
    raws = [{m: [] for m in methods} for _ in layer_names]
    logits, outs = [], []
    for start in range(0, len(images), batch_size):
        stacked, lg, out = core(images[start : start + batch_size])
        for li, d in enumerate(stacked):
            for m in methods:
                raws[li][m].append(d[m].numpy())
        logits.append(lg.numpy())
        outs.append(out.numpy())
    raws = [{m: np.concatenate(v[m]) for m in methods} for v in raws]
    return raws, np.concatenate(logits), np.concatenate(outs), score_desc


def _probabilities(model, logits, outputs):
    if _final_is_probability(model):
        return outputs
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _assemble(
    model, images, layer, raw, logits, probs, classes, methods, cfg, score_desc, mhash
) -> CamResult:
    from .resize import describe_interpolation, resize_maps

    in_spatial = tuple(int(s) for s in images.shape[1:-1])
    lay_spatial = tuple(int(s) for s in next(iter(raw.values())).shape[2:])
    cell = tuple(float(i) / float(s) for i, s in zip(in_spatial, lay_spatial))
    maps = {}
    norm_desc = "none"
    for m in methods:
        r = raw[m]
        if cfg.resize:
            r = resize_maps(r, in_spatial, cfg.interpolation)
        maps[m], norm_desc = _normalise(r, cfg.normalize, len(classes))
    prov = {
        "model_hash": mhash,
        "model_name": model.name,
        "layer": layer,
        "methods": list(methods),
        "classes": list(classes),
        "score": SCORE,
        "score_source": score_desc,
        "normalisation": norm_desc,
        "gradcampp_alpha_norm": bool(cfg.gradcampp_alpha_norm),
        "resized": bool(cfg.resize),
        "interpolation": describe_interpolation(cfg.interpolation, len(in_spatial))
        if cfg.resize
        else "none (layer resolution)",
        "input_shape": list(images.shape[1:]),
        "layer_shape": list(lay_spatial),
        "training": False,
        "versions": library_versions(),
    }
    return CamResult(
        maps=maps,
        raw=raw,
        probabilities=probs,
        logits=logits,
        classes=tuple(classes),
        layer=layer,
        cell_size=cell,
        provenance=prov,
    )


def compute(
    model,
    images,
    layer: str | None = None,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    classes: Sequence[int] | None = None,
    resize: bool = True,
    normalize: Any = "none",
    interpolation: str = "bilinear",
    gradcampp_alpha_norm: bool = False,
    batch_size: int = 32,
) -> CamResult:
    """Class activation maps of ``images`` for every selected class and method.

    Parameters
    ----------
    model : keras.Model
        A functional model with one input and one output. The score is always the
        pre-softmax logit: the output of a layer named ``logits`` if there is one, else the
        input of a final Softmax, else the pre-activation of a final
        ``Dense(activation="softmax")``, else a final linear Dense.
    images : ndarray, shape (n_images, *input_shape)
        Batch first, channels last, e.g. ``(n, 192, 192, 1)`` or ``(n, 128, 128, 28, 1)``.
    layer : str, optional
        Evaluation layer (any layer with spatial output). Default: the model card's
        ``cam_layer``, else the last activation after the last convolution.
    methods : sequence of str
        Any of ``"gradcam"``, ``"gradcampp"``, ``"hirescam"``, ``"layercam"``.
    classes : sequence of int, optional
        Class indices, in the order wanted on axis 1 of the maps; default all.
    resize : bool
        Resize maps to the input size (raw layer-resolution maps are kept in ``.raw``).
    normalize : "none" | "image" | float | array
        See :class:`CamConfig`. A 1D array of length ``len(classes)`` is a per-class scale.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resize kernel (recorded in the provenance).
    gradcampp_alpha_norm : bool
        Grad-CAM++ alphas divided by their per-channel spatial sum (tf-keras-vis behaviour);
        off by default (eq. 19 as printed).
    batch_size : int
        Images per forward pass.

    Returns
    -------
    CamResult
        ``res[method]`` has shape ``(n_images, n_classes_selected, *spatial)``.
    """
    cfg = CamConfig(
        layer=layer,
        methods=_check_methods(methods),
        classes=None,
        resize=bool(resize),
        normalize=normalize,
        interpolation=interpolation,
        gradcampp_alpha_norm=bool(gradcampp_alpha_norm),
        batch_size=int(batch_size),
    )
    return compute_with_config(model, images, cfg, classes=classes)


def compute_with_config(model, images, cfg: CamConfig, classes=None) -> CamResult:
    """:func:`compute` driven by a :class:`CamConfig` (``classes`` overrides ``cfg.classes``)."""
    from .resize import canonical_interpolation

    images = _check_images(model, images)
    methods = _check_methods(cfg.methods)
    classes = _check_classes(model, cfg.classes if classes is None else classes)
    canonical_interpolation(cfg.interpolation)
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    layer = cfg.layer if cfg.layer is not None else default_cam_layer(model)
    raws, logits, outs, score_desc = _run(
        model, images, [layer], methods, classes, cfg.gradcampp_alpha_norm, cfg.batch_size
    )
    probs = _probabilities(model, logits, outs)
    return _assemble(
        model,
        images,
        layer,
        raws[0],
        logits,
        probs,
        classes,
        methods,
        cfg,
        score_desc,
        model_hash(model),
    )


def score_gradients(model, images, layer: str | None = None, classes=None, batch_size: int = 32):
    """Activation of ``layer`` and the gradient of each selected class's logit w.r.t. it.

    Returns
    -------
    activations : ndarray, shape (n_images, *layer_spatial, channels)
    gradients : ndarray, shape (n_images, n_selected_classes, *layer_spatial, channels)
        ``dS_c / dA`` with ``S_c`` the pre-softmax logit.
    """
    import tensorflow as tf

    images = _check_images(model, images)
    classes = _check_classes(model, classes)
    layer = layer if layer is not None else default_cam_layer(model)
    _get_core(model, [layer], classes, ("gradcam",), False)  # builds + caches the extractor
    per_model = _CACHE[model]
    extractor, dense, _ = per_model[("extractor", (layer,))]
    key = ("grad", layer, classes)
    if key not in per_model:
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)

        @tf.function(input_signature=[spec])
        def grad_fn(x):
            with tf.GradientTape(persistent=True) as tape:
                outs = extractor(x, training=False)
                a = outs[0]
                tape.watch(a)
                logits = outs[1]
                if dense is not None:
                    logits = tf.matmul(logits, dense.kernel)
                    if dense.use_bias:
                        logits = logits + dense.bias
                scores = [tf.reduce_sum(logits[:, c]) for c in classes]
            gs = [tape.gradient(s, a) for s in scores]
            gs = [tf.zeros_like(a) if g is None else g for g in gs]
            return a, tf.stack(gs, axis=1)

        per_model[key] = grad_fn
    acts, grads = [], []
    for start in range(0, len(images), batch_size):
        a, g = per_model[key](images[start : start + batch_size])
        acts.append(a.numpy())
        grads.append(g.numpy())
    return np.concatenate(acts), np.concatenate(grads)
