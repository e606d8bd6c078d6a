"""Deterministic ``tf.data`` pipelines with Keras augmentation layers.

Every epoch's order and every batch's augmentation are drawn from stateless seeds
``(seed, epoch, batch)``, so an epoch's batches are the same whether training ran
straight through or was resumed from a checkpoint, and parallel map calls cannot race
on a shared random state. Images are gathered batch-wise from a NumPy array or a
memory map (a slice store), so nothing large is embedded in the graph.

Horizontal flips are OFF by default: they swap the patient's hemispheres (paper's
"left is left" invariant); turning them on is an explicit, recorded choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf
from keras.src.random.seed_generator import SeedGenerator


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric augmentation (defaults from the paper's code, flips and shear left out).

    Parameters
    ----------
    enabled : bool
        Apply augmentation to training batches.
    rotation_deg : float
        Maximum absolute rotation, degrees (paper code: 20).
    shift : float
        Maximum translation as a fraction of height/width (code: 0.2; mRS: 0.3).
    zoom : float
        Maximum zoom as a fraction (code: 0.5 -> zoom in or out by up to 50 %).
    horizontal_flip : bool
        Mirror left-right. Off by default because it swaps hemispheres.
    vertical_flip : bool
        Mirror anterior-posterior (code: on; off here unless asked for).
    fill_mode : str
        Keras fill mode outside the image ("constant" = 0, the normalised background).
    """

    enabled: bool = True
    rotation_deg: float = 20.0
    shift: float = 0.2
    zoom: float = 0.5
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "constant"

    def to_dict(self) -> dict:
        return asdict(self)


class _StatelessSeed(SeedGenerator):
    """A seed source for Keras random layers that derives seeds from a tensor.

    Keras layers draw from a stateful ``SeedGenerator``; handing them this object
    instead makes each draw a pure function of ``(base seed, draw number)``.
    """

    def __init__(self, base):  # noqa: D107 -- deliberately no variable state
        self._base = base
        self._n = 0

    def next(self, ordered=True):
        self._n += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._n)


class Augmenter:
    """Applies an :class:`AugmentConfig` to image batches with Keras preprocessing layers."""

    def __init__(self, config: AugmentConfig):
        self.config = config
        c = config
        self.layers = []
        if c.rotation_deg:
            self.layers.append(
                keras.layers.RandomRotation(c.rotation_deg / 360.0, fill_mode=c.fill_mode)
            )
        if c.shift:
            self.layers.append(
                keras.layers.RandomTranslation(c.shift, c.shift, fill_mode=c.fill_mode)
            )
        if c.zoom:
            self.layers.append(keras.layers.RandomZoom(c.zoom, fill_mode=c.fill_mode))
        mode = {
            (True, True): "horizontal_and_vertical",
            (True, False): "horizontal",
            (False, True): "vertical",
        }.get((c.horizontal_flip, c.vertical_flip))
        if mode:
            self.layers.append(keras.layers.RandomFlip(mode))

    def __call__(self, images, seed):
        """Augment a batch ``(B, H, W, 1)`` with stateless ``seed`` (int64 pair)."""
        for k, layer in enumerate(self.layers):
            s = _StatelessSeed(tf.random.experimental.stateless_fold_in(seed, k))
            t = layer.get_random_transformation(images, training=True, seed=s)
            images = layer.transform_images(images, t, training=True)
        return images


def _gather_fn(images: np.ndarray):
    def gather(idx):
        order = np.argsort(idx)
        out = np.empty((len(idx),) + images.shape[1:], dtype=np.float32)
        # Sorted reads are sequential on a memory map.
        out[order] = images[np.asarray(idx)[order]]
        return out

    return gather


def epoch_order(n: int, seed: int, epoch: int) -> tf.Tensor:
    """Permutation of ``range(n)`` for one epoch, a pure function of (seed, epoch)."""
    s = tf.stack([tf.constant(int(seed), tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=s)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int = 64,
    n_classes: int = 2,
    sample_weight: np.ndarray | None = None,
    shuffle: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    epochs: tuple[int, int] | None = None,
    aux: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches ``(x, y_onehot[, w])`` of ``images[indices]``.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W)`` or ``(n, H, W, 1)`` float32 (array or memory map); all rows.
    labels : np.ndarray of int
        Class index per row of ``images`` (only ``indices`` are read).
    indices : np.ndarray of int
        Rows of this dataset (e.g. the training patients' slices).
    sample_weight : np.ndarray, optional
        Weight per row of ``images`` (class weights), emitted as a third element.
    shuffle, augment, seed : see module docstring.
    epochs : (first, stop), optional
        With ``shuffle``/``augment``, emit epochs ``first .. stop-1`` back to back, each
        reshuffled and augmented from its own seeds (``model.fit`` with
        ``steps_per_epoch=ceil(len(indices) / batch_size)``).
    aux : np.ndarray, optional
        A float target per row of ``images`` for an auxiliary regression output: the
        targets become ``{"probabilities": y_onehot, "lesion_area": aux}`` (the output
        names of :func:`hypo.nets.training.with_aux_head`).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("make_dataset: no rows selected (indices is empty)")
    if images.ndim not in (3, 4):
        raise ValueError(f"make_dataset: images have shape {images.shape}; expected (n, H, W)")
    shape = tuple(images.shape[1:3]) + (1,)
    y_all = np.asarray(labels, dtype=np.int64)
    w_all = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
    a_all = None if aux is None else np.asarray(aux, dtype=np.float32)
    if a_all is not None and len(a_all) != len(y_all):
        raise ValueError(f"make_dataset: {len(a_all)} aux targets for {len(y_all)} labels")
    gather = _gather_fn(images)
    idx_const = tf.constant(indices)
    n = len(indices)
    first, stop = epochs if epochs is not None else (0, 1)
    aug = Augmenter(augment) if augment is not None and augment.enabled else None

    def one_epoch(epoch):
        order = epoch_order(n, seed, epoch) if shuffle else tf.range(n, dtype=tf.int64)
        rows = tf.gather(idx_const, order)
        ds = tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)
        ds = ds.enumerate().map(lambda b, r: (epoch, b, r))
        return ds

    ds = tf.data.Dataset.range(first, stop).flat_map(one_epoch)

    def load(epoch, b, rows):
        x = tf.numpy_function(gather, [rows], tf.float32, stateful=False)
        x = tf.reshape(x, (-1,) + shape)
        y = tf.one_hot(tf.gather(y_all, rows), n_classes)
        if aug is not None:
            x = aug(x, tf.stack([tf.constant(int(seed), tf.int64), epoch * 1_000_003 + b]))
        if a_all is not None:
            y = {"probabilities": y, "lesion_area": tf.gather(a_all, rows)[:, None]}
        if w_all is not None:
            return x, y, tf.gather(w_all, rows)
        return x, y

    opts = tf.data.Options()
    opts.deterministic = True
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if epochs is not None:
        # Never read past the last epoch; keeps Keras from warning that data ran out.
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE).with_options(opts)


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return int(np.ceil(n_rows / batch_size))
