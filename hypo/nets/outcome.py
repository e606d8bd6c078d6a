"""A patient-level outcome model that reads the scan: slice embeddings, pooling over a
patient's slices (multiple-instance learning), and an ordinal (proportional-odds) head.

The 3-month mRS belongs to the patient, not to one slice, so the model reads every slice of
a patient (its *bag*) and gives one prediction per patient::

    slice -> encoder (a trained CNN's backbone, frozen) -> embedding e_s
    bag   -> pooling (mean, max, gated attention, lesion-weighted mean, volume sum) -> z
    z     -> ordinal head: logit P(mRS <= j) = theta_j - eta,  eta = z' beta (+ clinical)

The head's sign convention is :func:`hypo.stats.fit_proportional_odds`'s: ``eta > 0`` (a
positive coefficient) means a *worse*, higher mRS, and ``P(mRS >= k) = expit(eta -
theta_{k-1})``. The thresholds are parameterised as a first cut plus positive increments
(``theta_j = a_0 + sum_{i<=j} exp(a_i)``), so they are always ordered.

The encoder runs once: :func:`cached_embeddings` writes every slice's embedding and lesion
probability to the cache, and every fold, pooling and penalty is fitted on them, full-batch
in float64 (:func:`fit_ordinal_head`, L-BFGS with the analytic score). With ``l2=0`` and no
standardisation the head is exactly a proportional-odds fit (tested against
:func:`hypo.stats.fit_proportional_odds`).

Poolings (:data:`POOLINGS`), over the slices ``s`` of one patient:

``mean``          the average embedding;
``max``           the channel-wise maximum;
``attention``     gated attention (Ilse et al. 2018): weights ``softmax_s(w' (tanh(V e_s) *
                  sigmoid(U e_s)))`` learnt with the head on the training patients;
``lesion_mean``   the average weighted by the encoder's lesion probability ``p_s``;
``volume_sum``    ``log(1 + sum_s p_s v_s e_s)``, ``v_s`` the slice's volume in mL: a sum
                  keeps the lesion's extent, which every average loses (extent is the
                  image's main outcome signal), and the logarithm puts it on the scale the
                  outcome acts on (log lesion volume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from scipy import optimize, special

from hypo._util import atomic_path, weights_hash
from hypo.paths import cache_dir

POOLINGS = ("mean", "max", "attention", "lesion_mean", "volume_sum")
#: The stroke model's layer whose output is the slice embedding (GAP -> BN -> ReLU).
DEFAULT_EMBEDDING_LAYER = "head_relu"
#: Hidden units of the gated attention; embeddings are projected on this many principal
#: components of the training slices first, so that a fit takes seconds, not minutes.
ATTENTION_HIDDEN = 16
ATTENTION_COMPONENTS = 32
EMBEDDING_VERSION = 1


# --------------------------------------------------------------------------- embeddings


@dataclass
class SliceEmbeddings:
    """Per-slice encoder outputs of a slice store (one row per store slice).

    Attributes
    ----------
    embeddings : ndarray (n_slices, d), float32
        Output of ``layer`` per slice.
    lesion_probability : ndarray (n_slices,)
        The encoder model's probability of its last class (stroke: lesion visible).
    participant_id : ndarray of str
    slice_volume_ml : ndarray (n_slices,)
        Physical volume the preprocessed slice covers (pixel area x pixels x thickness), mL.
    layer, model_hash : str
    """

    embeddings: np.ndarray
    lesion_probability: np.ndarray
    participant_id: np.ndarray
    slice_volume_ml: np.ndarray
    layer: str
    model_hash: str

    def __len__(self) -> int:
        return len(self.embeddings)


def encoder_model(model, layer: str = DEFAULT_EMBEDDING_LAYER):
    """A Keras model with the same input and two outputs: ``layer``'s output (flattened per
    slice when spatial) and the model's class probabilities. One pass gives both."""
    try:
        out = model.get_layer(layer).output
    except ValueError:
        names = [la.name for la in model.layers]
        raise ValueError(f"model {model.name!r} has no layer {layer!r}; it has {names}") from None
    if len(out.shape) > 2:
        out = keras.layers.Flatten(name="embedding_flat")(out)
    return keras.Model(model.inputs, [out, model.outputs[0]], name=f"{model.name}_encoder")


def embed_slices(encoder, images, batch_size: int = 64, chunk: int = 1024):
    """Run ``encoder`` (:func:`encoder_model`) over ``images`` (n, H, W) or (n, H, W, 1) in
    chunks (a memory-mapped store is never read whole). Returns (embeddings float32,
    probability of the last class)."""
    n = len(images)
    embs, probs = [], []
    for start in range(0, n, chunk):
        x = np.asarray(images[start : start + chunk], np.float32)
        if x.ndim == 3:
            x = x[..., None]
        e, p = encoder.predict(x, batch_size=batch_size, verbose=0)
        embs.append(np.asarray(e, np.float32).reshape(len(x), -1))
        probs.append(np.asarray(p, np.float64)[:, -1])
    if not embs:
        raise ValueError("embed_slices: no images")
    return np.concatenate(embs), np.concatenate(probs)


def slice_volume_ml(table) -> np.ndarray:
    """Volume each preprocessed slice covers: pixel_mm_row x pixel_mm_col x out_rows x
    out_cols x slice_thickness_mm / 1000 (mL), from a slice-store table."""
    need = ("pixel_mm_row", "pixel_mm_col", "out_rows", "out_cols", "slice_thickness_mm")
    miss = [c for c in need if c not in table.columns]
    if miss:
        raise ValueError(f"slice table lacks column(s) {miss}; a hypo slice store has them")
    t = table
    v = (
        t["pixel_mm_row"].to_numpy(float)
        * t["pixel_mm_col"].to_numpy(float)
        * t["out_rows"].to_numpy(float)
        * t["out_cols"].to_numpy(float)
        * t["slice_thickness_mm"].to_numpy(float)
        / 1000.0
    )
    return v


def cached_embeddings(
    model, store, layer: str = DEFAULT_EMBEDDING_LAYER, batch_size: int = 64, root=None
) -> SliceEmbeddings:
    """Every slice's embedding at ``layer`` and lesion probability, computed once per
    (store, model weights, layer) and cached under ``cache_dir()/embeddings`` (written to a
    temporary name, then renamed)."""
    mhash = weights_hash(model)
    root = Path(root) if root is not None else cache_dir() / "embeddings"
    path = root / f"{Path(store.path).name}-{mhash}-{layer}-v{EMBEDDING_VERSION}.npz"
    pid = store.table["participant_id"].astype(str).to_numpy()
    vol = slice_volume_ml(store.table)
    if path.exists():
        with np.load(path) as z:
            emb, prob = z["embeddings"], z["lesion_probability"]
        if len(emb) == len(pid):
            return SliceEmbeddings(emb, prob, pid, vol, layer, mhash)
    emb, prob = embed_slices(encoder_model(model, layer), store.images, batch_size)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, embeddings=emb, lesion_probability=prob)
    return SliceEmbeddings(emb, prob, pid, vol, layer, mhash)


# --------------------------------------------------------------------------- bags


@dataclass
class Bags:
    """The slices of each patient: ``rows[i]`` are the slice rows of ``patients[i]``."""

    patients: np.ndarray
    rows: list

    def __len__(self) -> int:
        return len(self.patients)

    def subset(self, idx) -> Bags:
        idx = np.asarray(idx, int)
        return Bags(self.patients[idx], [self.rows[i] for i in idx])


def make_bags(slice_patients, patients) -> Bags:
    """Bags of ``patients`` from per-slice patient ids; raises naming a patient without a
    slice (exclude such patients, with their reason, before)."""
    sp = np.asarray(slice_patients).astype(str)
    order = np.argsort(sp, kind="stable")
    uniq, first = np.unique(sp[order], return_index=True)
    groups = dict(zip(uniq, np.split(order, first[1:])))
    rows, empty = [], []
    for p in np.asarray(patients).astype(str):
        r = groups.get(p)
        if r is None or len(r) == 0:
            empty.append(p)
        rows.append(np.sort(r) if r is not None else np.zeros(0, int))
    if empty:
        raise ValueError(
            f"patient(s) {empty[:5]}{' ...' if len(empty) > 5 else ''} have no usable slice "
            f"({len(empty)} in all); exclude them (counted in the patient flow) first"
        )
    return Bags(np.asarray(patients).astype(str), rows)


def slice_weights(emb: SliceEmbeddings, pooling: str) -> np.ndarray:
    """Per-slice weights of the fixed weighted poolings (ones for the others)."""
    if pooling == "lesion_mean":
        return np.asarray(emb.lesion_probability, np.float64)
    if pooling == "volume_sum":
        return np.asarray(emb.lesion_probability * emb.slice_volume_ml, np.float64)
    return np.ones(len(emb))


def pool_fixed(x: np.ndarray, bags: Bags, pooling: str, weights=None) -> np.ndarray:
    """Pool slice features ``x`` (n_slices, d) over each bag with a parameter-free pooling.

    ``weights`` per slice are needed for ``lesion_mean`` and ``volume_sum``
    (:func:`slice_weights`). Returns float64 (n_patients, d).
    """
    if pooling not in POOLINGS or pooling == "attention":
        raise ValueError(
            f"pooling {pooling!r}: expected a fixed pooling, one of "
            f"{[p for p in POOLINGS if p != 'attention']} (attention is learnt with the head)"
        )
    x = np.asarray(x, np.float64)
    out = np.empty((len(bags), x.shape[1]))
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    for i, r in enumerate(bags.rows):
        xr = x[r]
        if pooling == "mean":
            out[i] = xr.mean(0)
        elif pooling == "max":
            out[i] = xr.max(0)
        elif pooling == "lesion_mean":
            wr = w[r]
            # A bag with no lesion probability anywhere falls back to the plain mean.
            out[i] = wr @ xr / wr.sum() if wr.sum() > 0 else xr.mean(0)
        else:  # volume_sum
            out[i] = np.log1p(np.maximum(w[r] @ xr, 0.0))
    return out


def lesion_extent(emb: SliceEmbeddings, bags: Bags) -> np.ndarray:
    """The encoder's estimate of a patient's lesion extent, ``log(1 + sum_s p_s v_s)``
    (``p_s`` lesion probability, ``v_s`` slice volume in mL): what the ``volume_sum``
    pooling keeps, as one number. Every image head reads it beside the pooled embedding."""
    w = np.asarray(emb.lesion_probability * emb.slice_volume_ml, np.float64)
    return np.array([np.log1p(w[r].sum()) for r in bags.rows])


# --------------------------------------------------------------------------- ordinal head


def thresholds_from(a: np.ndarray) -> np.ndarray:
    """Ordered cut-points ``theta_j = a_0 + sum_{1<=i<=j} exp(a_i)``."""
    a = np.asarray(a, float)
    return a[0] + np.concatenate([[0.0], np.cumsum(np.exp(a[1:]))])


def _nll_and_grad(params, X, codes, n_thr, l2, pen):
    """Mean negative log-likelihood + 0.5 l2 |pen * beta|^2 and its gradient."""
    n, k = X.shape
    beta, a = params[:k], params[k:]
    theta = thresholds_from(a)
    eta = X @ beta
    ext = np.concatenate([[-np.inf], theta, [np.inf]])
    up, lo = ext[codes + 1] - eta, ext[codes] - eta
    fu, fl = special.expit(up), special.expit(lo)
    prob = np.maximum(fu - fl, 1e-300)
    du, dl = fu * (1 - fu), fl * (1 - fl)
    g_beta = -X.T @ ((du - dl) / prob)
    g_theta = (
        np.bincount(codes, du / prob, minlength=n_thr + 1)[:n_thr]
        - np.bincount(codes, dl / prob, minlength=n_thr + 1)[1 : n_thr + 1]
    )
    tail = np.cumsum(g_theta[::-1])[::-1]
    g_a = np.concatenate([[g_theta.sum()], np.exp(a[1:]) * tail[1:]])
    f = -np.sum(np.log(prob)) / n + 0.5 * l2 * np.sum((pen * beta) ** 2)
    g = -np.concatenate([g_beta, g_a]) / n
    g[:k] += l2 * pen**2 * beta
    return f, g


@dataclass
class OrdinalHead:
    """A fitted cumulative-logit head over outcome levels ``levels`` (e.g. mRS 0-6).

    ``eta = ((x - center) / scale) @ beta`` for an input row ``x``; ``thresholds`` are the
    cut-points between the *fitted* levels (``fitted_levels``): a level absent from the
    training patients is merged with its neighbour (probability 0, recorded in ``merged``).
    """

    beta: np.ndarray
    thresholds: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    levels: tuple
    fitted_levels: tuple
    l2: float
    converged: bool
    n_iter: int
    merged: tuple = ()
    penalised: np.ndarray | None = field(default=None, repr=False)
    beta_reduced: np.ndarray | None = field(default=None, repr=False)

    def linear_predictor(self, X) -> np.ndarray:
        """``eta`` per row (higher = worse outcome), float64."""
        Z = (np.asarray(X, np.float64) - self.center) / self.scale
        return Z @ self.beta

    def predict_proba(self, X=None, eta=None) -> np.ndarray:
        """P(outcome = level) for every level of ``levels`` (columns), rows of ``X``."""
        eta = self.linear_predictor(X) if eta is None else np.asarray(eta, float)
        cdf = special.expit(self.thresholds[None, :] - eta[:, None])
        cdf = np.hstack([np.zeros((len(eta), 1)), cdf, np.ones((len(eta), 1))])
        pf = np.diff(cdf, axis=1)
        out = np.zeros((len(eta), len(self.levels)))
        pos = [self.levels.index(lv) for lv in self.fitted_levels]
        out[:, pos] = pf
        return out

    def prob_at_least(self, X=None, eta=None) -> np.ndarray:
        """P(outcome >= level_k) for k = 1..K-1 (columns), e.g. P(mRS >= 1) ... P(mRS >= 6)."""
        p = self.predict_proba(X, eta)
        return np.cumsum(p[:, ::-1], axis=1)[:, ::-1][:, 1:]

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> OrdinalHead:
        """The head of :meth:`to_dict` (e.g. ``head.json``'s ``image``); ``source`` names the
        file in errors. ``converged``/``n_iter`` are not stored: a saved head counts as
        converged."""
        need = ("beta", "thresholds", "center", "scale", "levels", "fitted_levels", "l2")
        miss = [k for k in need if k not in d]
        if miss:
            raise ValueError(f"{source}: ordinal head lacks {miss}")
        beta = np.asarray(d["beta"], np.float64)
        center = np.asarray(d["center"], np.float64)
        scale = np.asarray(d["scale"], np.float64)
        if not (beta.shape == center.shape == scale.shape) or beta.ndim != 1:
            raise ValueError(
                f"{source}: beta {beta.shape}, center {center.shape} and scale {scale.shape} "
                "must be vectors of one length"
            )
        return cls(
            beta=beta,
            thresholds=np.asarray(d["thresholds"], np.float64),
            center=center,
            scale=scale,
            levels=tuple(d["levels"]),
            fitted_levels=tuple(d["fitted_levels"]),
            l2=float(d["l2"]),
            converged=True,
            n_iter=0,
            merged=tuple(d.get("merged", ())),
        )

    def to_dict(self) -> dict:
        return {
            "beta": self.beta.tolist(),
            "thresholds": self.thresholds.tolist(),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "levels": list(self.levels),
            "fitted_levels": list(self.fitted_levels),
            "l2": self.l2,
            "merged": list(self.merged),
        }


def _head_levels(X, y, l2, levels):
    """Checked inputs: ``(levels, fitted levels, merged levels, codes of y)``."""
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"fit_ordinal_head: X {X.shape} and y {y.shape} do not match")
    if not np.all(np.isfinite(X)):
        raise ValueError("fit_ordinal_head: X has non-finite values")
    if l2 < 0:
        raise ValueError(f"fit_ordinal_head: l2={l2}; expected >= 0")
    observed = np.unique(y)
    levels = tuple(observed.tolist()) if levels is None else tuple(levels)
    unknown = sorted(set(observed.tolist()) - set(levels))
    if unknown:
        raise ValueError(f"fit_ordinal_head: outcome values {unknown} are not in levels {levels}")
    if len(observed) < 2:
        raise ValueError("fit_ordinal_head: the outcome has a single level")
    fitted = tuple(lv for lv in levels if lv in set(observed.tolist()))
    merged = tuple(lv for lv in levels if lv not in fitted)
    return levels, fitted, merged, np.searchsorted(np.asarray(fitted), y)


def _start_values(b0, start, codes, k: int, n_thr: int) -> np.ndarray:
    """Optimiser start: a warm start's values, else zero slopes and the observed cuts."""
    if b0 is not None and len(b0) == k and len(start.thresholds) == n_thr:
        th = start.thresholds
        return np.concatenate([b0, [th[0]], np.log(np.maximum(np.diff(th), 1e-6))])
    cum = np.cumsum(np.bincount(codes, minlength=n_thr + 1))[:-1] / len(codes)
    th = special.logit(np.clip(cum, 1e-3, 1 - 1e-3))
    return np.concatenate([np.zeros(k), [th[0]], np.log(np.maximum(np.diff(th), 1e-3))])


def fit_ordinal_head(
    X,
    y,
    l2: float = 0.0,
    levels=None,
    standardize: bool = True,
    penalize=None,
    start=None,
    n_components: int | None = None,
    gtol: float = 1e-8,
    maxiter: int = 5000,
) -> OrdinalHead:
    """Fit the cumulative-logit head full-batch in float64 (L-BFGS, analytic score).

    Parameters
    ----------
    X : array (n_patients, k)
        Pooled image features (and clinical covariates for fusion).
    y : array of int
        Outcome levels (e.g. mRS 0-6).
    l2 : float
        Penalty ``0.5 * l2 * |beta|^2`` added to the mean negative log-likelihood (on the
        standardised scale when ``standardize``).
    levels : sequence, optional
        All levels the head predicts (default: those in ``y``). A level absent from ``y``
        is merged with its neighbour (recorded in ``merged``).
    standardize : bool
        Centre and scale each column on these rows (constant columns get scale 1).
    penalize : bool array (k,), optional
        Which columns the penalty applies to (default all); e.g. clinical columns of a
        fusion head left unpenalised.
    start : OrdinalHead, optional
        Warm start (same columns and fitted levels).
    n_components : int, optional
        Fit the penalised columns' coefficients in the span of their first
        ``n_components`` principal axes on these rows (after standardisation); the head
        keeps ``beta`` in the full standardised space (``beta = axes @ beta_reduced``), so it
        is applied like any other. Pooled embeddings of a few hundred patients have a low
        effective rank (32 axes keep ~95 % of the variance), and the fit takes
        milliseconds instead of a second.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    levels, fitted, merged, codes = _head_levels(X, y, l2, levels)
    if standardize:
        center = X.mean(0)
        scale = X.std(0)
        scale = np.where(scale > 0, scale, 1.0)
    else:
        center, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    Z = (X - center) / scale
    k, n_thr = X.shape[1], len(fitted) - 1
    pen = np.ones(k) if penalize is None else np.asarray(penalize, float)
    axes = None
    if n_components is not None and int(n_components) < int((pen > 0).sum()):
        pc = np.flatnonzero(pen > 0)
        _, _, vt = np.linalg.svd(Z[:, pc] - Z[:, pc].mean(0), full_matrices=False)
        axes = vt[: int(n_components)].T  # (n_penalised, m), orthonormal columns
        free = np.flatnonzero(pen == 0)
        Z = np.column_stack([Z[:, pc] @ axes, Z[:, free]])
        pen_full = pen
        pen = np.concatenate([np.ones(axes.shape[1]), np.zeros(len(free))])
        k = Z.shape[1]
    b0 = None if start is None else (start.beta if axes is None else start.beta_reduced)
    p0 = _start_values(b0, start, codes, k, n_thr)
    with np.errstate(all="ignore"):
        res = optimize.minimize(
            _nll_and_grad,
            p0,
            args=(Z, codes, n_thr, float(l2), pen),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": gtol, "ftol": 1e-15, "maxiter": maxiter, "maxcor": 30},
        )
    grad = float(np.max(np.abs(res.jac))) if res.jac is not None else np.inf
    beta = res.x[:k].copy()
    reduced = None
    if axes is not None:
        reduced = beta
        beta = np.zeros(len(pen_full))
        beta[pc] = axes @ reduced[: axes.shape[1]]
        beta[free] = reduced[axes.shape[1] :]
        pen = pen_full
    return OrdinalHead(
        beta=beta,
        thresholds=thresholds_from(res.x[k:]),
        center=center,
        scale=scale,
        levels=levels,
        fitted_levels=fitted,
        l2=float(l2),
        converged=bool(res.success or grad < 1e-6),
        n_iter=int(res.nit),
        merged=merged,
        penalised=pen,
        beta_reduced=reduced,
    )


def ordinal_nll(head: OrdinalHead, X=None, y=None, eta=None) -> float:
    """Mean negative log-likelihood of ``y`` under ``head`` (levels the head merged get a
    floor probability of 1e-12)."""
    p = head.predict_proba(X, eta)
    idx = np.array([head.levels.index(v) for v in np.asarray(y).tolist()])
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(idx)), idx], 1e-12))))


# --------------------------------------------------------------------------- attention


@dataclass
class AttentionHead:
    """Gated-attention pooling learnt jointly with an ordinal head.

    Slice features are centred and projected on ``components`` (principal axes of the
    training slices, ``(d, m)``) and divided by ``scale``; then ``s = (tanh(h V) *
    sigmoid(h U)) w``, ``a = softmax over the bag``, ``z = sum_s a_s h_s`` and the ordinal
    head reads ``z`` (no further standardisation).
    """

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    V: np.ndarray
    U: np.ndarray
    w: np.ndarray
    head: OrdinalHead

    def project(self, x) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.components) / self.scale

    def attention(self, h_bag: np.ndarray) -> np.ndarray:
        s = (np.tanh(h_bag @ self.V) * special.expit(h_bag @ self.U)) @ self.w
        return special.softmax(s)

    def pooled(self, x, bags: Bags) -> np.ndarray:
        h = self.project(x)
        return np.stack([self.attention(h[r]) @ h[r] for r in bags.rows])

    def linear_predictor(self, x, bags: Bags) -> np.ndarray:
        return self.head.linear_predictor(self.pooled(x, bags))


def _padded(h: np.ndarray, bags: Bags):
    m = max(len(r) for r in bags.rows)
    out = np.zeros((len(bags), m, h.shape[1]))
    mask = np.zeros((len(bags), m))
    for i, r in enumerate(bags.rows):
        out[i, : len(r)] = h[r]
        mask[i, : len(r)] = 1.0
    return out, mask


def fit_attention_head(
    x, bags: Bags, y, l2: float, levels=None, seed: int = 0, maxiter: int = 500
) -> AttentionHead:
    """Fit gated attention and the ordinal head together, full-batch in float64.

    Objective: mean negative log-likelihood + 0.5 l2 (|beta|^2 + |V|^2 + |U|^2 + |w|^2);
    gradients by TensorFlow, optimised with scipy's L-BFGS. ``x`` are the slice features
    of every slice (rows indexed by ``bags``); the projection is fitted on the bags' slices.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    all_rows = np.concatenate(bags.rows)
    xs = x[all_rows]
    mean = xs.mean(0)
    m = min(ATTENTION_COMPONENTS, xs.shape[1], len(xs) - 1)
    _, _, vt = np.linalg.svd(xs - mean, full_matrices=False)
    comps = vt[:m].T
    proj = (xs - mean) @ comps
    scale = proj.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    h = ((x - mean) @ comps) / scale
    observed = np.unique(y)
    levels = tuple(observed.tolist()) if levels is None else tuple(levels)
    fitted = tuple(lv for lv in levels if lv in set(observed.tolist()))
    codes = np.searchsorted(np.asarray(fitted), y)
    n_thr = len(fitted) - 1
    hp, mask = _padded(h, bags)
    rng = np.random.default_rng(seed)
    hd = ATTENTION_HIDDEN
    shapes = [(m, hd), (m, hd), (hd,), (m,), (n_thr,)]
    sizes = [int(np.prod(s)) for s in shapes]
    cum = np.cumsum(np.bincount(codes, minlength=n_thr + 1))[:-1] / len(codes)
    th = special.logit(np.clip(cum, 1e-3, 1 - 1e-3))
    p0 = np.concatenate([
        rng.normal(0, 1 / np.sqrt(m), m * hd), rng.normal(0, 1 / np.sqrt(m), m * hd),
        rng.normal(0, 1 / np.sqrt(hd), hd), np.zeros(m),
        [th[0]], np.log(np.maximum(np.diff(th), 1e-3)),
    ])  # fmt: skip
    H = tf.constant(hp)
    M = tf.constant(mask)
    C = tf.constant(codes, tf.int32)
    n = float(len(codes))

    @tf.function(input_signature=[tf.TensorSpec([sum(sizes)], tf.float64)])
    def value_grad(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            V, U, w, beta, a = tf.split(p, sizes)
            V, U = tf.reshape(V, shapes[0]), tf.reshape(U, shapes[1])
            s = tf.einsum("bsh,h->bs", tf.tanh(H @ V) * tf.sigmoid(H @ U), w)
            s = tf.where(M > 0, s, tf.constant(-1e30, tf.float64))
            att = tf.nn.softmax(s, axis=1) * M
            z = tf.einsum("bs,bsm->bm", att, H)
            eta = tf.linalg.matvec(z, beta)
            theta = a[0] + tf.concat([[0.0], tf.cumsum(tf.exp(a[1:]))], 0)
            big = tf.constant([1e6], tf.float64)
            ext = tf.concat([-big, theta, big], 0)
            up = tf.gather(ext, C + 1) - eta
            lo = tf.gather(ext, C) - eta
            prob = tf.maximum(tf.sigmoid(up) - tf.sigmoid(lo), 1e-300)
            reg = tf.reduce_sum(beta**2) + tf.reduce_sum(V**2) + tf.reduce_sum(U**2)
            f = -tf.reduce_sum(tf.math.log(prob)) / n + 0.5 * l2 * (reg + tf.reduce_sum(w**2))
        return f, tape.gradient(f, p)

    def fun(p):
        f, g = value_grad(tf.constant(p))
        return float(f.numpy()), g.numpy().astype(np.float64)

    res = optimize.minimize(fun, p0, jac=True, method="L-BFGS-B",
                            options={"maxiter": maxiter, "gtol": 1e-7})  # fmt: skip
    V, U, w, beta, a = np.split(res.x, np.cumsum(sizes)[:-1])
    head = OrdinalHead(
        beta=beta,
        thresholds=thresholds_from(a),
        center=np.zeros(m),
        scale=np.ones(m),
        levels=levels,
        fitted_levels=fitted,
        l2=float(l2),
        converged=bool(res.success),
        n_iter=int(res.nit),
        merged=tuple(lv for lv in levels if lv not in fitted),
    )
    return AttentionHead(mean, comps, scale, V.reshape(shapes[0]), U.reshape(shapes[1]), w, head)


# --------------------------------------------------------------------------- Keras bag model

#: Architecture name of the bag model in its card (:func:`hypo.nets.load_model` loads it).
BAG_ARCHITECTURE = "mil-ordinal"


@keras.saving.register_keras_serializable(package="hypo")
class PerSlice(keras.layers.Wrapper):
    """Run a slice model on every slice of each bag: (B, S, H, W, 1) -> (B, S, k).

    The bags are folded into one batch of B x S slices and unfolded after, so the slice
    model sees the same batches as :func:`embed_slices` (``TimeDistributed`` maps slice by
    slice and, with a dynamic number of slices, gave wrong results after its first trace)."""

    def call(self, bags):
        ops = keras.ops
        shape = ops.shape(bags)
        flat = ops.reshape(bags, (-1, *bags.shape[2:]))
        out = self.layer(flat, training=False)
        return ops.reshape(out, (shape[0], shape[1], out.shape[-1]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], inner[-1])


@keras.saving.register_keras_serializable(package="hypo")
class BagPooling(keras.layers.Layer):
    """Pool per-slice ``[embedding, lesion probability]`` rows of each bag (B, S, d + 1)
    with the slices' volumes (B, S) into ``[pooled embedding, lesion extent]`` (B, d + 1).

    Padded slices (volume 0) are left out; a fixed pooling of :data:`POOLINGS`, computed
    as :func:`pool_fixed` and :func:`lesion_extent` compute it."""

    def __init__(self, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS or pooling == "attention":
            raise ValueError(f"BagPooling: pooling {pooling!r} is not a fixed pooling")
        self.pooling = pooling

    def call(self, rows, volume):
        ops = keras.ops
        rows = ops.cast(rows, self.compute_dtype)
        v = ops.cast(volume, self.compute_dtype)
        emb, p = rows[..., :-1], rows[..., -1]
        m = ops.cast(v > 0, self.compute_dtype)
        if self.pooling == "mean":
            pooled = ops.sum(emb * m[..., None], 1) / ops.sum(m, 1)[:, None]
        elif self.pooling == "max":
            pooled = ops.max(emb + (m[..., None] - 1.0) * 1e30, 1)
        elif self.pooling == "lesion_mean":
            w = p * m
            pooled = ops.sum(emb * w[..., None], 1) / ops.sum(w, 1)[:, None]
        else:
            w = p * v
            pooled = ops.log1p(ops.maximum(ops.sum(emb * w[..., None], 1), 0.0))
        extent = ops.log1p(ops.sum(p * v, 1))
        return ops.concatenate([pooled, extent[:, None]], axis=1)

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}


@keras.saving.register_keras_serializable(package="hypo")
class OrdinalOutput(keras.layers.Layer):
    """P(outcome = level) from the linear predictor ``eta`` (B, 1) and fixed cut-points:
    ``P(Y <= j) = expit(theta_j - eta)`` (``cuts`` between consecutive levels; a merged
    level has a cut of +-1e30 next to it and gets probability 0)."""

    def __init__(self, cuts=(), **kwargs):
        super().__init__(**kwargs)
        self.cuts = [float(c) for c in cuts]

    def call(self, eta):
        ops = keras.ops
        cuts = ops.convert_to_tensor(self.cuts, dtype=self.compute_dtype)
        eta = ops.cast(eta, self.compute_dtype)
        cdf = ops.sigmoid(cuts[None, :] - eta)
        zeros = ops.zeros_like(eta)
        cdf = ops.concatenate([zeros, cdf, zeros + 1.0], axis=1)
        return cdf[:, 1:] - cdf[:, :-1]

    def get_config(self):
        return {**super().get_config(), "cuts": self.cuts}


def full_cuts(head: OrdinalHead) -> list[float]:
    """Cut-points between every pair of consecutive ``head.levels`` (merged levels: +-1e30)."""
    fitted = list(head.fitted_levels)
    cuts = []
    for j in range(len(head.levels) - 1):
        below = [i for i, lv in enumerate(fitted) if lv <= head.levels[j]]
        if not below:
            cuts.append(-1e30)
        elif below[-1] == len(fitted) - 1:
            cuts.append(1e30)
        else:
            cuts.append(float(head.thresholds[below[-1]]))
    return cuts


def build_bag_model(encoder, head: OrdinalHead, pooling: str,
                    embedding_layer: str = DEFAULT_EMBEDDING_LAYER):  # fmt: skip
    """The outcome model as one Keras model: inputs ``slices`` (B, S, H, W, 1) and
    ``slice_volume_ml`` (B, S; 0 = padding), output P(mRS = k) (B, K).

    The encoder runs per slice (:class:`PerSlice`); its embedding and lesion probability
    are pooled (:class:`BagPooling`); a ``Dense`` layer named ``logits`` gives the
    patient's linear predictor ``eta`` (the head's standardisation folded into its weights)
    and :class:`OrdinalOutput` the level probabilities. Pooling and head run in float64,
    so the scores equal the cached path's (:meth:`OrdinalHead.predict_proba` of
    :func:`pool_fixed` rows) to ~1e-6."""
    layers = keras.layers
    emb = encoder.get_layer(embedding_layer).output
    # The last class's probability as a (None, 1) column without a Lambda layer.
    pick = layers.Dense(1, use_bias=False, trainable=False, name="lesion_probability",
                        dtype="float32")  # fmt: skip
    p = pick(encoder.outputs[0])
    rows = layers.Concatenate(name="slice_row", dtype="float32")(
        [layers.Activation("linear", dtype="float32", name="embedding")(emb), p]
    )
    inner = keras.Model(encoder.inputs, rows, name="slice_encoder")
    n_cls = encoder.outputs[0].shape[-1]
    pick.set_weights([np.eye(n_cls)[:, -1:].astype(np.float32)])
    shape = tuple(encoder.inputs[0].shape[1:])
    slices = keras.Input(shape=(None, *shape), name="slices")
    volume = keras.Input(shape=(None,), name="slice_volume_ml")
    per_slice = PerSlice(inner, name="per_slice")(slices)
    z = BagPooling(pooling, name="pooling", dtype="float64")(per_slice, volume)
    logits = layers.Dense(1, name="logits", dtype="float64")(z)
    probs = OrdinalOutput(full_cuts(head), name="probabilities", dtype="float64")(logits)
    model = keras.Model([slices, volume], probs, name="outcome_mil")
    kernel = (head.beta / head.scale)[:, None]
    bias = np.array([-float(head.center @ (head.beta / head.scale))])
    model.get_layer("logits").set_weights([kernel, bias])
    return model
