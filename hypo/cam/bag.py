"""Grad-CAM and Grad-CAM++ of a patient-level outcome model, through the pooling.

The outcome model (:mod:`hypo.nets.outcome`) scores a whole patient: the slices' embeddings
are pooled and an ordinal head turns the pooled vector (and the encoder's lesion extent)
into the patient's linear predictor ``eta`` (pre-link: ``logit P(mRS <= j) = theta_j -
eta``; higher = worse). :func:`bag_cams` explains ``eta`` -- not a probability -- with
respect to each slice's feature maps ``A_s`` at a layer of the encoder: one forward pass of
the patient's slices, the pooling and the head written in TensorFlow, and ``d eta / d A_s``
by automatic differentiation, so every path from a slice to the score (its embedding
through the pooling, its lesion probability through the pooling weights and the extent)
counts. Grad-CAM and Grad-CAM++ are then formed per slice exactly as
:mod:`hypo.cam.engine` forms them from a logit's gradient.

What the pooling passes back to a slice:

``mean``         every slice gets ``1/S`` of the head's weights: maps differ only by the
                 slices' own activations and local gradients;
``lesion_mean``  slice ``s`` gets its weight ``p_s / sum p`` (``p`` the encoder's lesion
                 probability), plus the gradient through ``p_s`` itself;
``volume_sum``   slice ``s`` gets a share growing with ``p_s v_s`` (its lesion-weighted
                 volume), through the logarithm and the extent column;
``max``          the gradient of a channel's maximum flows only to the slice that holds it:
                 a slice that is the maximum in no channel gets a zero gradient and so an
                 all-zero Grad-CAM and Grad-CAM++ map, whatever it shows (its maps say "not
                 used by the maximum", not "irrelevant tissue").

The per-slice pooling weights are kept in the result's provenance (``slice_weights``).
Results are :class:`hypo.cam.result.CamResult` objects (one per layer, slices as images,
one "class" = the linear predictor), so :mod:`hypo.features` reads them like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hypo.nets.outcome import DEFAULT_EMBEDDING_LAYER, OrdinalHead

from .engine import CamConfig, _assemble, _cam_maps, _check_images, _check_methods, model_hash
from .result import CamResult

#: The finer layer offered beside the card's ``cam_layer`` (32 x 32 at 128 px: one cell
#: spans 4 x 4 px; ``analyses.layer_iteration`` measured a lesion relevance mass of 0.20
#: there with Grad-CAM++, against 0.075 at the last block).
FINE_LAYER = "block3_relu"
BAG_POOLINGS = ("mean", "max", "lesion_mean", "volume_sum")
SCORE = "ordinal linear predictor eta of the patient (pre-link; image branch)"


def _split_model(model, layer: str, embedding_layer: str):
    import keras

    a = model.get_layer(layer).output
    lower = keras.Model(model.inputs, a)
    upper = keras.Model(a, [model.get_layer(embedding_layer).output, model.outputs[0]])
    return lower, upper


def _pool(emb, prob, vol, pooling: str):
    import tensorflow as tf

    if pooling == "mean":
        pooled = tf.reduce_mean(emb, axis=0)
        n = tf.shape(emb)[0]
        weights = tf.ones([n], emb.dtype) / tf.cast(n, emb.dtype)
    elif pooling == "max":
        pooled = tf.reduce_max(emb, axis=0)
        is_max = tf.cast(tf.equal(emb, pooled[None, :]), emb.dtype)
        weights = tf.reduce_mean(is_max, axis=1)  # share of channels the slice holds
    elif pooling == "lesion_mean":
        w = prob
        pooled = tf.reduce_sum(w[:, None] * emb, 0) / tf.reduce_sum(w)
        weights = w / tf.reduce_sum(w)
    elif pooling == "volume_sum":
        w = prob * vol
        pooled = tf.math.log1p(tf.nn.relu(tf.reduce_sum(w[:, None] * emb, 0)))
        weights = w / tf.reduce_sum(w)
    else:
        raise ValueError(f"pooling {pooling!r}: bag CAMs support {BAG_POOLINGS}")
    extent = tf.math.log1p(tf.reduce_sum(prob * vol))
    return tf.concat([pooled, extent[None]], 0), weights


def bag_cams(
    model,
    slices,
    slice_volume_ml,
    head: OrdinalHead,
    pooling: str,
    layers: Sequence[str] | None = None,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    embedding_layer: str = DEFAULT_EMBEDDING_LAYER,
    resize: bool = True,
    interpolation: str = "bilinear",
    gradcampp_alpha_norm: bool = False,
) -> dict[str, CamResult]:
    """CAMs of one patient's ordinal linear predictor at each layer (see module docstring).

    Parameters
    ----------
    model : keras.Model
        The encoder (e.g. ``models/stroke-gap-128``); its card's ``cam_layer`` is the
        default layer, with :data:`FINE_LAYER` beside it.
    slices : ndarray (S, H, W, 1)
        The patient's preprocessed slices (the bag).
    slice_volume_ml : ndarray (S,)
        :func:`hypo.nets.outcome.slice_volume_ml` of those slices.
    head : OrdinalHead
        The image head (its columns: pooled embedding, then the lesion extent).
    pooling : {"mean", "max", "lesion_mean", "volume_sum"}

    Returns
    -------
    dict of layer -> CamResult
        Maps ``(S, 1, ...)``: class 0 is the patient's ``eta``; ``logits`` hold ``eta`` for
        every slice; ``probabilities`` the patient's P(mRS >= 3); the provenance adds
        ``pooling``, ``slice_weights`` and ``eta``.
    """
    import tensorflow as tf

    x = _check_images(model, slices)
    methods = _check_methods(methods)
    vol = np.asarray(slice_volume_ml, np.float32)
    if vol.shape != (len(x),):
        raise ValueError(f"slice_volume_ml has shape {vol.shape}; expected ({len(x)},)")
    if len(x) == 0:
        raise ValueError("bag_cams: the patient has no usable slice")
    card = getattr(model, "hypo_card", None) or {}
    layers = tuple(layers) if layers else (card.get("cam_layer", "block5_relu"), FINE_LAYER)
    # The head in float64, as fitted: (z - center) / scale cancels large terms.
    beta = tf.constant(head.beta, tf.float64)
    center = tf.constant(head.center, tf.float64)
    scale = tf.constant(head.scale, tf.float64)
    cfg = CamConfig(methods=methods, resize=resize, interpolation=interpolation,
                    gradcampp_alpha_norm=gradcampp_alpha_norm)  # fmt: skip
    mhash = model_hash(model)
    out = {}
    for layer in layers:
        lower, upper = _split_model(model, layer, embedding_layer)

        # In a graph, as predict runs the encoder: eager mixed-precision kernels differ
        # from the compiled ones by ~1e-3 in eta.
        @tf.function
        def core(xb, vb, lower=lower, upper=upper):
            a = tf.cast(lower(xb, training=False), tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(a)
                emb, prob = upper(a, training=False)
                # Pooling and head in float64, as the cached path computes them.
                emb = tf.reshape(tf.cast(emb, tf.float64), [tf.shape(xb)[0], -1])
                p = tf.cast(prob, tf.float64)[:, -1]
                z, weights = _pool(emb, p, vb, pooling)
                eta = tf.reduce_sum((z - center) / scale * beta)
            g = tf.cast(tape.gradient(eta, a), tf.float32)
            return a, g, eta, weights

        a, g, eta, weights = core(tf.constant(x), tf.constant(vol, tf.float64))
        maps = _cam_maps(a, g, methods, bool(gradcampp_alpha_norm))
        raw = {m: maps[m].numpy()[:, None].astype(np.float32) for m in methods}
        e = float(eta.numpy())
        p_poor = float(head.prob_at_least(eta=np.array([e]))[0, 2])
        res = _assemble(model, x, layer, raw, np.full((len(x), 1), e, np.float32),
                        np.full((len(x), 1), p_poor, np.float32), (0,), methods, cfg,
                        SCORE, mhash)  # fmt: skip
        res.provenance.update({"score": SCORE, "pooling": pooling, "eta": e,
                               "slice_weights": weights.numpy().astype(float).tolist(),
                               "embedding_layer": embedding_layer})  # fmt: skip
        out[layer] = res
    return out
