"""Monte Carlo dropout (Gal & Ghahramani 2016; Herzog et al. 2020).

``T`` stochastic forward passes in which ONLY the dropout layers are active; batch
normalisation stays in inference mode (moving statistics, never updated). The model
itself is not changed: ``model.predict`` and CAMs stay deterministic. The passes run
through a twin graph that shares every layer of ``model`` except its dropout layers,
which are replaced by always-on dropouts drawing from seeds derived from ``seed``.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

EPS = 1e-12


class _AlwaysDropout(keras.layers.Layer):
    """Dropout that is active whatever ``training`` says (in-memory use only)."""

    def __init__(self, rate: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if self.rate <= 0:
            return x
        return keras.random.dropout(x, self.rate, seed=self.seed_generator)


def mc_model(model: keras.Model, seed: int = 0) -> keras.Model:
    """A twin of ``model`` whose dropout layers are always on; all other layers shared."""
    counter = iter(range(1, 1_000_000))

    def clone(layer):
        if isinstance(layer, keras.layers.Dropout):
            return _AlwaysDropout(
                layer.rate, seed=int(seed) * 7919 + next(counter), name=layer.name + "_mc"
            )
        return layer

    return keras.models.clone_model(model, clone_function=clone)


def _images4d(model: keras.Model, images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    want = len(model.input_shape)
    if x.ndim == want - 1:
        x = x[..., None]
    if x.ndim != want:
        raise ValueError(
            f"mc_predict: images have shape {x.shape}; model {model.name!r} takes "
            f"{model.input_shape} (batch first, channel last)"
        )
    return x


def mc_samples(model: keras.Model, images, T: int = 20, seed: int = 0, batch_size: int = 64):
    """Class probabilities of ``T`` MC-dropout passes, shape ``(T, n, n_classes)``."""
    if int(T) < 1:
        raise ValueError(f"mc_predict: T={T}; expected at least one pass")
    x = _images4d(model, images)
    twin = mc_model(model, seed)
    step = tf.function(lambda b: twin(b, training=False), reduce_retracing=True)
    out = []
    for _ in range(int(T)):
        passes = [
            np.asarray(step(tf.constant(x[i : i + batch_size])))
            for i in range(0, len(x), batch_size)
        ]
        out.append(np.concatenate(passes, axis=0))
    return np.stack(out).astype(np.float64)


def uncertainty(samples: np.ndarray, class_names=None) -> pd.DataFrame:
    """Predictive summaries of MC samples ``(T, n, K)``, one row per image.

    Columns: ``p_<class>`` (predictive mean), ``predicted_class``,
    ``predictive_entropy`` (nats), ``mutual_information`` (nats; entropy minus the
    mean per-pass entropy), ``variation_ratio`` (1 - share of passes voting for the
    modal class), ``total_variance`` (sum over classes of the across-pass variance).
    """
    samples = np.asarray(samples, dtype=np.float64)
    T, n, K = samples.shape
    names = list(class_names) if class_names is not None else [str(k) for k in range(K)]
    mean = samples.mean(axis=0)
    entropy = -(mean * np.log(mean + EPS)).sum(axis=1)
    exp_entropy = -(samples * np.log(samples + EPS)).sum(axis=2).mean(axis=0)
    votes = samples.argmax(axis=2)
    counts = np.stack([(votes == k).sum(axis=0) for k in range(K)], axis=1)
    df = pd.DataFrame({f"p_{c}": mean[:, k] for k, c in enumerate(names)})
    df["predicted_class"] = mean.argmax(axis=1)
    df["predictive_entropy"] = entropy
    df["mutual_information"] = np.maximum(entropy - exp_entropy, 0.0)
    df["variation_ratio"] = 1.0 - counts.max(axis=1) / T
    df["total_variance"] = samples.var(axis=0).sum(axis=1)
    df["T"] = T
    return df


def mc_predict(
    model: keras.Model,
    images,
    T: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    class_names=None,
) -> pd.DataFrame:
    """MC-dropout prediction: ``T`` passes with only dropout active, summarised.

    Parameters
    ----------
    model : keras.Model
        A hypo model (softmax output).
    images : array
        ``(n, H, W)`` or ``(n, H, W, 1)`` preprocessed slices.
    T : int
        Number of stochastic passes (Herzog et al.: 50; default 20).
    seed : int
        Seeds the dropout masks: same seed, model and images -> same numbers.
    class_names : sequence of str, optional
        Names for the ``p_<class>`` columns (default: the model card's classes if
        attached, else ``0, 1, ...``).

    Returns
    -------
    pandas.DataFrame
        See :func:`uncertainty`.
    """
    if class_names is None:
        class_names = (getattr(model, "hypo_card", None) or {}).get("classes")
    samples = mc_samples(model, images, T=T, seed=seed, batch_size=batch_size)
    return uncertainty(samples, class_names)
