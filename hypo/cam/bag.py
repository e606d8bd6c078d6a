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

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from hypo._util import atomic_path, stable_hash, write_json_atomic, write_table_atomic
from hypo.nets.outcome import DEFAULT_EMBEDDING_LAYER, OrdinalHead, slice_volume_ml

from .engine import CamConfig, _assemble, _cam_maps, _check_images, _check_methods, model_hash
from .result import CamResult
from .stream import CHUNKS, FORMAT_VERSION, INDEX, MANIFEST, CamStore, _chunk_dir, store_identity

#: The finer layer offered beside the card's ``cam_layer`` (32 x 32 at 128 px: one cell
#: spans 4 x 4 px; ``analyses.layer_iteration`` measured a lesion relevance mass of 0.20
#: there with Grad-CAM++, against 0.075 at the last block).
FINE_LAYER = "block3_relu"
BAG_POOLINGS = ("mean", "max", "lesion_mean", "volume_sum")
SCORE = "ordinal linear predictor eta of the patient (pre-link; image branch)"


def _split_model(model, layers, embedding_layer: str):
    """``[lower, middle..., upper]``: the encoder cut at each of ``layers`` (sorted by
    depth): input -> first layer -> ... -> last layer -> (embedding, class probabilities)."""
    import keras

    names = [la.name for la in model.layers]
    for la in layers:
        if la not in names:
            raise ValueError(f"model {model.name!r} has no layer {la!r}")
    order = sorted(layers, key=names.index)
    segments, prev = [], None
    for la in order:
        out = model.get_layer(la).output
        segments.append(keras.Model(model.inputs if prev is None else prev, out))
        prev = out
    upper = keras.Model(prev, [model.get_layer(embedding_layer).output, model.outputs[0]])
    return order, [*segments, upper]


#: Compiled cores, one per (model, layers, embedding layer, pooling): a bag of any size and
#: any head reuse it (tracing the encoder's graph per patient cost about a second each).
_CORES: dict = {}


def _core(model, layers, embedding_layer: str, pooling: str):
    """``core(x, volume, beta, center, scale) -> (activations, gradients, eta, weights)``
    (activations and gradients: one per layer, in the order of ``_split_model``): one
    compiled function per model, layer set and pooling, traced once for bags of any size
    (the head enters as tensors, so a refitted head does not retrace). Several layers share
    one forward and one backward pass."""
    import tensorflow as tf

    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    key = (id(model), layers, embedding_layer, pooling)
    hit = _CORES.get(key)
    if hit is not None and hit[0] is model:
        return hit[1], hit[2]
    order, parts = _split_model(model, layers, embedding_layer)
    lower, middle, upper = parts[0], parts[1:-1], parts[-1]
    shape = tuple(model.inputs[0].shape[1:])
    vec = tf.TensorSpec([None], tf.float64)

    # In a graph, as predict runs the encoder: eager mixed-precision kernels differ from
    # the compiled ones by ~1e-3 in eta.
    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32), vec, vec, vec, vec])
    def core(xb, vb, beta, center, scale):
        a = tf.cast(lower(xb, training=False), tf.float32)
        acts = [a]
        with tf.GradientTape() as tape:
            tape.watch(a)
            for seg in middle:
                a = tf.cast(seg(a, training=False), tf.float32)
                acts.append(a)
            emb, prob = upper(a, training=False)
            # Pooling and head in float64, as the cached path computes them.
            emb = tf.reshape(tf.cast(emb, tf.float64), [tf.shape(xb)[0], -1])
            p = tf.cast(prob, tf.float64)[:, -1]
            z, weights = _pool(emb, p, vb, pooling)
            eta = tf.reduce_sum((z - center) / scale * beta)
        grads = [tf.cast(g, tf.float32) for g in tape.gradient(eta, acts)]
        return acts, grads, eta, weights

    if len(_CORES) > 32:  # models of finished runs (tests build many)
        _CORES.clear()
    _CORES[key] = (model, core, order)
    return core, order


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
    one_pass: bool = False,
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
    one_pass : bool
        All layers from one forward and one backward pass (the encoder cut at every layer;
        same maps to float rounding, about half the time for three layers) instead of a
        pass per layer.

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
    xt, vt = tf.constant(x, tf.float32), tf.constant(vol, tf.float64)
    passes = {}
    if one_pass and len(layers) > 1:
        core, order = _core(model, layers, embedding_layer, pooling)
        acts, grads, eta, weights = core(xt, vt, beta, center, scale)
        passes = {la: (a, g, eta, weights) for la, a, g in zip(order, acts, grads)}
    for layer in layers:
        if layer in passes:
            a, g, eta, weights = passes[layer]
        else:
            core, _ = _core(model, layer, embedding_layer, pooling)
            (a,), (g,), eta, weights = core(xt, vt, beta, center, scale)
        maps = _cam_maps(a, g, methods, bool(gradcampp_alpha_norm))
        raw = {m: maps[m].numpy()[:, None].astype(np.float32) for m in methods}
        e = float(eta.numpy())
        p_poor = float(head.prob_at_least(eta=np.array([e]))[0, 2])
        # The engine's result assembly reads the layer's place and the score's description
        # from its probe; a bag explained here has one 2D layer per slice and this score.
        probe = SimpleNamespace(
            paths=[layer], time_steps=[0], score=SimpleNamespace(description=SCORE)
        )
        res = _assemble(model, x, layer, raw, np.full((len(x), 1), e, np.float32),
                        np.full((len(x), 1), p_poor, np.float32), (0,), methods, cfg,
                        probe, mhash)  # fmt: skip
        res.provenance.update({"score": SCORE, "pooling": pooling, "eta": e,
                               "slice_weights": weights.numpy().astype(float).tolist(),
                               "embedding_layer": embedding_layer})  # fmt: skip
        out[layer] = res
    return out


def _store_key(model, store, head, pooling, layer, methods, embedding_layer, chunk_size) -> dict:
    """What a bag CAM cache depends on (its manifest key)."""
    return {
        "format_version": FORMAT_VERSION,
        "store": store_identity(store),
        "model_hash": model_hash(model),
        "layer": layer,
        "methods": list(methods),
        "classes": [0],
        "gradcampp_alpha_norm": False,
        "resize": False,
        "interpolation": "bilinear",
        "chunk_size": int(chunk_size),
        "score": SCORE,
        "pooling": pooling,
        "head_hash": stable_hash(head.to_dict()),
        "embedding_layer": embedding_layer,
    }


def _fill(buffers: dict, rows, res, methods, chunk_size: int) -> None:
    """Put one patient's maps into the buffers of the chunks still to write."""
    for j, r in enumerate(rows):
        c, k = divmod(int(r), chunk_size)
        if c not in buffers:
            continue
        b = buffers[c]
        for m in methods:
            b.setdefault(m, np.zeros((len(b["filled"]), *res.raw[m].shape[1:]), np.float32))
            b[m][k] = res.raw[m][j]
        b["logits"][k] = res.logits[j]
        b["probabilities"][k] = res.probabilities[j]
        b["filled"][k] = True


def _write_chunk(folder: Path, b: dict, methods) -> None:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for m in methods:
            np.save(tmp / f"raw_{m}.npy", b[m])
        np.save(tmp / "logits.npy", b["logits"])
        np.save(tmp / "probabilities.npy", b["probabilities"])


def bag_cam_store(
    model,
    store,
    head: OrdinalHead,
    pooling: str,
    out_dir,
    layer: str | None = None,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    embedding_layer: str = DEFAULT_EMBEDDING_LAYER,
    chunk_size: int = 256,
) -> CamStore:
    """Bag CAMs of every patient of a slice store, cached in :func:`hypo.cam.compute_store`'s
    layout, so :class:`hypo.cam.CamStore` and :mod:`hypo.features` read them unchanged.

    Each patient's slices are explained as one bag (:func:`bag_cams`); the maps are written
    in store order, ``chunk_size`` slices per chunk, each chunk atomically. ``logits`` hold
    the patient's ``eta`` on each of their slices, ``probabilities`` P(mRS >= 3). The
    manifest key records the head (hash of its coefficients), pooling and score, so a cache
    of another head or of the classifier's logits is never mixed in. A rerun computes the
    patients whose slices fall in chunks not written yet.
    """
    card = getattr(model, "hypo_card", None) or {}
    layer = layer or card.get("cam_layer", "block5_relu")
    return bag_cam_stores(model, store, head, pooling, {layer: out_dir}, methods,
                          embedding_layer, chunk_size)[layer]  # fmt: skip


def bag_cam_stores(
    model,
    store,
    head: OrdinalHead,
    pooling: str,
    out_dirs: dict,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    embedding_layer: str = DEFAULT_EMBEDDING_LAYER,
    chunk_size: int = 256,
) -> dict[str, CamStore]:
    """:func:`bag_cam_store` at several layers at once (``out_dirs``: layer -> folder, one
    store each), every patient's bag explained in one forward and one backward pass
    (``bag_cams(..., one_pass=True)``). A patient is computed when any layer still lacks
    a chunk of theirs; every store resumes where it stopped."""
    methods = _check_methods(methods)
    out_dirs = {la: Path(d) for la, d in out_dirs.items()}
    layers = tuple(out_dirs)
    table = store.table
    n = len(table)
    pid = table["participant_id"].astype(str).to_numpy()
    vol = slice_volume_ml(table)
    n_chunks = (n + chunk_size - 1) // chunk_size
    manifests, buffers = {}, {}  # layer -> manifest; layer -> {chunk -> arrays being filled}
    need = np.zeros(n, bool)
    for la, out_dir in out_dirs.items():
        key = _store_key(model, store, head, pooling, la, methods, embedding_layer, chunk_size)
        manifest_file = out_dir / MANIFEST
        old = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
        if old and old.get("key") != key:
            raise ValueError(f"{out_dir} holds CAMs computed differently; use another folder")
        (out_dir / CHUNKS).mkdir(parents=True, exist_ok=True)
        manifests[la] = {"key": key, "key_hash": stable_hash(key), "n_slices": n,
                         "n_chunks": n_chunks, "input_shape": [*store.images.shape[1:], 1],
                         "status": "incomplete"}  # fmt: skip
        if "provenance" in old:  # a resumed store keeps what its first run recorded
            manifests[la]["provenance"] = old["provenance"]
        write_json_atomic(manifest_file, manifests[la])
        if not (out_dir / INDEX).exists():
            index = pd.DataFrame({"store_index": np.arange(n)})
            for c in ("participant_id", "slice"):
                if c in table.columns:
                    index[c] = table[c].to_numpy()
            write_table_atomic(out_dir / INDEX, index)
        todo = [i for i in range(n_chunks) if not _chunk_dir(out_dir, i).exists()]
        buffers[la] = {}
        for i in todo:
            size = min(chunk_size, n - i * chunk_size)
            buffers[la][i] = {"filled": np.zeros(size, bool),
                              "logits": np.zeros((size, 1), np.float32),
                              "probabilities": np.zeros((size, 1), np.float32)}  # fmt: skip
            need[i * chunk_size : (i + 1) * chunk_size] = True
    for p in pd.unique(pid[need]):
        rows = np.flatnonzero(pid == p)
        x = np.asarray(store.images[rows], np.float32)[..., None]
        res = bag_cams(model, x, vol[rows], head, pooling, layers, methods, embedding_layer,
                       resize=False, one_pass=True)  # fmt: skip
        for la in layers:
            manifest = manifests[la]
            if "provenance" not in manifest:
                manifest["provenance"] = {k: v for k, v in res[la].provenance.items()
                                          if k not in ("normalisation", "eta", "slice_weights")}  # fmt: skip
            _fill(buffers[la], rows, res[la], methods, chunk_size)
            for c in [c for c, b in buffers[la].items() if b["filled"].all()]:
                _write_chunk(_chunk_dir(out_dirs[la], c), buffers[la].pop(c), methods)
    out = {}
    for la, out_dir in out_dirs.items():
        if buffers[la]:  # pragma: no cover - every slice belongs to a patient
            raise RuntimeError(f"{out_dir}: chunks {sorted(buffers[la])} were not filled")
        manifests[la]["status"] = "complete"
        write_json_atomic(out_dir / MANIFEST, manifests[la])
        out[la] = CamStore.open(out_dir)
    return out
