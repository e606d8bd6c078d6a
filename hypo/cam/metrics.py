"""Localisation metrics of maps against binary masks (definitions as in Quantus).

All functions take a batch: ``maps`` of shape ``(n, *spatial)`` (non-negative relevance),
``masks`` of the same shape (the target, e.g. the lesion), and optionally ``brain`` masks:
when given, only pixels inside the brain count (background is neither relevance nor
target). Each returns one value per map, NaN where the metric is undefined.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def _prepare(maps, masks, brain=None):
    a = np.asarray(maps, dtype=np.float64)
    s = np.asarray(masks)
    if a.shape != s.shape:
        raise ValueError(f"maps {a.shape} and masks {s.shape} must have the same shape")
    if a.ndim < 2:
        raise ValueError(f"maps must be a batch (n, *spatial), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("maps contain NaN or inf")
    n = a.shape[0]
    a = a.reshape(n, -1)
    s = s.reshape(n, -1).astype(bool)
    if brain is None:
        b = np.ones_like(s)
    else:
        b = np.asarray(brain)
        if b.shape != np.asarray(maps).shape:
            raise ValueError(f"brain masks {b.shape} must have the maps' shape {a.shape}")
        b = b.reshape(n, -1).astype(bool)
    return a, s & b, b


def pointing_game(maps, masks, brain=None) -> np.ndarray:
    """1.0 if the map's maximum (inside the brain) lies in the mask, else 0.0.

    NaN when the mask is empty (inside the brain) or the map is constant there (no maximum
    to point with, e.g. an all-zero map). Tied maxima count as a hit if any lies in the mask.
    """
    a, s, b = _prepare(maps, masks, brain)
    am = np.where(b, a, -np.inf)
    top = am.max(axis=1, keepdims=True)
    low = np.where(b, a, np.inf).min(axis=1, keepdims=True)
    hit = ((am == top) & s).any(axis=1).astype(float)
    undefined = (~s.any(axis=1)) | (top[:, 0] <= low[:, 0])
    return np.where(undefined, np.nan, hit)


def relevance_mass_accuracy(maps, masks, brain=None) -> np.ndarray:
    """Share of the map's total relevance (inside the brain) that falls in the mask.

    NaN for an all-zero map or an empty mask.
    """
    a, s, b = _prepare(maps, masks, brain)
    total = np.where(b, a, 0).sum(axis=1)
    inside = np.where(s, a, 0).sum(axis=1)
    ok = (total > 0) & s.any(axis=1)
    return np.where(ok, inside / np.where(total > 0, total, 1), np.nan)


def _top_k_hits(a, s, b, k: np.ndarray) -> np.ndarray:
    # Stable order so tied pixels are taken in a fixed (raster) order: same inputs, same numbers.
    order = np.argsort(-np.where(b, a, -np.inf), axis=1, kind="stable")
    in_mask = np.take_along_axis(s, order, axis=1)
    cum = np.cumsum(in_mask, axis=1)
    kk = np.clip(k, 1, a.shape[1])
    return cum[np.arange(len(a)), kk - 1]


def relevance_rank_accuracy(maps, masks, brain=None) -> np.ndarray:
    """``|top-K pixels of the map & mask| / K`` with ``K = |mask|`` (inside the brain).

    NaN for an empty mask or a constant map.
    """
    a, s, b = _prepare(maps, masks, brain)
    k = s.sum(axis=1)
    hits = _top_k_hits(a, s, b, k)
    const = np.where(b, a, -np.inf).max(1) <= np.where(b, a, np.inf).min(1)
    return np.where((k > 0) & ~const, hits / np.maximum(k, 1), np.nan)


def top_k_intersection(maps, masks, k: int = 1000, brain=None) -> np.ndarray:
    """Share of the map's ``k`` most relevant pixels (inside the brain) that lie in the mask.

    ``k`` is capped at the number of brain pixels. NaN for a constant map.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    a, s, b = _prepare(maps, masks, brain)
    kk = np.minimum(int(k), b.sum(axis=1))
    hits = _top_k_hits(a, s, b, kk)
    const = np.where(b, a, -np.inf).max(1) <= np.where(b, a, np.inf).min(1)
    return np.where(const | (kk == 0), np.nan, hits / np.maximum(kk, 1))


def mask_auc(maps, masks, brain=None) -> np.ndarray:
    """ROC AUC of the map as a score separating mask pixels from the other (brain) pixels.

    Ties get average ranks (a constant map scores 0.5). NaN when either side is empty.
    """
    a, s, b = _prepare(maps, masks, brain)
    ranks = rankdata(np.where(b, a, np.nan), axis=1, nan_policy="omit")
    n_pos = s.sum(axis=1)
    n_neg = b.sum(axis=1) - n_pos
    rank_sum = np.where(s, ranks, 0).sum(axis=1)
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    ok = (n_pos > 0) & (n_neg > 0)
    return np.where(ok, u / np.where(ok, n_pos * n_neg, 1), np.nan)


def localisation_table(maps, masks, brain=None, k: int = 1000) -> pd.DataFrame:
    """All localisation metrics, one row per map.

    Columns: ``map_index``, ``mask_pixels``, ``pointing_game``, ``relevance_mass``,
    ``relevance_rank``, ``top_k_intersection``, ``auc``; and ``brain_restricted``.
    """
    s = np.asarray(masks).reshape(len(masks), -1).astype(bool)
    if brain is not None:
        s = s & np.asarray(brain).reshape(len(masks), -1).astype(bool)
    return pd.DataFrame(
        {
            "map_index": np.arange(len(s)),
            "mask_pixels": s.sum(axis=1),
            "pointing_game": pointing_game(maps, masks, brain),
            "relevance_mass": relevance_mass_accuracy(maps, masks, brain),
            "relevance_rank": relevance_rank_accuracy(maps, masks, brain),
            "top_k_intersection": top_k_intersection(maps, masks, k, brain),
            "auc": mask_auc(maps, masks, brain),
            "brain_restricted": brain is not None,
        }
    )
