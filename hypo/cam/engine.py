"""Gradient-based class activation maps (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM).

Every map is computed from the pre-softmax score (the logit) of its class, for all
selected classes from one forward pass: a cached extractor model returns the evaluation
layer's activation ``A`` and the logits, and inside one ``tf.function`` the gradient
``g = dS_c/dA`` of each class's logit is taken from one persistent tape. Since the
backward pass only runs from the logits down to ``A``, a CAM costs little more than the
forward pass.

The extractor runs the graph traced by :mod:`hypo.cam.graph`, so ``A`` may be a layer
inside a nested model (``"resnet50/conv5_block3_out"``) or inside a ``TimeDistributed``
encoder (per-slice maps of a bag's score); other model inputs are fed unchanged. Maps are
computed in float32: a mixed-precision model runs as its float32 twin (same weights).

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

import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .._util import library_versions as _versions
from .._util import weights_hash
from .graph import (
    SEP,
    Extractor,
    check_functional,
    float32_twin,
    path_of,
    precision_policies,
    resolve_path,
    trace,
)
from .result import CamResult

METHODS = ("gradcam", "gradcampp", "hirescam", "layercam")
PRECISIONS = ("float32", "model")
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
    image_input : str or None
        Name of the model input the images go to (multi-input models).
    score_layer : str or None
        Layer whose output is the score instead of the logits (e.g. an ordinal head's
        linear predictor).
    precision : {"float32", "model"}
        ``"float32"``: maps in float32 whatever the model's dtype policy (a mixed-precision
        model is run as a float32 clone with its weights). ``"model"``: in the model's own
        policy, only to measure what reduced precision does to the maps.
    """

    layer: str | None = None
    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    classes: tuple[int, ...] | None = None
    resize: bool = True
    normalize: Any = "none"
    interpolation: str = "bilinear"
    gradcampp_alpha_norm: bool = False
    batch_size: int = 32
    image_input: str | None = None
    score_layer: str | None = None
    precision: str = "float32"


# ---------------------------------------------------------------------------------------
# Model inspection (the graph itself, nested models included, is read by .graph)
# ---------------------------------------------------------------------------------------


def _class_name(layer) -> str:
    return type(layer).__name__


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") if act is not None else ""


def _image_index(model, image_input=None) -> int:
    """Position of the image input among ``model.inputs``."""
    check_functional(model)
    names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(model.inputs)]
    if image_input is not None:
        if image_input not in names:
            raise ValueError(
                f"model {model.name!r} has no input named {image_input!r}; its inputs are {names}"
            )
        return names.index(image_input)
    if len(names) == 1:
        return 0
    spatial = [i for i, t in enumerate(model.inputs) if len(t.shape) >= 4]
    if len(spatial) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(names)} inputs {names}; name the image input to "
            "explain with image_input= (the others are passed with inputs= and held fixed)"
        )
    return spatial[0]


def _input_ndim(model, image_input=None) -> int:
    return len(model.inputs[_image_index(model, image_input)].shape)


def _is_spatial(call, nd: int) -> bool:
    if isinstance(call.layer, keras.layers.TimeDistributed):
        return False  # its inner layers give per-slice maps
    shape = call.outputs[0].shape
    want = nd - 1 if call.time_steps else nd
    return len(shape) == want and any(s is not None and s > 1 for s in shape[1:-1])


def _candidate_calls(model, score_layer=None, image_input=None) -> list:
    graph = trace(model)
    nd = _input_ndim(model, image_input)
    score = _score_source(model, score_layer)
    upstream = graph.upstream(score.tensor)
    out, seen = [], set()
    for c in graph.calls:
        if _class_name(c.layer) == "InputLayer" or c.path in seen:
            continue
        if id(c.outputs[0]) in upstream and _is_spatial(c, nd):
            seen.add(c.path)
            out.append(c)
    return out


def spatial_layers(model, score_layer: str | None = None, image_input: str | None = None):
    """Paths of the layers with spatial output on the way to the score (the possible
    evaluation layers), nested models included (``"resnet50/conv5_block3_out"``).

    A layer qualifies when its output has the image input's rank (batch, spatial...,
    channels), one less inside a ``TimeDistributed`` encoder (per-slice maps), and at least
    one spatial axis longer than 1.
    """
    return [c.path for c in _candidate_calls(model, score_layer, image_input)]


_PASS_THROUGH = _ELEMENTWISE_CLASSES + ("Add", "Concatenate")


def _automatic_layer(model, score_layer=None, image_input=None) -> str:
    cands = [c for c in _candidate_calls(model, score_layer, image_input) if not c.container]
    conv_idx = [i for i, c in enumerate(cands) if _class_name(c.layer) in _CONV_CLASSES]
    if not conv_idx:
        raise ValueError(
            f"model {model.name!r} has no convolution layer on the way to its score; name the "
            f"evaluation layer (layers with spatial output: {[c.path for c in cands]})"
        )
    i = conv_idx[-1]
    chosen = cands[i].path
    for c in cands[i + 1 :]:
        cls = _class_name(c.layer)
        if cls in _ACTIVATION_CLASSES:
            chosen = c.path
        elif cls not in _PASS_THROUGH:
            break
    return chosen


def default_cam_layer(model, score_layer: str | None = None, image_input: str | None = None):
    """The model card's ``cam_layer`` if the model carries one, else the last activation
    that follows the last convolution on the way to the score (through normalisation,
    residual additions and concatenations only), nested models included."""
    card = getattr(model, "hypo_card", None)
    if isinstance(card, dict) and card.get("cam_layer"):
        return str(card["cam_layer"])
    return _automatic_layer(model, score_layer, image_input)


def _layer_choice(model, layer, score_layer, image_input) -> tuple[str, str]:
    """``(layer path, how it was chosen)``."""
    if layer is not None:
        return _layer_key(model, layer), "given"
    card = getattr(model, "hypo_card", None)
    if isinstance(card, dict) and card.get("cam_layer"):
        return str(card["cam_layer"]), "model card cam_layer"
    return (
        _automatic_layer(model, score_layer, image_input),
        "automatic: last activation after the last convolution on the way to the score",
    )


def _layer_key(model, layer) -> str:
    return layer if isinstance(layer, str) else path_of(model, layer)


def _resolve_layers(model, layers, score_layer=None, image_input=None) -> list:
    """The traced calls of ``layers`` (paths, names or layer objects) in ``model``."""
    graph = trace(model)
    cands = _candidate_calls(model, score_layer, image_input)
    cand_paths = [c.path for c in cands]
    out = []
    for name in layers:
        name = _layer_key(model, name)
        try:
            path = resolve_path(graph, model, name)
        except KeyError:
            raise ValueError(
                f"model {model.name!r} has no layer {name!r}. Layers with spatial output: "
                f"{cand_paths}"
            ) from None
        calls = graph.by_path[path]
        if len({id(c.outputs[0]) for c in calls}) > 1:
            raise ValueError(
                f"layer {path!r} is called {len(calls)} times in model {model.name!r}; a CAM "
                "at a shared layer is ambiguous: choose a layer that is called once"
            )
        call = calls[0]
        if path not in cand_paths:
            if isinstance(call.layer, keras.layers.TimeDistributed):
                inner = [p for p in cand_paths if p.startswith(path + SEP)]
                raise ValueError(
                    f"layer {path!r} is a TimeDistributed wrapper; per-slice maps come from a "
                    f"layer inside it: one of {inner}"
                )
            raise ValueError(
                f"layer {path!r} of model {model.name!r} has no spatial output on the way to "
                f"the score (output shape {tuple(call.outputs[0].shape)}); choose one of "
                f"{cand_paths}"
            )
        out.append(call)
    return out


@dataclass(frozen=True)
class _Score:
    """Where the pre-activation score comes from.

    ``head`` maps ``tensor`` to the logits; it is None except for a final
    ``Dense(activation="softmax"/"sigmoid")``, whose pre-activation is recomputed from its
    own kernel and bias (no copy of the model is made). ``binary``: a single sigmoid unit,
    explained as two classes, negative (score ``-z``) and positive (``z``).
    """

    tensor: Any
    head: Any
    description: str
    binary: bool
    probability_output: bool
    n_classes: int
    from_score_layer: bool = False


def _score_source(model, score_layer: str | None = None) -> _Score:
    graph = trace(model)
    if len(graph.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(graph.outputs)} outputs; expected one")
    out = graph.outputs[0]
    final = graph.producer.get(id(out))
    layer = final.layer if final is not None else None
    cls = _class_name(layer) if layer is not None else ""
    act = _activation_name(layer) if layer is not None else ""
    prob_out = cls == "Softmax" or act in ("softmax", "sigmoid")
    if score_layer is not None:
        try:
            path = resolve_path(graph, model, _layer_key(model, score_layer))
        except KeyError:
            raise ValueError(
                f"model {model.name!r} has no layer {score_layer!r} to take the score from"
            ) from None
        t = graph.by_path[path][0].outputs[0]
        if len(t.shape) != 2:
            raise ValueError(
                f"score layer {path!r} has output shape {tuple(t.shape)}; a score layer "
                "gives one vector per image, shape (batch, n_scores)"
            )
        desc = f"output of score layer {path!r}"
        return _Score(t, None, desc, False, False, int(t.shape[-1]), from_score_layer=True)
    logit_paths = [p for p in graph.by_path if p.rsplit(SEP, 1)[-1] == "logits"]
    if "logits" in graph.by_path or len(logit_paths) == 1:
        path = "logits" if "logits" in graph.by_path else logit_paths[0]
        t = graph.by_path[path][0].outputs[0]
        binary = int(t.shape[-1]) == 1 and act == "sigmoid"
        n = 2 if binary else int(t.shape[-1])
        return _Score(t, None, f"output of layer {path!r}", binary, prob_out, n)
    if cls == "Softmax" or (cls == "Activation" and act in ("softmax", "sigmoid")):
        t = _score_input(final)
        binary = act == "sigmoid" and int(t.shape[-1]) == 1
        desc = f"input of final {cls} layer {final.path!r}"
        return _Score(t, None, desc, binary, True, 2 if binary else int(t.shape[-1]))
    if cls == "Dense" and act in ("softmax", "sigmoid"):
        t = _score_input(final)
        binary = act == "sigmoid" and int(layer.units) == 1
        desc = f"pre-activation of final Dense layer {final.path!r}"
        return _Score(t, layer, desc, binary, True, 2 if binary else int(layer.units))
    if cls == "Dense" and act == "linear":
        desc = f"output of final linear Dense layer {final.path!r}"
        return _Score(out, None, desc, False, False, int(out.shape[-1]))
    raise ValueError(
        f"cannot find the pre-softmax score of model {model.name!r}: its output layer "
        f"{getattr(layer, 'name', '?')!r} ({cls}, activation {act!r}) is neither a layer named "
        "'logits', a Softmax, nor a Dense layer; name the logit layer 'logits' or pass "
        "score_layer= (e.g. an ordinal head's linear predictor)"
    )


def _score_input(call):
    """The (first) input tensor of a traced leaf call."""
    hist = call.outputs[0]._keras_history
    return hist[0]._inbound_nodes[hist[1]].input_tensors[0]


#: SHA-256 of the model's weights (names, shapes and bytes); :func:`hypo._util.weights_hash`.
model_hash = weights_hash


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape a map (recorded in its provenance)."""
    return _versions(("hypo", "tensorflow", "keras", "numpy", "scipy", "opencv"))


# ---------------------------------------------------------------------------------------
# The compiled core, cached per model + layers + classes + methods
# ---------------------------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cam_maps(a, g, methods, alpha_norm):
    """Maps of one class at one layer; ``a``, ``g``: (batch, *spatial, channels). For
    batches of any size (a patient's bag): a large layer's XLA weights are traced once per
    layer shape, not once per batch size."""
    maps = _class_maps(a, [g], methods, alpha_norm, any_batch=True)
    return {m: v[:, 0] for m, v in maps.items()}


def _class_maps(a, grads, methods, alpha_norm, any_batch=False):
    """Maps of every class at one layer, each method's of shape (batch, n_classes,
    *spatial); ``a``: (batch, *spatial, channels), ``grads``: one gradient of ``a``'s shape
    per class.

    Grad-CAM and Grad-CAM++ are channel weightings of ``A``: their per-class weights
    (batch, channels) are reduced from each gradient (in one XLA-fused pass for a large
    layer, :func:`_weigher`), and every class's map of both methods comes from one batched
    matrix product with ``A``, so ``A`` is read once, not once per class and method.
    """
    channel = [m for m in ("gradcam", "gradcampp") if m in methods]
    out = {}
    if channel:
        k = len(channel) * len(grads)
        direct = tuple(m for m in channel if m != "gradcampp" or not alpha_norm)
        weights = _weigher(a, len(grads), direct, any_batch)(a, grads) if direct else {}
        if "gradcampp" in channel and alpha_norm:
            weights["gradcampp"] = _normalised_gradcampp_weights(a, grads)
        w = tf.concat([weights[m] for m in channel], axis=1)  # (batch, k, channels)
        shape = tf.shape(a)
        flat = tf.reshape(a, tf.stack([shape[0], -1, shape[-1]]))
        maps = tf.nn.relu(tf.matmul(w, flat, transpose_b=True))  # (batch, k, positions)
        maps = tf.reshape(maps, tf.concat([shape[:1], [k], shape[1:-1]], 0))
        for i, m in enumerate(channel):
            out[m] = maps[:, i * len(grads) : (i + 1) * len(grads)]
    if "hirescam" in methods:
        out["hirescam"] = tf.stack(
            [tf.nn.relu(tf.reduce_sum(g * a, axis=-1)) for g in grads], axis=1
        )
    if "layercam" in methods:
        out["layercam"] = tf.stack(
            [tf.nn.relu(tf.reduce_sum(tf.nn.relu(g) * a, axis=-1)) for g in grads], axis=1
        )
    return {m: out[m] for m in methods}


#: Gradient elements per image (all classes) from which the channel weights are computed
#: by XLA (:data:`_fused_channel_weights`); below it, compiling costs more than it saves.
FUSE_MIN_ELEMENTS = 2**16


def _weigher(a, n_classes: int, methods, any_batch: bool = False):
    """``(a, grads) -> weights``: :func:`_channel_weights` compiled with XLA for a large
    layer, else as TensorFlow ops.

    Grad-CAM++ takes five passes over each gradient as separate ops; XLA fuses them and the
    Grad-CAM mean into one. On the paper's model (12 x 12 x 512 at the last block, 3
    classes, batch 32) that cut the time from the end of the forward pass to the end of
    the CAM step from 19 to 7 ms (median of 6 calls each, load 4.4 on 2 cores) and about
    6 ms of CPU time per batch, for about 1.1 s of compiling on the first call and 0.2-0.3 s
    at each new batch size; a small layer keeps the ops and compiles nothing.

    ``any_batch``: the batch size varies call by call (bags of per-patient slice counts);
    the XLA function is traced once for any batch size (:func:`_fused_any_batch`), where
    :data:`_fused_channel_weights` would retrace at every new size (TensorFlow's
    "retracing" warnings). The same fused computation: the same weights to the bit.
    """
    methods = tuple(methods)
    dims = a.shape[1:]
    if any(d is None for d in dims):
        return lambda a, grads: _channel_weights(a, grads, methods)
    big = int(np.prod(dims)) * n_classes >= FUSE_MIN_ELEMENTS
    if not big:
        return lambda a, grads: _channel_weights(a, grads, methods)
    if any_batch:
        return _fused_any_batch(tuple(int(d) for d in dims), n_classes, methods)
    return lambda a, grads: _fused_channel_weights(a, grads, methods)


@functools.lru_cache(maxsize=64)
def _fused_any_batch(dims: tuple, n_classes: int, methods: tuple):
    """:func:`_channel_weights` compiled with XLA for activations ``(None, *dims)``."""
    spec = tf.TensorSpec([None, *dims], tf.float32)

    @tf.function(jit_compile=True, input_signature=[spec, [spec] * n_classes])
    def weights(a, grads):
        return _channel_weights(a, grads, methods)

    return weights


def _channel_weights(a, grads, methods):
    """Channel weights of Grad-CAM and/or Grad-CAM++ (``methods``), each (batch, classes,
    channels), from one gradient per class."""
    axes = list(range(1, len(a.shape) - 1))
    out = {}
    if "gradcam" in methods:
        out["gradcam"] = tf.stack([tf.reduce_mean(g, axis=axes) for g in grads], axis=1)
    if "gradcampp" in methods:
        # Eq. 19 after dividing numerator and denominator by g^2 (exp(S) cancels): no
        # exponential, so no overflow for large logits. alpha = 1 / (2 + s g) only counts
        # where g > 0, so alpha * ReLU(g) is ReLU(g) / (2 + s g), 0 where the denominator
        # is 0 (where g^2 underflows, 0 < g < 4e-23, the term is now about g / 2, not 0).
        # The spatial sum s of A is the same for every class.
        s = tf.reduce_sum(a, axis=axes, keepdims=True)
        out["gradcampp"] = tf.stack(
            [
                tf.reduce_sum(tf.math.divide_no_nan(tf.nn.relu(g), 2.0 + s * g), axis=axes)
                for g in grads
            ],
            axis=1,
        )
    return out


#: :func:`_channel_weights` compiled with XLA (deterministic on CPU: one fused loop per
#: batch shape); the sums are reordered, which moves maps by float rounding (2e-7 of the
#: map's maximum on the paper's model).
_fused_channel_weights = tf.function(_channel_weights, jit_compile=True)


def _normalised_gradcampp_weights(a, grads):
    """Grad-CAM++ channel weights (batch, classes, channels) with alpha divided by its
    spatial sum per channel (``gradcampp_alpha_norm``). That sum adds alphas of both signs
    (``1 / (2 + s g)`` is negative where ``s g < -2``) and can nearly cancel, so these
    weights are always computed op by op, never fused by XLA: reordered sums moved them by
    1e-4 of the map's maximum on the tf-keras-vis comparison model."""
    axes = list(range(1, len(a.shape) - 1))
    s = tf.reduce_sum(a, axis=axes, keepdims=True)
    out = []
    for g in grads:
        denom = 2.0 + s * g
        ok = tf.logical_and(tf.not_equal(g * g, 0.0), tf.not_equal(denom, 0.0))
        alpha = tf.where(ok, 1.0 / tf.where(ok, denom, tf.ones_like(denom)), 0.0)
        z = tf.reduce_sum(alpha, axis=axes, keepdims=True)
        alpha = alpha / tf.where(tf.equal(z, 0.0), tf.ones_like(z), z)
        out.append(tf.reduce_sum(alpha * tf.nn.relu(g), axis=axes))
    return tf.stack(out, axis=1)


@dataclass(frozen=True)
class _Probe:
    """One functional model from the outer inputs to the evaluation layers' activations,
    the score and the output, built on the model's float32 twin."""

    extractor: Any
    score: _Score
    paths: tuple[str, ...]
    time_steps: tuple[int | None, ...]
    image_index: int


def _probe(model, layer_keys, score_layer=None, image_input=None, precision="float32"):
    per_model = _CACHE.setdefault(model, {})
    key = ("probe", tuple(layer_keys), score_layer, image_input, precision)
    if key not in per_model:
        twin = float32_twin(model, sync=False) if precision == "float32" else model
        calls = _resolve_layers(twin, layer_keys, score_layer, image_input)
        score = _score_source(twin, score_layer)
        graph = trace(twin)
        extractor = Extractor(
            graph.inputs, [*(c.outputs[0] for c in calls), score.tensor, graph.outputs[0]]
        )
        per_model[key] = _Probe(
            extractor,
            score,
            tuple(c.path for c in calls),
            tuple(c.time_steps for c in calls),
            _image_index(model, image_input),
        )
    return per_model[key]


def _logits(t, score: _Score):
    """The class scores from the score tensor: pre-activation of a final Dense, and the
    negative class of a single sigmoid unit as ``-z``."""
    if score.head is not None:
        t = tf.matmul(tf.cast(t, tf.float32), tf.cast(score.head.kernel, tf.float32))
        if score.head.use_bias:
            t = t + tf.cast(score.head.bias, tf.float32)
    t = tf.cast(t, tf.float32)
    if score.binary:
        t = tf.concat([-t, t], axis=1)
    return t


def _signature(probe: _Probe):
    return [
        tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=f"input_{i}")
        for i, t in enumerate(probe.extractor.inputs)
    ]


def _call_extractor(probe: _Probe, xs):
    return probe.extractor(list(xs), training=False)


def _per_bag(maps, t: int):
    """Maps (bags x slices, classes, *spatial) of a TimeDistributed layer as (bags, classes,
    slices, *spatial)."""
    shape = tf.shape(maps)
    m = tf.reshape(maps, tf.concat([[-1, t], shape[1:]], 0))
    rank = len(maps.shape) + 1
    return tf.transpose(m, [0, 2, 1, *range(3, rank)])


def _get_core(model, layer_keys, classes, methods, alpha_norm, score_layer, image_input, precision):
    probe = _probe(model, layer_keys, score_layer, image_input, precision)
    per_model = _CACHE[model]
    key = ("fn", tuple(layer_keys), score_layer, image_input, tuple(classes), tuple(methods))
    key = (*key, bool(alpha_norm), precision)
    if key not in per_model:
        n_layers = len(layer_keys)

        @tf.function(input_signature=_signature(probe))
        def core(*xs):
            with tf.GradientTape(persistent=True) as tape:
                outs = _call_extractor(probe, xs)
                acts = list(outs[:n_layers])
                for a in acts:
                    tape.watch(a)
                logits = _logits(outs[n_layers], probe.score)
                scores = [tf.reduce_sum(logits[:, c]) for c in classes]
            # Samples are independent (inference mode), so the gradient of the batch sum
            # is each sample's own gradient (in a bag, each slice's gradient of its bag's
            # score).
            grads = [tape.gradient(s, acts) for s in scores]
            stacked = []
            for li, a in enumerate(acts):
                gs = [tf.zeros_like(a) if g[li] is None else g[li] for g in grads]
                gs = [tf.cast(g, tf.float32) for g in gs]
                maps = _class_maps(tf.cast(a, tf.float32), gs, methods, alpha_norm)
                t = probe.time_steps[li]
                if t:  # (bags x slices, classes, ...) -> (bags, classes, slices, ...)
                    maps = {m: _per_bag(v, t) for m, v in maps.items()}
                stacked.append(maps)
            del tape
            return stacked, logits, tf.cast(outs[n_layers + 1], tf.float32)

        per_model[key] = core
    return per_model[key], probe


# ---------------------------------------------------------------------------------------
# Validation and the public entry points
# ---------------------------------------------------------------------------------------


def _check_images(model, images, image_input=None) -> np.ndarray:
    idx = _image_index(model, image_input)
    x = np.asarray(images)
    want = tuple(model.inputs[idx].shape[1:])
    if x.ndim != len(want) + 1 or any(w is not None and w != s for w, s in zip(want, x.shape[1:])):
        hint = ""
        if x.ndim == len(want) and want[-1] == 1 and tuple(x.shape[1:]) == want[:-1]:
            hint = " (add the channel axis: images[..., None])"
        elif x.ndim >= 3 and want[0] is not None and tuple(x.shape[1:3]) != want[:2]:
            hint = (
                f" (slices of {x.shape[1]}x{x.shape[2]} px: build the slice store at the model's "
                f"size, PreprocessConfig(size={want[0]}), as its card's preprocessing says)"
            )
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


def _model_inputs(model, images, image_input=None, inputs=None) -> list[np.ndarray]:
    """Every model input in model order: the images, and the other inputs held fixed."""
    idx = _image_index(model, image_input)
    names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(model.inputs)]
    others = [n for i, n in enumerate(names) if i != idx]
    inputs = dict(inputs or {})
    missing = [n for n in others if n not in inputs]
    extra = [n for n in inputs if n not in others]
    if missing or extra:
        raise ValueError(
            f"model {model.name!r} takes inputs {names}; the images go to {names[idx]!r}, so "
            f"inputs= must give exactly {others} (missing {missing}, unexpected {extra})"
        )
    out = []
    for i, (name, t) in enumerate(zip(names, model.inputs)):
        if i == idx:
            out.append(images)
            continue
        v = np.asarray(inputs[name])
        want = tuple(t.shape[1:])
        if (
            v.ndim != len(want) + 1
            or len(v) != len(images)
            or any(w is not None and w != s for w, s in zip(want, v.shape[1:]))
        ):
            raise ValueError(
                f"input {name!r} has shape {v.shape}; expected ({len(images)}, "
                f"{', '.join(str(w) for w in want)}): one row per image"
            )
        if not np.issubdtype(v.dtype, np.number) and v.dtype != bool:
            raise ValueError(f"input {name!r} has dtype {v.dtype}; expected a numeric array")
        v = v.astype(keras.backend.standardize_dtype(t.dtype), copy=False)
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(f"input {name!r} contains NaN or inf values")
        out.append(v)
    return out


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


def _n_classes(model, score_layer=None) -> int:
    return _score_source(model, score_layer).n_classes


def _class_names(model, class_names=None, score_layer=None) -> tuple[str, ...] | None:
    """Names of the model's classes: ``class_names`` if given, else the model card's
    ``classes``, else None. A single sigmoid unit has two classes, negative then positive."""
    n = _n_classes(model, score_layer)
    if class_names is not None:
        names = tuple(str(c) for c in class_names)
        if len(names) != n:
            raise ValueError(
                f"class_names {list(names)} name {len(names)} classes; model {model.name!r} "
                f"has {n} (a single sigmoid unit has 2: negative, positive)"
            )
        return names
    card = getattr(model, "hypo_card", None)
    if isinstance(card, dict) and score_layer is None:
        names = card.get("classes")
        if names is not None and len(names) == n:
            return tuple(str(c) for c in names)
    return None


def _check_classes(model, classes, score_layer=None, names=None) -> tuple[int, ...]:
    n = _n_classes(model, score_layer)
    if classes is None:
        return tuple(range(n))
    if np.isscalar(classes):
        classes = [classes]
    out = []
    for c in classes:
        if isinstance(c, str):
            if names is None or c not in names:
                raise ValueError(
                    f"class {c!r}: model {model.name!r} has class names {names}; pass "
                    "class_names= for a model without a card, or use class indices"
                )
            c = names.index(c)
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


def _run(
    model,
    arrays,
    layer_keys,
    methods,
    classes,
    alpha_norm,
    batch_size,
    score_layer=None,
    image_input=None,
    precision="float32",
):
    """Raw maps per layer, logits and outputs, batch by batch; ``arrays`` are the model's
    inputs in model order."""
    _check_precision(precision)
    if precision == "float32":
        float32_twin(model)  # copies the current weights into a mixed-precision model's twin
    core, probe = _get_core(
        model, layer_keys, classes, methods, alpha_norm, score_layer, image_input, precision
    )
    raws = [{m: [] for m in methods} for _ in layer_keys]
    logits, outs = [], []
    n = len(arrays[0])
    for start in range(0, n, batch_size):
        stacked, lg, out = core(*(a[start : start + batch_size] for a in arrays))
        for li, d in enumerate(stacked):
            for m in methods:
                raws[li][m].append(d[m].numpy())
        logits.append(lg.numpy())
        outs.append(out.numpy())
    raws = [{m: np.concatenate(v[m]) for m in methods} for v in raws]
    return raws, np.concatenate(logits), np.concatenate(outs), probe


def _check_precision(precision) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")


def _probabilities(probe: _Probe, logits, outputs):
    """Softmax/sigmoid outputs of the model (two columns, negative and positive, for a
    single sigmoid unit); the model's own output when the score is a named score layer."""
    score = probe.score
    if score.binary:
        p = outputs[:, :1] if score.probability_output else 1 / (1 + np.exp(-logits[:, 1:]))
        return np.concatenate([1 - p, p], axis=1).astype(np.float32)
    if score.probability_output or score.from_score_layer:
        return outputs
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _assemble(
    model, images, layer, raw, logits, probs, classes, methods, cfg, probe, mhash, extra=None
) -> CamResult:
    from .resize import describe_interpolation, resize_maps

    li = probe.paths.index(layer)
    steps = probe.time_steps[li]
    in_spatial = tuple(int(s) for s in images.shape[1:-1])
    lay_spatial = tuple(int(s) for s in next(iter(raw.values())).shape[2:])
    if steps:  # a bag: (slices, *in-plane); maps are resized in-plane, slice by slice
        target = in_spatial[1:]
        cell = (1.0, *(float(i) / float(s) for i, s in zip(target, lay_spatial[1:])))
    else:
        target = in_spatial
        cell = tuple(float(i) / float(s) for i, s in zip(in_spatial, lay_spatial))
    maps = {}
    norm_desc = "none"
    for m in methods:
        r = raw[m]
        if cfg.resize:
            r = resize_maps(r, target, cfg.interpolation)
        maps[m], norm_desc = _normalise(r, cfg.normalize, len(classes))
    extra = dict(extra or {})
    names = extra.pop("class_names", None)
    prov = {
        "model_hash": mhash,
        "model_name": model.name,
        "layer": layer,
        "layer_choice": extra.pop("layer_choice", "given"),
        "methods": list(methods),
        "classes": list(classes),
        "class_names": [names[c] for c in classes] if names else None,
        "score": SCORE if cfg.score_layer is None else "named score layer",
        "score_source": probe.score.description,
        "normalisation": norm_desc,
        "gradcampp_alpha_norm": bool(cfg.gradcampp_alpha_norm),
        "resized": bool(cfg.resize),
        "interpolation": describe_interpolation(cfg.interpolation, len(target))
        if cfg.resize
        else "none (layer resolution)",
        "input_shape": list(images.shape[1:]),
        "layer_shape": list(lay_spatial),
        "per_slice": bool(steps),
        "training": False,
        "precision": {
            "model": precision_policies(model),
            "maps": (
                "float32" + (" (float32 twin of the model)" if _twin_used(model) else "")
                if cfg.precision == "float32"
                else "the model's own dtype policy (precision='model')"
            ),
        },
        "versions": library_versions(),
        **extra,
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
        class_names=tuple(names) if names else None,
    )


def _twin_used(model) -> bool:
    return float32_twin(model, sync=False) is not model


def compute(
    model,
    images,
    layer=None,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    classes: Sequence[int | str] | None = None,
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
) -> CamResult:
    """Class activation maps of ``images`` for every selected class and method.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model with one output; it may hold nested functional or
        Sequential models (a Keras Applications backbone under a new head) and
        ``TimeDistributed`` encoders (bag models: per-slice maps). Maps are computed in
        float32 whatever the model's dtype policy (a mixed-precision model is explained
        through a float32 clone with its weights). The score is the pre-softmax logit: the
        output of a layer named ``logits`` if there is one, else the input of a final
        Softmax, else the pre-activation of a final ``Dense(activation="softmax")``, else a
        final linear Dense; a single sigmoid unit ``z`` gives two classes, negative
        (``-z``) and positive (``z``).
    images : ndarray, shape (n_images, *input_shape)
        Batch first, channels last, e.g. ``(n, 192, 192, 1)`` or ``(n, 128, 128, 28, 1)``;
        a bag model takes ``(n_bags, n_slices, H, W, 1)``.
    layer : str or keras.Layer, optional
        Evaluation layer: a path (``"resnet50/conv5_block3_out"``), a layer name (unique
        among nested models), or the layer object. Default: the model card's ``cam_layer``,
        else the last activation after the last convolution on the way to the score.
    methods : sequence of str
        Any of ``"gradcam"``, ``"gradcampp"``, ``"hirescam"``, ``"layercam"``.
    classes : sequence of int or str, optional
        Class indices or names, in the order wanted on axis 1 of the maps; default all.
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
    inputs : dict of str -> ndarray, optional
        The model's other inputs by name (one row per image), passed through and held
        fixed (e.g. clinical covariates).
    image_input : str, optional
        Name of the input the images go to (needed when several inputs are images).
    class_names : sequence of str, optional
        Names of the classes for a model without a card.
    score_layer : str or keras.Layer, optional
        Explain the output of this layer instead of the logits, e.g. an ordinal head's
        linear predictor.
    precision : {"float32", "model"}
        See :class:`CamConfig`; keep the default.

    Returns
    -------
    CamResult
        ``res[method]`` has shape ``(n_images, n_classes_selected, *spatial)``
        (``(n_bags, n_classes_selected, n_slices, H, W)`` for a bag model).
    """
    cfg = CamConfig(
        layer=None if layer is None else _layer_key(model, layer),
        methods=_check_methods(methods),
        classes=None,
        resize=bool(resize),
        normalize=normalize,
        interpolation=interpolation,
        gradcampp_alpha_norm=bool(gradcampp_alpha_norm),
        batch_size=int(batch_size),
        image_input=image_input,
        score_layer=None if score_layer is None else _layer_key(model, score_layer),
        precision=precision,
    )
    return compute_with_config(model, images, cfg, classes, inputs=inputs, class_names=class_names)


def compute_with_config(
    model, images, cfg: CamConfig, classes=None, inputs=None, class_names=None
) -> CamResult:
    """:func:`compute` driven by a :class:`CamConfig` (``classes`` overrides ``cfg.classes``)."""
    from .resize import canonical_interpolation

    check_functional(model)
    images = _check_images(model, images, cfg.image_input)
    arrays = _model_inputs(model, images, cfg.image_input, inputs)
    methods = _check_methods(cfg.methods)
    names = _class_names(model, class_names, cfg.score_layer)
    classes = _check_classes(
        model, cfg.classes if classes is None else classes, cfg.score_layer, names
    )
    canonical_interpolation(cfg.interpolation)
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    layer, choice = _layer_choice(model, cfg.layer, cfg.score_layer, cfg.image_input)
    raws, logits, outs, probe = _run(
        model,
        arrays,
        [layer],
        methods,
        classes,
        cfg.gradcampp_alpha_norm,
        cfg.batch_size,
        cfg.score_layer,
        cfg.image_input,
        cfg.precision,
    )
    probs = _probabilities(probe, logits, outs)
    return _assemble(
        model,
        images,
        probe.paths[0],
        raws[0],
        logits,
        probs,
        classes,
        methods,
        cfg,
        probe,
        model_hash(model),
        {"layer_choice": choice, "class_names": names},
    )


def score_gradients(
    model,
    images,
    layer=None,
    classes=None,
    batch_size: int = 32,
    *,
    inputs=None,
    image_input=None,
    score_layer=None,
):
    """Activation of ``layer`` and the gradient of each selected class's score w.r.t. it.

    Returns
    -------
    activations : ndarray, shape (n_images, *layer_spatial, channels)
    gradients : ndarray, shape (n_images, n_selected_classes, *layer_spatial, channels)
        ``dS_c / dA`` with ``S_c`` the pre-softmax logit (in float32). Inside a
        ``TimeDistributed`` encoder the first axis runs over bag x slice.
    """
    check_functional(model)
    images = _check_images(model, images, image_input)
    arrays = _model_inputs(model, images, image_input, inputs)
    score_layer = None if score_layer is None else _layer_key(model, score_layer)
    classes = _check_classes(model, classes, score_layer, _class_names(model, None, score_layer))
    layer, _ = _layer_choice(model, layer, score_layer, image_input)
    float32_twin(model)
    probe = _probe(model, (layer,), score_layer, image_input, "float32")
    per_model = _CACHE[model]
    key = ("grad", layer, score_layer, image_input, classes)
    if key not in per_model:

        @tf.function(input_signature=_signature(probe))
        def grad_fn(*xs):
            with tf.GradientTape(persistent=True) as tape:
                outs = _call_extractor(probe, xs)
                a = outs[0]
                tape.watch(a)
                logits = _logits(outs[1], probe.score)
                scores = [tf.reduce_sum(logits[:, c]) for c in classes]
            gs = [tape.gradient(s, a) for s in scores]
            gs = [tf.zeros_like(a) if g is None else g for g in gs]
            return tf.cast(a, tf.float32), tf.cast(tf.stack(gs, axis=1), tf.float32)

        per_model[key] = grad_fn
    acts, grads = [], []
    for start in range(0, len(images), batch_size):
        a, g = per_model[key](*(x[start : start + batch_size] for x in arrays))
        acts.append(a.numpy())
        grads.append(g.numpy())
    return np.concatenate(acts), np.concatenate(grads)


def predict_scores(
    model,
    images,
    batch_size: int = 32,
    *,
    inputs=None,
    image_input=None,
    score_layer=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The scores CAMs explain, from a forward pass in float32: ``(logits, probabilities)``,
    each ``(n_images, n_classes)`` with classes as in :func:`compute` (negative and
    positive for a single sigmoid unit)."""
    check_functional(model)
    images = _check_images(model, images, image_input)
    arrays = _model_inputs(model, images, image_input, inputs)
    score_layer = None if score_layer is None else _layer_key(model, score_layer)
    float32_twin(model)
    per_model = _CACHE.setdefault(model, {})
    key = ("forward", score_layer, image_input)
    if key not in per_model:
        twin = float32_twin(model, sync=False)
        score = _score_source(twin, score_layer)
        graph = trace(twin)
        probe = _Probe(
            Extractor(graph.inputs, [score.tensor, graph.outputs[0]]),
            score,
            (),
            (),
            _image_index(model, image_input),
        )

        @tf.function(input_signature=_signature(probe))
        def fwd(*xs):
            outs = _call_extractor(probe, xs)
            return _logits(outs[0], probe.score), tf.cast(outs[1], tf.float32)

        per_model[key] = (probe, fwd)
    probe, fwd = per_model[key]
    logits, outs = [], []
    for start in range(0, len(images), batch_size):
        lg, out = fwd(*(a[start : start + batch_size] for a in arrays))
        logits.append(lg.numpy())
        outs.append(out.numpy())
    logits, outs = np.concatenate(logits), np.concatenate(outs)
    return logits, _probabilities(probe, logits, outs)
