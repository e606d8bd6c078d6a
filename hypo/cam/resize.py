"""Resizing class activation maps from layer resolution to input resolution.

2D maps are resized with OpenCV (pixel-centre aligned, the flag passed by keyword, so the
interpolation that was asked for is the one that is used), many maps split over the CPU's
cores (OpenCV runs a 192 x 192 resize on one thread); 3D maps with
:func:`scipy.ndimage.zoom` on the same pixel-centre grid (``grid_mode=True``).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from scipy import ndimage

#: Accepted interpolation names -> canonical kind.
_ALIASES = {
    "bilinear": "linear",
    "linear": "linear",
    "trilinear": "linear",
    "bicubic": "cubic",
    "cubic": "cubic",
    "tricubic": "cubic",
    "nearest": "nearest",
}
_CV2_FLAGS = {
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST_EXACT,
}
_SPLINE_ORDER = {"linear": 1, "cubic": 3, "nearest": 0}


def canonical_interpolation(name: str) -> str:
    """Map a user-facing interpolation name to ``"linear"``, ``"cubic"`` or ``"nearest"``."""
    try:
        return _ALIASES[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"interpolation {name!r} is not supported; expected one of {sorted(_ALIASES)}"
        ) from None


def describe_interpolation(name: str, ndim: int) -> str:
    """Human-readable record of the interpolation actually used for ``ndim`` spatial axes."""
    kind = canonical_interpolation(name)
    if ndim == 2:
        flag = {
            "linear": "cv2.INTER_LINEAR",
            "cubic": "cv2.INTER_CUBIC",
            "nearest": "cv2.INTER_NEAREST_EXACT",
        }
        label = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}[kind]
        return f"{label} ({flag[kind]})"
    label = {"linear": "trilinear", "cubic": "tricubic spline", "nearest": "nearest"}[kind]
    return f"{label} (scipy.ndimage.zoom order={_SPLINE_ORDER[kind]}, grid_mode=True)"


def resize_maps(
    maps: np.ndarray,
    size: Sequence[int],
    interpolation: str = "bilinear",
    clip_negative: bool = True,
) -> np.ndarray:
    """Resize the trailing spatial axes of ``maps`` to ``size``.

    Parameters
    ----------
    maps : ndarray, shape (..., *spatial_in)
        Maps at layer resolution; the last ``len(size)`` axes are spatial (rows, columns[,
        slices]). Leading axes (images, classes) are kept.
    size : sequence of int
        Output spatial shape in input pixels, 2 or 3 entries.
    interpolation : {"bilinear", "bicubic", "nearest"} (aliases: linear/trilinear,
        cubic/tricubic)
        Kernel. In 3D, "bicubic" means a cubic spline.
    clip_negative : bool
        Cubic kernels overshoot below zero next to sharp peaks; CAMs are non-negative by
        definition, so clip those overshoots at 0 (linear and nearest never overshoot).

    Returns
    -------
    ndarray, shape (..., *size), float32
    """
    size = tuple(int(s) for s in size)
    kind = canonical_interpolation(interpolation)
    maps = np.asarray(maps, dtype=np.float32)
    nd = len(size)
    if nd not in (2, 3):
        raise ValueError(f"size must have 2 or 3 spatial entries, got {size}")
    if maps.ndim < nd:
        raise ValueError(f"maps of shape {maps.shape} have fewer than {nd} spatial axes")
    lead = maps.shape[:-nd]
    spatial_in = maps.shape[-nd:]
    flat = maps.reshape((-1, *spatial_in))
    if spatial_in == size:
        out = flat.copy()
    elif nd == 2:
        out = _resize_2d(flat, size, kind)
    else:
        zoom = [o / i for o, i in zip(size, spatial_in)]
        out = np.empty((flat.shape[0], *size), dtype=np.float32)
        for i, m in enumerate(flat):
            out[i] = ndimage.zoom(
                m, zoom, order=_SPLINE_ORDER[kind], mode="nearest", grid_mode=True
            )[tuple(slice(0, s) for s in size)]
    if clip_negative and kind == "cubic":
        np.maximum(out, 0.0, out=out)
    return out.reshape((*lead, *size))


#: Fewest maps per thread worth handing to another thread.
MIN_MAPS_PER_THREAD = 16
_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    """The resize threads of this process (a process forked from one that had them starts
    its own: the parent's threads do not exist in the child)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            workers = max(1, min(_n_cpus(), 8) - 1)  # the calling thread resizes too
            _POOL = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="hypo-resize"))
        return _POOL[1]


def _resize_2d(flat: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    n = flat.shape[0]
    out = np.empty((n, *size), dtype=np.float32)
    flag = _CV2_FLAGS[kind]
    step = 8  # maps taken at a time
    starts = itertools.count(0, step)  # shared: next() on it is atomic under the GIL

    def work() -> None:
        # One OpenCV call per map, written in place: 4x faster than stacking the maps as
        # channels of one image (whose result must then be transposed), measured on 96
        # maps. OpenCV releases the GIL, so the threads resize in parallel.
        for lo in starts:
            if lo >= n:
                return
            for i in range(lo, min(lo + step, n)):
                cv2.resize(flat[i], (size[1], size[0]), dst=out[i], interpolation=flag)

    helpers = min(_n_cpus(), 8, n // MIN_MAPS_PER_THREAD) - 1
    if helpers <= 0:
        work()
        return out
    pool = _pool()
    futures = [pool.submit(work) for _ in range(helpers)]
    # The calling thread takes maps until none are left, so it never waits for a helper
    # that a loaded CPU has not scheduled yet (that one is cancelled).
    work()
    for f in futures:
        if not f.cancel():
            f.result()
    return out
