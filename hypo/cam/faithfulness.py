"""Faithfulness of maps: does the model's score depend on the pixels a map calls relevant?

Beside the localisation metrics (does the map hit the lesion?) and the randomisation test
(does the map depend on the model?), these perturb the image in the order a map ranks its
pixels and watch the explained class's score:

- **Deletion** (Petsiuk et al. 2018, RISE): replace the most relevant pixels first by a
  baseline (default 0); a faithful map makes the score fall fast: low area under the curve.
- **Insertion** (same paper): start from a blurred image and put the most relevant pixels
  back first; a faithful map makes the score rise fast: high area under the curve.
- **ROAD** (Rong et al. 2022, "A consistent and efficient evaluation strategy for
  attribution methods"): remove a fraction of pixels, most relevant first (MoRF) or least
  relevant first (LeRF), filling them by *noisy linear imputation* (each removed pixel the
  mean of its face neighbours, solved as one sparse linear system, plus a little noise) so
  the removal itself leaks no shape information. Faithful: MoRF score low, LeRF high.

Pixels are ranked by map value (at the input size), ties broken by a seeded random order,
so constant stretches of a map (zeros after the ReLU) are not removed in raster order. The
score is the class probability (``score="probability"``) or the pre-softmax logit; areas
under the curves are trapezoid means over the fraction of pixels changed (0..1), in score
units. Curves run over the spatial axes of the image input (2D, 3D, or a bag's slices) and
over all channels of a pixel together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, sparse
from scipy.sparse.linalg import spsolve

from .._util import rng_for
from .engine import _check_images, compute, predict_scores
from .result import CamResult

SCORES = ("probability", "logit")


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Perturbation curves of one set of maps.

    Attributes
    ----------
    curves : DataFrame
        Long table: ``image``, ``class``, ``curve`` ("deletion", "insertion", "road_morf",
        "road_lerf"), ``fraction`` (of pixels changed), ``score``.
    table : DataFrame
        One row per image x class x curve: ``auc`` (trapezoid mean of the score over the
        fractions), ``score_start`` (unchanged image), ``score_end``.
    """

    curves: pd.DataFrame
    table: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean and SD of the AUC per class and curve."""
        g = self.table.groupby(["class", "curve"], sort=False)["auc"]
        return g.agg(auc_mean="mean", auc_sd="std", n="count").reset_index()


def _order(maps: np.ndarray, seed: int) -> np.ndarray:
    """Pixel indices of each map, most relevant first; ties in seeded random order."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1).astype(np.float64)
    out = np.empty(flat.shape, dtype=np.int64)
    for i in range(n):
        tie = rng_for(seed, "faithfulness", i).random(flat.shape[1])
        out[i] = np.lexsort((tie, -flat[i]))
    return out


def _baseline(images: np.ndarray, baseline, blur_sigma: float) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline={baseline!r}; expected 'blur' or a number")
        sig = [0.0] + [blur_sigma] * (images.ndim - 2) + [0.0]
        return ndimage.gaussian_filter(images, sig, mode="nearest").astype(np.float32)
    return np.full_like(images, float(baseline), dtype=np.float32)


def _scores(model, x, classes, score, batch_size, kw) -> np.ndarray:
    logits, probs = predict_scores(model, x, batch_size, **kw)
    s = probs if score == "probability" else logits
    return s[:, list(classes)]


def _check_maps(images: np.ndarray, maps, classes) -> np.ndarray:
    m = np.asarray(maps, dtype=np.float64)
    want = (images.shape[0], len(classes), *images.shape[1:-1])
    if m.shape != want:
        raise ValueError(
            f"maps have shape {m.shape}; expected {want} (n_images, n_classes, *image spatial "
            "shape): compute them with resize=True"
        )
    if not np.isfinite(m).all():
        raise ValueError("maps contain NaN or inf values")
    return m


def _resolve(res_or_maps, method, classes):
    if isinstance(res_or_maps, CamResult):
        if method is None:
            if len(res_or_maps.methods) != 1:
                raise ValueError(f"name the method: the result holds {res_or_maps.methods}")
            method = res_or_maps.methods[0]
        return res_or_maps[method], tuple(res_or_maps.classes)
    if classes is None:
        raise ValueError("pass classes= with a bare array of maps")
    return res_or_maps, tuple(int(c) for c in np.atleast_1d(classes))


def _curve_rows(scores, fractions, curve, classes):
    rows = []
    for i in range(scores.shape[0]):
        for j, c in enumerate(classes):
            for f, s in zip(fractions, scores[i, j]):
                rows.append((i, c, curve, float(f), float(s)))
    return rows


def deletion_insertion(
    model,
    images,
    maps,
    method: str | None = None,
    classes: Sequence[int] | None = None,
    steps: int = 20,
    score: str = "probability",
    deletion_baseline=0.0,
    insertion_baseline="blur",
    blur_sigma: float = 5.0,
    seed: int = 0,
    batch_size: int = 32,
    inputs: dict | None = None,
    image_input: str | None = None,
) -> FaithfulnessCurves:
    """Deletion and insertion curves of maps (see the module docstring).

    Parameters
    ----------
    model : keras.Model
        As in :func:`hypo.cam.compute`.
    images : ndarray, shape (n_images, *input_shape)
    maps : CamResult or ndarray (n_images, n_classes, *spatial)
        Maps at the input size (``compute(..., resize=True)``); with a CamResult, ``method``
        picks the maps and the classes come from it.
    steps : int
        Number of equal steps from no pixel to every pixel changed.
    score : {"probability", "logit"}
    deletion_baseline, insertion_baseline : float or "blur"
        What a deleted pixel becomes; what insertion starts from ("blur": a Gaussian blur
        of the image with ``blur_sigma`` pixels).
    seed : int
        Tie-breaking order of equal map values.
    """
    if score not in SCORES:
        raise ValueError(f"score={score!r}; expected one of {SCORES}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    images = _check_images(model, images, image_input)
    maps, classes = _resolve(maps, method, classes)
    maps = _check_maps(images, maps, classes)
    kw = {"inputs": inputs, "image_input": image_input}
    n, k = maps.shape[:2]
    n_px = int(np.prod(images.shape[1:-1]))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * n_px).astype(int)
    order = _order(maps.reshape(n * k, -1), seed).reshape(n, k, -1)
    flat = images.reshape(n, n_px, -1)
    rows = []
    for curve, base in (
        ("deletion", _baseline(images, deletion_baseline, blur_sigma)),
        ("insertion", _baseline(images, insertion_baseline, blur_sigma)),
    ):
        base = base.reshape(n, n_px, -1)
        out = np.empty((n, k, len(counts)), dtype=np.float64)
        for j in range(k):
            batch = np.empty((n, len(counts), n_px, flat.shape[-1]), dtype=np.float32)
            for i in range(n):
                start, fill = (flat[i], base[i]) if curve == "deletion" else (base[i], flat[i])
                for s, c in enumerate(counts):
                    x = start.copy()
                    idx = order[i, j, :c]
                    x[idx] = fill[idx]
                    batch[i, s] = x
            xb = batch.reshape(n * len(counts), *images.shape[1:])
            kwb = _repeat_inputs(kw, len(counts))
            out[:, j] = _scores(model, xb, [classes[j]], score, batch_size, kwb).reshape(
                n, len(counts)
            )
        rows += _curve_rows(out, fractions, curve, classes)
    return _finish(rows)


def _repeat_inputs(kw, reps):
    if not kw.get("inputs"):
        return kw
    return {
        **kw,
        "inputs": {k: np.repeat(np.asarray(v), reps, axis=0) for k, v in kw["inputs"].items()},
    }


def _finish(rows) -> FaithfulnessCurves:
    curves = pd.DataFrame(rows, columns=["image", "class", "curve", "fraction", "score"])
    recs = []
    for (i, c, curve), g in curves.groupby(["image", "class", "curve"], sort=False):
        f, s = g["fraction"].to_numpy(), g["score"].to_numpy()
        span = f[-1] - f[0]
        auc = float(np.trapezoid(s, f) / span) if span > 0 else float(s.mean())
        recs.append(
            {
                "image": i,
                "class": c,
                "curve": curve,
                "auc": auc,
                "score_start": float(s[0]),
                "score_end": float(s[-1]),
            }
        )
    return FaithfulnessCurves(curves=curves, table=pd.DataFrame(recs))


def noisy_linear_imputation(
    image: np.ndarray, removed: np.ndarray, noise: float = 0.01, seed: int = 0
) -> np.ndarray:
    """Fill the ``removed`` pixels of one image (``(*spatial, channels)``) with the mean of
    their face neighbours, solving for all removed pixels at once, plus Gaussian noise of
    ``noise`` x the image's SD (ROAD's imputation, with face neighbours)."""
    x = np.asarray(image, dtype=np.float64)
    shape = x.shape[:-1]
    rem = np.asarray(removed, bool).reshape(shape)
    n = rem.size
    unknown = np.flatnonzero(rem.ravel())
    if unknown.size == 0:
        return x.astype(np.float32)
    pos = -np.ones(n, dtype=np.int64)
    pos[unknown] = np.arange(unknown.size)
    coords = np.unravel_index(unknown, shape)
    flat = x.reshape(n, -1)
    rows, cols, vals = [], [], []
    deg = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, flat.shape[1]))
    for ax in range(len(shape)):
        for step in (-1, 1):
            nb = [c.copy() for c in coords]
            nb[ax] = nb[ax] + step
            ok = (nb[ax] >= 0) & (nb[ax] < shape[ax])
            lin = np.ravel_multi_index(tuple(c[ok] for c in nb), shape)
            src = np.flatnonzero(ok)
            deg[src] += 1
            is_unknown = pos[lin] >= 0
            rows.append(src[is_unknown])
            cols.append(pos[lin[is_unknown]])
            vals.append(-np.ones(int(is_unknown.sum())))
            np.add.at(rhs, src[~is_unknown], flat[lin[~is_unknown]])
    a = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(unknown.size, unknown.size),
    ) + sparse.diags(deg)
    sol = spsolve(a.tocsc(), rhs)
    sol = sol.reshape(unknown.size, -1)
    sd = float(x.std())
    sol = sol + rng_for(seed, "road", unknown.size).normal(0, noise * sd, sol.shape)
    out = flat.copy()
    out[unknown] = sol
    return out.reshape(x.shape).astype(np.float32)


def road(
    model,
    images,
    maps,
    method: str | None = None,
    classes: Sequence[int] | None = None,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    score: str = "probability",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 32,
    inputs: dict | None = None,
    image_input: str | None = None,
) -> FaithfulnessCurves:
    """ROAD curves: remove ``fractions`` of the pixels, most relevant first (``road_morf``)
    and least relevant first (``road_lerf``), by noisy linear imputation.

    The curves start at fraction 0 (the unchanged image). Parameters as in
    :func:`deletion_insertion`; ``noise`` is the imputation noise in image SDs.
    """
    if score not in SCORES:
        raise ValueError(f"score={score!r}; expected one of {SCORES}")
    fr = np.asarray(sorted(float(f) for f in fractions))
    if fr.size == 0 or fr.min() <= 0 or fr.max() >= 1:
        raise ValueError(f"fractions {list(fractions)} must lie strictly between 0 and 1")
    images = _check_images(model, images, image_input)
    maps, classes = _resolve(maps, method, classes)
    maps = _check_maps(images, maps, classes)
    kw = {"inputs": inputs, "image_input": image_input}
    n, k = maps.shape[:2]
    spatial = images.shape[1:-1]
    n_px = int(np.prod(spatial))
    allf = np.concatenate([[0.0], fr])
    order = _order(maps.reshape(n * k, -1), seed).reshape(n, k, -1)
    start = _scores(model, images, classes, score, batch_size, kw)
    rows = []
    for curve in ("road_morf", "road_lerf"):
        out = np.empty((n, k, len(allf)))
        out[:, :, 0] = start
        for j in range(k):
            batch = []
            for i in range(n):
                ranked = order[i, j] if curve == "road_morf" else order[i, j][::-1]
                for f in fr:
                    removed = np.zeros(n_px, bool)
                    removed[ranked[: int(round(f * n_px))]] = True
                    batch.append(
                        noisy_linear_imputation(images[i], removed, noise, seed=seed * 1000 + i)
                    )
            xb = np.stack(batch)
            s = _scores(model, xb, [classes[j]], score, batch_size, _repeat_inputs(kw, len(fr)))
            out[:, j, 1:] = s.reshape(n, len(fr))
        rows += _curve_rows(out, allf, curve, classes)
    return _finish(rows)


def faithfulness_table(
    model,
    images,
    methods: Sequence[str] = ("gradcam", "gradcampp"),
    layers: Sequence | None = None,
    classes: Sequence[int] | None = None,
    steps: int = 20,
    road_fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    score: str = "probability",
    seed: int = 0,
    batch_size: int = 32,
    deletion_baseline=0.0,
    insertion_baseline="blur",
    **compute_kw,
) -> pd.DataFrame:
    """Deletion, insertion and ROAD per method and layer, one row each: mean AUC per curve
    over images and classes (``deletion_auc`` and ``road_morf_auc``: lower is more
    faithful; ``insertion_auc`` and ``road_lerf_auc``: higher is more faithful).

    ``layers`` default: the model's CAM layer (card or automatic); ``compute_kw`` go to
    :func:`hypo.cam.compute` (``inputs=``, ``image_input=``, ...).
    """
    layers = [None] if layers is None else list(layers)
    recs = []
    extra = {k: compute_kw[k] for k in ("inputs", "image_input") if k in compute_kw}
    for layer in layers:
        res = compute(model, images, layer=layer, methods=methods, classes=classes,
                      batch_size=batch_size, **compute_kw)  # fmt: skip
        for m in methods:
            di = deletion_insertion(model, images, res, m, steps=steps, score=score,
                                    deletion_baseline=deletion_baseline,
                                    insertion_baseline=insertion_baseline, seed=seed,
                                    batch_size=batch_size, **extra)  # fmt: skip
            rd = road(model, images, res, m, fractions=road_fractions, score=score,
                      seed=seed, batch_size=batch_size, **extra)  # fmt: skip
            t = pd.concat([di.table, rd.table])
            rec = {"layer": res.layer, "method": m}
            for curve, g in t.groupby("curve", sort=False):
                rec[f"{curve}_auc"] = float(g["auc"].mean())
            rec["n_maps"] = int(len(di.table) // 2)
            recs.append(rec)
    return pd.DataFrame(recs)
