"""Grad-CAM / Grad-CAM++ panels like the paper's Figures 11, 14 and 15.

One row per example slice. Columns: the native slice, the preprocessed (normalised,
cropped, resized) network input, then one heat map per (class, method) overlaid on the
preprocessed image. The x-axis label of each heat map gives the predicted probability of
its class, as in the paper; the row is named by ``participant_id``, slice and 3-month mRS.
Slices are in the radiological view (column 0 = the patient's right), marked "R" on the
image's left and "L" on its right.

Maps are shown either raw, on one colour scale per method shared by every patient and class
(so panels compare across patients and classes; pass the cohort's ``vmin``/``vmax``, per
method, for a cohort-wide scale; raw Grad-CAM and Grad-CAM++ differ by orders of
magnitude, so one scale for both would blank one of them), or each scaled to [0, 1] by its
own minimum and maximum; the colour bars say which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hypo._util import atomic_path  # noqa: E402

#: Display names of CAM methods (engine keys -> what the paper calls them).
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "grad-cam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "gradcampp": "Grad-CAM++",
    "grad-cam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
}
SCALES = ("raw", "per_image")


def _text(s) -> str:
    # A "$" in a participant id or class name would start matplotlib mathtext.
    return str(s).replace("$", r"\$")


@dataclass
class CamExample:
    """One slice to show.

    Attributes
    ----------
    participant_id : str
        The only patient identifier shown.
    image_native : ndarray (rows, cols)
        Native slice, intensities 0-255, radiological view.
    image_preprocessed : ndarray (h, w)
        The network input (2D; a trailing channel axis of 1 is accepted).
    maps : dict
        ``{(method, class_name): map2d}``: raw CAMs of shape ``(h, w)``.
    probabilities : dict
        ``class_name -> predicted probability``.
    slice_index : int
        Axial slice (canonical RAS+ order, inferior to superior).
    mrs_3months : float, optional
        3-month mRS (NaN when unknown).
    lesion_mask : ndarray (h, w), optional
        Lesion mask on the preprocessed grid; its outline is drawn.
    model : str, optional
        Model name shown in the row label (e.g. "stroke", "mRS").
    """

    participant_id: str
    image_native: np.ndarray
    image_preprocessed: np.ndarray
    maps: Mapping[tuple[str, str], np.ndarray]
    probabilities: Mapping[str, float]
    slice_index: int
    mrs_3months: float | None = None
    lesion_mask: np.ndarray | None = None
    model: str = ""


def _as_example(e) -> CamExample:
    if isinstance(e, CamExample):
        return e
    if isinstance(e, Mapping):
        keys = set(CamExample.__dataclass_fields__)
        unknown = set(e) - keys
        if unknown:
            raise ValueError(
                f"CAM example: unknown field(s) {sorted(unknown)}; expected {sorted(keys)}"
            )
        return CamExample(**e)
    raise TypeError(f"CAM example: expected CamExample or dict, got {type(e).__name__}")


def _plane(a, what: str, pid: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{pid}: {what} has shape {a.shape}; expected a 2D slice")
    if not np.isfinite(a).all():
        raise ValueError(f"{pid}: {what} has non-finite values")
    return a


def _validate(ex: CamExample, columns: list[tuple[str, str]]) -> dict:
    pid = str(ex.participant_id)
    native = _plane(ex.image_native, "image_native", pid)
    pre = _plane(ex.image_preprocessed, "image_preprocessed", pid)
    maps = {}
    for method, cls in columns:
        if (method, cls) not in ex.maps:
            raise ValueError(
                f"{pid} slice {ex.slice_index}: no map for method {method!r}, class {cls!r}; "
                f"has {sorted(ex.maps)}"
            )
        m = _plane(ex.maps[(method, cls)], f"map ({method}, {cls})", pid)
        if m.shape != pre.shape:
            raise ValueError(
                f"{pid} slice {ex.slice_index}: map ({method}, {cls}) has shape {m.shape}; "
                f"expected the preprocessed image's shape {pre.shape} (resize raw layer "
                "maps to the input grid first)"
            )
        maps[(method, cls)] = m
    mask = None
    if ex.lesion_mask is not None:
        mask = np.asarray(ex.lesion_mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != pre.shape:
            raise ValueError(
                f"{pid} slice {ex.slice_index}: lesion mask has shape {mask.shape}; expected "
                f"the preprocessed image's shape {pre.shape}"
            )
        mask = mask.astype(bool)
    return {"native": native, "pre": pre, "maps": maps, "mask": mask}


def _lr_markers(ax, colour: str = "yellow") -> None:
    # Radiological view: the image's left column is the patient's right.
    kw = {"transform": ax.transAxes, "color": colour, "fontsize": 8, "fontweight": "bold",
          "va": "center"}  # fmt: skip
    ax.text(0.02, 0.5, "R", ha="left", **kw)
    ax.text(0.98, 0.5, "L", ha="right", **kw)


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _shown_maps(checked, scale: str) -> dict:
    """``(row, (method, class)) -> map`` as drawn (raw, or min-max scaled per image)."""
    shown = {}
    for i, chk in enumerate(checked):
        for key, m in chk["maps"].items():
            if scale == "per_image":
                lo, hi = float(m.min()), float(m.max())
                shown[i, key] = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
            else:
                shown[i, key] = m
    return shown


def _colour_limits(shown, methods, scale, vmin, vmax) -> tuple[dict, dict]:
    """Colour scale (lo, hi) of each method and the colour bars to draw (method -> label)."""
    limits, bar_labels = {}, {}
    for method in methods:
        if scale == "per_image":
            limits[method] = (0.0, 1.0)
            continue
        vals = [v.ravel() for (_, (m, _c)), v in shown.items() if m == method]
        vals = np.concatenate(vals) if vals else np.zeros(1)
        given_lo, given_hi = _for_method(vmin, method), _for_method(vmax, method)
        lo = float(vals.min()) if given_lo is None else given_lo
        hi = float(vals.max()) if given_hi is None else given_hi
        limits[method] = (lo, hi if hi > lo else lo + 1.0)
        where = "cohort scale" if (given_lo, given_hi) != (None, None) else "shared by its panels"
        bar_labels[method] = f"{METHOD_NAMES.get(method.lower(), method)}, raw ({where})"
    if scale == "per_image" and methods:  # one scale for every method: one bar
        bar_labels = {methods[0]: "CAM, per-image normalised (min-max to 0-1)"}
    return limits, bar_labels


def _draw_row(axes, ex, chk, shown, columns, limits, cmap, alpha) -> dict:
    """One example: the original, the preprocessed slice and its maps; returns the last
    heat-map image of each method (for the colour bars)."""
    heat = {}
    pid = _text(ex.participant_id)
    mrs = ex.mrs_3months
    mrs_txt = "n/a" if mrs is None or not np.isfinite(mrs) else f"{int(mrs)}"
    ax = axes[0]
    ax.imshow(chk["native"], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    model = f"{_text(ex.model)} model\n" if ex.model else ""
    ax.set_ylabel(f"{model}{pid}\nslice {int(ex.slice_index)}", fontsize=7)
    ax.set_xlabel(f"mRS {mrs_txt}", fontsize=7)
    ax = axes[1]
    ax.imshow(chk["pre"], cmap="gray", interpolation="nearest")
    has_mask = chk["mask"] is not None and chk["mask"].any()
    if has_mask:
        ax.contour(chk["mask"].astype(float), levels=[0.5], colors="red", linewidths=0.6)
    ax.set_xlabel("preprocessed", fontsize=7)
    for c, (method, cls) in enumerate(columns, start=2):
        ax = axes[c]
        ax.imshow(chk["pre"], cmap="gray", interpolation="nearest")
        lo, hi = limits[method]
        heat[method] = ax.imshow(
            shown[method, cls], cmap=cmap, vmin=lo, vmax=hi, alpha=alpha, interpolation="bilinear"
        )
        if has_mask:
            ax.contour(chk["mask"].astype(float), levels=[0.5], colors="white", linewidths=0.5)
        ax.set_xlabel(f"p({_text(cls)}) = {float(ex.probabilities[cls]):.2f}", fontsize=7)
    for ax in axes:
        _clean(ax)
        _lr_markers(ax)
    return heat


def cam_panel_figure(
    examples: Sequence[CamExample | Mapping],
    classes: Sequence[str] | None = None,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    scale: str = "raw",
    vmin: float | Mapping[str, float] | None = None,
    vmax: float | Mapping[str, float] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    tile_inches: float = 1.9,
    title: str | None = None,
):
    """Build the CAM panel figure (a matplotlib Figure).

    Parameters
    ----------
    examples : sequence of CamExample (or dicts with its fields)
        One row each.
    classes : sequence of str, optional
        Classes whose maps to show, in column order; default the classes of the first
        example's ``probabilities`` in their order.
    methods : sequence of str
        CAM methods per class, e.g. ``("gradcam", "gradcam++")`` (keys of ``maps``).
    scale : {"raw", "per_image"}
        ``"raw"``: maps as computed, on one colour scale per method shared by all its
        panels, with a colour bar each (``vmin``/``vmax`` if given, a number for every
        method or a mapping method -> number, e.g. cohort percentiles; else the range of
        the method's maps shown). ``"per_image"``: each map min-max scaled to [0, 1] on
        its own.
    alpha : float
        Opacity of the heat map over the preprocessed image.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    exs = [_as_example(e) for e in examples]
    if not exs:
        raise ValueError("cam_panel_figure: no examples")
    if classes is None:
        classes = list(exs[0].probabilities)
    columns = [(m, c) for c in classes for m in methods]
    checked = [_validate(e, columns) for e in exs]
    for e in exs:
        missing = [c for c in classes if c not in e.probabilities]
        if missing:
            raise ValueError(
                f"{e.participant_id}: no predicted probability for class(es) {missing}"
            )

    shown = _shown_maps(checked, scale)
    limits, bar_labels = _colour_limits(shown, methods, scale, vmin, vmax)
    n_rows, n_cols = len(exs), 2 + len(columns)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(tile_inches * n_cols + 0.9, tile_inches * n_rows + 0.9),
        squeeze=False,
        layout="constrained",
    )
    heat = {}
    for r, (ex, chk) in enumerate(zip(exs, checked)):
        row_shown = {key: shown[i, key] for (i, key) in shown if i == r}
        heat.update(_draw_row(axes[r], ex, chk, row_shown, columns, limits, cmap, alpha))
    axes[0, 0].set_title("original", fontsize=8)
    axes[0, 1].set_title("preprocessed", fontsize=8)
    for c, (method, cls) in enumerate(columns, start=2):
        name = METHOD_NAMES.get(method.lower(), method)
        axes[0, c].set_title(f"{_text(name)}\n{_text(cls)}", fontsize=8)
    for method, label in bar_labels.items():
        if method not in heat:
            continue
        cb = fig.colorbar(heat[method], ax=axes[:, 2:].ravel().tolist(), shrink=0.8, pad=0.01)
        cb.set_label(_text(label), fontsize=7)
        cb.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(_text(title), fontsize=9)
    return fig


def _for_method(v, method: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, Mapping):
        return None if v.get(method) is None else float(v[method])
    return float(v)


def write_cam_panels(path: str | Path, examples, dpi: int = 150, **kwargs) -> Path:
    """Draw :func:`cam_panel_figure` and write it as PNG atomically; return the path."""
    path = Path(path)
    fig = cam_panel_figure(examples, **kwargs)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
