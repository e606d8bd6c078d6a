"""The paper's CNNs as Keras 3 functional models (paper sections 3.5 and 4.1.4).

Every model reads top to bottom like the paper's figures, every layer is named, and the
class scores are a separate pre-softmax ``Dense`` layer named ``logits`` followed by a
``Softmax`` layer named ``probabilities`` -- CAMs take gradients of ``logits`` (the
paper's original code took them of the softmax output, which saturates near 0 and 1).

Layer specifications were derived from the paper's parameter counts at 192 x 192 input:

=========  =================================================  ==========  =========
name       body -> head                                        params      paper
=========  =================================================  ==========  =========
herzog     16 conv (2,2,3,3,3,3 x 32..512), 6 max-pools,       16,793,110  16.7 M
           Flatten -> Dense 400 -> Dense 100 (BN, ReLU, drop)
dense      5 GAP-style blocks, 5 pools, Flatten -> 256 -> 128   6,323,970   6.3 M
flat       5 GAP-style blocks, pools in blocks 1-4, Flatten     1,719,426   1.7 M
gap        5 GAP-style blocks, GAP -> BN -> ReLU -> Dropout     1,575,042   1.5 M
shallow    3 GAP-style blocks (32, 64, 128), same GAP head         94,338   94 k
mrs        ``gap`` with 3 classes                               1,575,555   < 1.6 M
=========  =================================================  ==========  =========

(a Flatten after five poolings would give 1.61 M for ``flat``, more than 5 % below the
paper's 1.7 M; after four it gives 1.72 M.) ``gap3d`` is a 3D GAP CNN for whole
volumes; it pools only in-plane in its first two blocks so its last maps keep slices.

All dropout layers are ordinary ``keras.layers.Dropout``: off in ``predict`` and in CAMs,
switched on selectively by :func:`hypo.nets.mc_dropout.mc_predict` for MC dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

ARCHITECTURES = ("herzog", "dense", "flat", "gap", "shallow", "mrs", "gap3d")

#: Architectures whose head is a global average pool: they accept any input size the
#: pooling divides (``size_divisor``); the others only their build size.
SIZE_FREE = {"gap": 32, "mrs": 32, "shallow": 8, "gap3d": 16}
SIZE_DIVISOR = {"herzog": 64, "dense": 32, "flat": 16, **SIZE_FREE}

DEFAULT_INPUT_SHAPE = {name: (192, 192, 1) for name in ARCHITECTURES}
DEFAULT_INPUT_SHAPE["gap3d"] = (128, 128, 32, 1)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def build_model(
    name: str,
    input_shape: Sequence[int] | None = None,
    n_classes: int | None = None,
    dropout: float = 0.3,
    seed: int | None = None,
    precision: str = "float32",
) -> keras.Model:
    """Build one of the paper's CNNs.

    Parameters
    ----------
    name : {"herzog", "dense", "flat", "gap", "shallow", "mrs", "gap3d"}
        Architecture (see the module docstring).
    input_shape : tuple of int, optional
        ``(H, W, 1)`` pixels (``(H, W, D, 1)`` voxels for ``gap3d``); default
        ``(192, 192, 1)`` (``(128, 128, 32, 1)`` for ``gap3d``).
    n_classes : int, optional
        Number of classes; default 3 for ``mrs`` and 2 otherwise.
    dropout : float
        Dropout rate of every dropout layer (paper: 0.3).
    seed : int, optional
        Seeds the kernel initialisers and dropout masks, so that the same seed builds
        the same initial weights.
    precision : {"float32", "mixed_bfloat16", "mixed_float16"}
        Keras dtype policy of the body; ``logits`` and ``probabilities`` stay float32.

    Returns
    -------
    keras.Model
        Functional model named ``name``; output = class probabilities.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {ARCHITECTURES}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout={dropout}; expected a rate in [0, 1)")
    input_shape = tuple(input_shape) if input_shape is not None else DEFAULT_INPUT_SHAPE[name]
    n_classes = int(n_classes) if n_classes is not None else (3 if name == "mrs" else 2)
    if n_classes < 2:
        raise ValueError(f"n_classes={n_classes}; expected at least 2")
    check_input_shape(name, input_shape)
    b = _Builder(seed, dropout, None if precision == "float32" else precision)
    fn = {
        "herzog": _herzog,
        "dense": _dense,
        "flat": _flat,
        "gap": _gap,
        "mrs": _gap,
        "shallow": _shallow,
        "gap3d": _gap3d,
    }[name]
    inputs = keras.Input(shape=input_shape, name="image")
    x = fn(b, inputs)
    logits = layers.Dense(
        n_classes, activation=None, dtype="float32", name="logits", **b.init("logits")
    )(x)
    probs = layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probs, name=name)


def check_input_shape(name: str, input_shape: Sequence[int], build_shape=None) -> None:
    """Raise ``ValueError`` if architecture ``name`` cannot take ``input_shape``.

    GAP architectures take any in-plane size divisible by their total pooling factor;
    Flatten architectures (``herzog``, ``dense``, ``flat``) only their ``build_shape``.
    """
    input_shape = tuple(int(s) for s in input_shape)
    ndim = 4 if name == "gap3d" else 3
    if len(input_shape) != ndim or input_shape[-1] != 1:
        want = "(H, W, D, 1)" if name == "gap3d" else "(H, W, 1)"
        raise ValueError(
            f"architecture {name!r}: input shape {input_shape}; expected {want} (one channel)"
        )
    div = SIZE_DIVISOR[name]
    h, w = input_shape[:2]
    if h % div or w % div or h < div or w < div:
        raise ValueError(
            f"architecture {name!r}: input size {h}x{w} is not a positive multiple of {div} "
            "(its poolings halve the image that many times)"
        )
    if name == "gap3d" and input_shape[2] % 4:
        raise ValueError(
            f"architecture 'gap3d': depth {input_shape[2]} slices; expected a multiple of 4"
        )
    if build_shape is not None and name not in SIZE_FREE:
        if tuple(int(s) for s in build_shape) != input_shape:
            raise ValueError(
                f"architecture {name!r} ends in a Flatten layer: it takes only its build "
                f"size {tuple(build_shape)}, not {input_shape}"
            )


def cam_layer_name(model: keras.Model) -> str:
    """Name of the ReLU after the model's last convolution (the paper's evaluation layer)."""
    last_conv = None
    names = [layer.name for layer in model.layers]
    for i, layer in enumerate(model.layers):
        if isinstance(layer, (layers.Conv2D, layers.Conv3D)):
            last_conv = i
    if last_conv is None:
        raise ValueError(f"model {model.name!r} has no convolution layer")
    for layer in model.layers[last_conv + 1 :]:
        if isinstance(layer, layers.ReLU):
            return layer.name
    raise ValueError(
        f"model {model.name!r}: no ReLU after its last convolution {names[last_conv]!r}"
    )


# --------------------------------------------------------------------------- builders


class _Builder:
    """Creates named layers with per-layer seeds derived from one model seed."""

    def __init__(self, seed: int | None, dropout: float, dtype):
        self.seed = seed
        self.rate = float(dropout)
        self.dtype = dtype
        self._n = 0

    def _next_seed(self) -> int | None:
        self._n += 1
        return None if self.seed is None else int(self.seed) * 1000 + self._n

    def init(self, _name: str) -> dict:
        s = self._next_seed()
        return {"kernel_initializer": keras.initializers.HeNormal(seed=s)}

    def kw(self) -> dict:
        return {} if self.dtype is None else {"dtype": self.dtype}

    def conv(self, x, filters, name, ndim=2):
        cls = layers.Conv3D if ndim == 3 else layers.Conv2D
        return cls(filters, 3, padding="same", name=name, **self.init(name), **self.kw())(x)

    def bn(self, x, name):
        return layers.BatchNormalization(name=name, **self.kw())(x)

    def relu(self, x, name):
        return layers.ReLU(name=name, **self.kw())(x)

    def drop(self, x, name):
        return layers.Dropout(self.rate, seed=self._next_seed(), name=name, **self.kw())(x)

    def dense(self, x, units, name):
        return layers.Dense(units, name=name, **self.init(name), **self.kw())(x)


def _gap_block(b: _Builder, x, i: int, filters: int, pool=True, ndim=2, pool_size=None):
    """Conv 3x3 same he_normal -> BN -> ReLU -> AveragePooling 2x2 -> Dropout."""
    x = b.conv(x, filters, f"block{i}_conv", ndim)
    x = b.bn(x, f"block{i}_bn")
    x = b.relu(x, f"block{i}_relu")
    if pool:
        cls = layers.AveragePooling3D if ndim == 3 else layers.AveragePooling2D
        ps = pool_size or (2,) * ndim
        x = cls(ps, name=f"block{i}_pool", **b.kw())(x)
    return b.drop(x, f"block{i}_dropout")


def _gap_head(b: _Builder, x, ndim=2):
    cls = layers.GlobalAveragePooling3D if ndim == 3 else layers.GlobalAveragePooling2D
    x = cls(name="gap", **b.kw())(x)
    x = b.bn(x, "head_bn")
    x = b.relu(x, "head_relu")
    return b.drop(x, "head_dropout")


def _gap(b, x):
    for i, f in enumerate((32, 64, 128, 256, 512), start=1):
        x = _gap_block(b, x, i, f)
    return _gap_head(b, x)


def _shallow(b, x):
    for i, f in enumerate((32, 64, 128), start=1):
        x = _gap_block(b, x, i, f)
    return _gap_head(b, x)


def _flat(b, x):
    # Pooling in blocks 1-4 only: 1.72 M parameters at 192 x 192, the paper's 1.7 M.
    for i, f in enumerate((32, 64, 128, 256, 512), start=1):
        x = _gap_block(b, x, i, f, pool=i < 5)
    return layers.Flatten(name="flatten", **b.kw())(x)


def _dense(b, x):
    for i, f in enumerate((32, 64, 128, 256, 512), start=1):
        x = _gap_block(b, x, i, f)
    x = layers.Flatten(name="flatten", **b.kw())(x)
    for j, units in enumerate((256, 128), start=1):
        x = b.dense(x, units, f"dense{j}")
        x = b.relu(x, f"dense{j}_relu")
        x = b.drop(x, f"dense{j}_dropout")
    return x


def _herzog(b, x):
    blocks = ((2, 32), (2, 64), (3, 128), (3, 256), (3, 512), (3, 512))
    for bi, (n_conv, filters) in enumerate(blocks, start=1):
        for c in range(1, n_conv + 1):
            x = b.conv(x, filters, f"block{bi}_conv{c}")
            x = b.bn(x, f"block{bi}_bn{c}")
            x = b.relu(x, f"block{bi}_relu{c}")
            x = b.drop(x, f"block{bi}_dropout{c}")
        x = layers.MaxPooling2D(2, name=f"block{bi}_pool", **b.kw())(x)
    x = layers.Flatten(name="flatten", **b.kw())(x)
    for j, units in enumerate((400, 100), start=1):
        x = b.dense(x, units, f"dense{j}")
        x = b.bn(x, f"dense{j}_bn")
        x = b.relu(x, f"dense{j}_relu")
        x = b.drop(x, f"dense{j}_dropout")
    return x


def _gap3d(b, x):
    # In-plane pooling first: DWI volumes have few, thick slices, so depth is halved
    # only twice and the last maps keep D / 4 slices.
    pools = ((2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2))
    for i, (f, ps) in enumerate(zip((16, 32, 64, 128), pools), start=1):
        x = _gap_block(b, x, i, f, ndim=3, pool_size=ps)
    return _gap_head(b, x, ndim=3)
