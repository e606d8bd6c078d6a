"""The result of a CAM computation: maps per method, raw maps, scores and provenance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)
class CamResult(Mapping):
    """Class activation maps of a batch of images, with everything needed to reuse them.

    Works as a mapping from method name to maps: ``res["gradcam"]`` has shape
    ``(n_images, n_selected_classes, *spatial)``, where ``spatial`` is the input size when
    the maps were resized and the evaluation layer's size otherwise, after the
    normalisation named in ``provenance["normalisation"]``.

    Attributes
    ----------
    maps : dict of str -> ndarray
        What the mapping returns (resized and normalised as requested).
    raw : dict of str -> ndarray
        Raw maps at layer resolution, ``(n_images, n_selected_classes, *layer_spatial)``, in
        the layer's activation units times logit-gradient units; never normalised.
    probabilities : ndarray, shape (n_images, n_classes)
        Model output probabilities (softmax or sigmoid of the logits; negative and positive
        columns for a single sigmoid unit; the model's own output with a score layer).
    logits : ndarray, shape (n_images, n_classes)
        Pre-softmax scores; every map is computed from these.
    classes : tuple of int
        Class indices of axis 1 of the maps, in that order.
    layer : str
        Evaluation layer.
    cell_size : tuple of float
        Input pixels per layer cell along each spatial axis.
    provenance : dict
        Model hash (of the weights), layer (and how it was chosen), methods, score,
        normalisation, Grad-CAM++ alpha option, interpolation, precision, library versions.
    class_names : tuple of str or None
        Names of all the model's classes (card or ``class_names=``), indexed like
        ``classes``' entries.
    """

    maps: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    probabilities: np.ndarray
    logits: np.ndarray
    classes: tuple[int, ...]
    layer: str
    cell_size: tuple[float, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None

    def __getitem__(self, method: str) -> np.ndarray:
        try:
            return self.maps[method]
        except KeyError:
            raise KeyError(
                f"no maps for method {method!r}; this result has {sorted(self.maps)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.maps)

    @property
    def n_images(self) -> int:
        return int(self.logits.shape[0])

    def class_maps(self, method: str, cls: int | str) -> np.ndarray:
        """Maps of one class (by class index or name, not position), shape
        ``(n_images, *spatial)``."""
        if isinstance(cls, str):
            if not self.class_names or cls not in self.class_names:
                raise KeyError(f"no class named {cls!r}; class names are {self.class_names}")
            cls = self.class_names.index(cls)
        if cls not in self.classes:
            raise KeyError(f"class {cls} was not computed; classes are {self.classes}")
        return self[method][:, self.classes.index(cls)]

    def summary(self) -> str:
        """A few lines describing what was computed and how."""
        p = self.provenance
        shape = next(iter(self.maps.values())).shape if self.maps else ()
        lines = [
            f"CamResult: {self.n_images} images x classes {self.classes} at layer {self.layer!r}",
            f"  methods: {', '.join(self.methods)}; maps {shape}; cell size {self.cell_size}",
            f"  score: {p.get('score')}; normalisation: {p.get('normalisation')}; "
            f"interpolation: {p.get('interpolation')}",
            f"  Grad-CAM++ alpha normalisation: {p.get('gradcampp_alpha_norm')}; "
            f"model hash: {p.get('model_hash')}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()
