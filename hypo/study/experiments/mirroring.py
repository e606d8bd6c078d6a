"""Mirroring: is the CAM of a mirrored slice the mirrored CAM? (paper 4.1.1, Figure 8).

The paper passed one slice with an evident lesion, and the same slice mirrored on the
vertical axis, through the baseline model and judged *by eye* that the Grad-CAM and
Grad-CAM++ maps of the class "stroke" were "approximately mirrored" -- evidence that the
CAM code was right and that the maps' tendency to sit on one side was no implementation
error.

hypo measures it over every held-out lesion slice of a cohort, per CAM method and class:

* ``pearson`` / ``spearman``: correlation between the CAM of the mirrored slice and the
  mirrored CAM of the original (1 = perfectly mirror-equivariant explanation);
* ``ai_original`` / ``ai_mirrored``: the CAM's hemispheric asymmetry index
  ``(L - R) / (L + R)`` (mass on the patient's left minus right),
  of the original map and of the mirrored slice's map flipped back (hemispheres: ground
  truth on a synthetic cohort, else from the image); ``sign_agree`` = the
  two have the same sign, i.e. the map's dominant side follows the anatomy and not a fixed
  side of the image (the bias the paper asked about);
* the predicted probability of each class for both inputs (a mirror-invariant model gives
  the same).

Summaries per method and class carry 95% patient-cluster bootstrap intervals (slices of a
patient are not independent). Flipping is along image columns (np.flip, axis 1 of a slice):
in the radiological view the mirrored slice shows the patient's left on the image's left,
so its L/R markers are swapped in the figure.

Command line: ``python -m analyses.mirroring``; in a notebook::

    from hypo.study.experiments import mirroring
    from hypo.study.experiments.frame import RunSettings

    mirroring.run(RunSettings(out=Path("reports/mirroring"), model_dir=Path(DIR)),
                  mirroring.MirroringConfig())
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotnine as p9  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from hypo._util import atomic_path, rng_for  # noqa: E402
from hypo.cam import compute  # noqa: E402
from hypo.features.anatomy import LEFT, RIGHT, anatomy_for_store  # noqa: E402
from hypo.nets.evaluation import cluster_bootstrap_ci  # noqa: E402
from hypo.report.cam_panels import METHOD_NAMES  # noqa: E402
from hypo.report.figures import save_figure  # noqa: E402
from hypo.study.experiments.frame import (  # noqa: E402
    ExperimentError,
    Inputs,
    RunSettings,
    largest_lesions,
    method_names,
    open_inputs,
    write_experiment,
)

NAME = "mirroring"
HEMI_LEFT, HEMI_RIGHT = 1, 2


@dataclass(frozen=True)
class MirroringConfig:
    """Settings of the mirroring experiment (defaults: the paper's two methods, at the model
    card's CAM layer, every class).

    Parameters
    ----------
    methods : tuple of str
        CAM methods (:data:`hypo.cam.METHODS`); paper: Grad-CAM and Grad-CAM++.
    layer : str or None
        Evaluation layer; None = the model card's ``cam_layer``.
    max_slices : int or None
        Analyse at most this many lesion slices (a seeded random sample); None = all.
    n_examples : int
        Slices in the Figure 8-like panel (largest lesions, one per patient).
    chunk : int
        Slices per CAM computation (bounds memory: maps are reduced per chunk).
    seed : int
        Seed of the slice sample and the bootstrap.
    n_boot : int
        Patient-cluster bootstrap replicates of the summary intervals.
    """

    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    layer: str | None = None
    max_slices: int | None = None
    n_examples: int = 4
    chunk: int = 128
    seed: int = 0
    n_boot: int = 2000


# --------------------------------------------------------------------------- measures


def map_correlations(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Spearman correlation of paired maps, one value per pair.

    Parameters
    ----------
    a, b : ndarray, shape (n, H, W)
        Paired maps (any units; correlation is scale-free).

    Returns
    -------
    pearson, spearman : ndarray, shape (n,)
        NaN where either map is constant (an all-zero CAM has no pattern to compare).
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"paired maps differ in shape: {a.shape} vs {b.shape}")

    def corr(x, y):
        x = x - x.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
        den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (x * y).sum(axis=1) / den, np.nan)

    return corr(a, b), corr(rankdata(a, axis=1), rankdata(b, axis=1))


def asymmetry_index(maps: np.ndarray, hemisphere: np.ndarray) -> np.ndarray:
    """Hemispheric asymmetry ``(L - R) / (L + R)`` of non-negative maps.

    Parameters
    ----------
    maps : ndarray, shape (n, H, W)
        Relevance maps (CAM units).
    hemisphere : ndarray, shape (n, H, W)
        1 = patient's left, 2 = patient's right, 0 = outside the brain.

    Returns
    -------
    ndarray, shape (n,)
        In [-1, 1], positive when the map leans to the patient's left; NaN where the map
        has no mass inside the hemispheres.
    """
    m = np.asarray(maps, dtype=np.float64)
    h = np.asarray(hemisphere)
    if m.shape != h.shape:
        raise ValueError(f"maps {m.shape} and hemisphere masks {h.shape} differ in shape")
    left = np.where(h == HEMI_LEFT, m, 0).reshape(len(m), -1).sum(axis=1)
    right = np.where(h == HEMI_RIGHT, m, 0).reshape(len(m), -1).sum(axis=1)
    tot = left + right
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (left - right) / tot, np.nan)


def mirror_metrics(
    model,
    images: np.ndarray,
    hemisphere: np.ndarray,
    layer: str | None = None,
    methods=("gradcam", "gradcampp"),
    classes=None,
) -> tuple[pd.DataFrame, dict]:
    """CAMs of ``images`` and of their mirror images, compared map by map.

    Parameters
    ----------
    model : keras.Model
    images : ndarray, shape (n, H, W, 1)
        Model-ready slices (radiological view).
    hemisphere : ndarray, shape (n, H, W)
        Hemisphere labels of the original slices (see :func:`asymmetry_index`).
    layer, methods, classes
        As in :func:`hypo.cam.compute`.

    Returns
    -------
    table : DataFrame
        One row per (image, method, class): ``image``, ``method``, ``class_index``,
        ``pearson``, ``spearman``, ``ai_original``, ``ai_mirrored``, ``sign_agree``
        (1.0/0.0, NaN where an index is undefined), ``p_original``, ``p_mirrored``.
    maps : dict
        ``{"original": CamResult, "mirrored": CamResult}`` of this batch.
    """
    images = np.asarray(images, dtype=np.float32)
    mirrored = np.ascontiguousarray(np.flip(images, axis=2))
    orig = compute(model, images, layer=layer, methods=methods, classes=classes)
    mirr = compute(model, mirrored, layer=layer, methods=methods, classes=classes)
    rows = []
    for method in orig.methods:
        for j, cls in enumerate(orig.classes):
            a = orig[method][:, j]
            # Flip the mirrored slice's map back: both maps then live in the original's
            # anatomy, so one hemisphere mask serves both and the correlation is the same
            # as between the mirrored map and the map of the mirrored slice.
            b = np.flip(mirr[method][:, j], axis=2)
            pr, sp = map_correlations(b, a)
            ai_o = asymmetry_index(a, hemisphere)
            ai_m = asymmetry_index(b, hemisphere)
            agree = np.where(
                np.isfinite(ai_o) & np.isfinite(ai_m),
                (np.sign(ai_o) == np.sign(ai_m)).astype(float),
                np.nan,
            )
            rows.append(
                pd.DataFrame(
                    {
                        "image": np.arange(len(images)),
                        "method": method,
                        "class_index": int(cls),
                        "pearson": pr,
                        "spearman": sp,
                        "ai_original": ai_o,
                        "ai_mirrored": ai_m,
                        "sign_agree": agree,
                        "p_original": orig.probabilities[:, cls],
                        "p_mirrored": mirr.probabilities[:, cls],
                    }
                )
            )
    return pd.concat(rows, ignore_index=True), {"original": orig, "mirrored": mirr}


def _cluster_mean_ci(values, pids, seed: int, n_boot: int) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return np.nan, np.nan, np.nan
    lo, hi = cluster_bootstrap_ci(v[ok], np.ones(ok.sum()), np.asarray(pids)[ok], n_boot, seed)
    return float(v[ok].mean()), lo, hi


def summarise(per_slice: pd.DataFrame, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (method, class): slices, patients, mean (95% patient-cluster bootstrap CI)
    and median of the correlations, sign-agreement rate, mean |probability change|."""
    out = []
    for (method, cls, cname), g in per_slice.groupby(
        ["method", "class_index", "class_name"], sort=False
    ):
        pids = g["participant_id"].to_numpy()
        row = {
            "method": method,
            "class_index": cls,
            "class_name": cname,
            "n_slices": len(g),
            "n_patients": g["participant_id"].nunique(),
        }
        for col in ("pearson", "spearman"):
            m, lo, hi = _cluster_mean_ci(g[col], pids, seed, n_boot)
            row |= {
                f"{col}_mean": m,
                f"{col}_low": lo,
                f"{col}_high": hi,
                f"{col}_median": float(g[col].median()),
                f"{col}_undefined": int(g[col].isna().sum()),
            }
        m, lo, hi = _cluster_mean_ci(g["sign_agree"], pids, seed, n_boot)
        # Where a map ignored the mirroring, which side of the image did it keep? A negative
        # original index (patient's right) is the image's left in the radiological view.
        stuck = (g["sign_agree"] == 0).to_numpy()
        kept_left = (
            float((g["ai_original"].to_numpy()[stuck] < 0).mean()) if stuck.any() else np.nan
        )
        row |= {
            "sign_agreement": m,
            "sign_agreement_low": lo,
            "sign_agreement_high": hi,
            "sign_undefined": int(g["sign_agree"].isna().sum()),
            "stayed_on_image_left": kept_left,
            "mean_abs_probability_change": float((g["p_mirrored"] - g["p_original"]).abs().mean()),
        }
        out.append(row)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- figures


def _example_figure(path: Path, examples: list[dict], methods, class_name: str) -> Path:
    cols = [("original", None)] + [("original", m) for m in methods]
    cols += [("mirrored", None)] + [("mirrored", m) for m in methods]
    # Grad-CAM and Grad-CAM++ differ in scale by an order of magnitude: each method gets
    # its own scale, shared by the original and the mirrored slice and across rows.
    vmax = {
        m: max(float(np.max(e["maps"][w, m])) for e in examples for w in ("original", "mirrored"))
        or 1.0
        for m in methods
    }
    fig, axes = plt.subplots(
        len(examples),
        len(cols),
        figsize=(1.9 * len(cols) + 0.8, 1.9 * len(examples) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    heat = None
    for r, e in enumerate(examples):
        for c, (which, method) in enumerate(cols):
            ax = axes[r, c]
            img = e["image"] if which == "original" else np.flip(e["image"], axis=1)
            ax.imshow(img, cmap="gray", interpolation="nearest")
            if method is not None:
                heat = ax.imshow(
                    e["maps"][which, method] / vmax[method],
                    cmap="jet",
                    vmin=0,
                    vmax=1,
                    alpha=0.5,
                    interpolation="bilinear",
                )
                ax.set_xlabel(f"p = {e['p'][which]:.2f}", fontsize=7)
            # Radiological view: the original's image-left is the patient's right; the
            # mirrored slice shows the patient's left there.
            lr = ("R", "L") if which == "original" else ("L", "R")
            kw = {"transform": ax.transAxes, "color": "yellow", "fontsize": 8, "va": "center"}
            ax.text(0.02, 0.5, lr[0], ha="left", **kw)
            ax.text(0.98, 0.5, lr[1], ha="right", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                title = which if method is None else f"{METHOD_NAMES.get(method, method)}"
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(f"{e['participant_id']}\nslice {e['slice']}", fontsize=7)
    if heat is not None:
        cb = fig.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.8, pad=0.01)
        cb.set_label(f"CAM of '{class_name}' / its method's maximum in this figure", fontsize=7)
    fig.suptitle("Original and mirrored slice with their CAMs", fontsize=9)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
    finally:
        plt.close(fig)
    return path


def _distribution_figures(out: Path, per_slice: pd.DataFrame) -> list[tuple[str, str]]:
    d = per_slice.assign(
        method=per_slice["method"].map(lambda m: METHOD_NAMES.get(m, m)),
    )
    long = d.melt(
        id_vars=["method", "class_name"],
        value_vars=["pearson", "spearman"],
        var_name="correlation",
    ).dropna()
    figs = []
    if len(long):
        plot = (
            p9.ggplot(long, p9.aes("value", fill="correlation"))
            + p9.geom_histogram(bins=40, alpha=0.6, position="identity")
            + p9.facet_grid("class_name ~ method")
            + p9.labs(
                x="correlation: CAM of mirrored slice vs mirrored CAM",
                y="lesion slices",
                title="Mirror equivariance of the explanations",
            )
            + p9.theme_bw()
        )
        save_figure(plot, out / "figures" / "mirror_correlation.png", width=7, height=4.5)
        figs.append(
            (
                "figures/mirror_correlation.png",
                "Per-slice correlation between the CAM of the mirrored slice and the mirrored "
                "CAM of the original (1 = exactly mirrored).",
            )
        )
    ai = d.dropna(subset=["ai_original", "ai_mirrored"])
    if len(ai):
        plot = (
            p9.ggplot(ai, p9.aes("ai_original", "ai_mirrored"))
            + p9.geom_abline(intercept=0, slope=1, linetype="dashed", colour="grey")
            + p9.geom_hline(yintercept=0, colour="grey")
            + p9.geom_vline(xintercept=0, colour="grey")
            + p9.geom_point(alpha=0.3, size=0.8)
            + p9.facet_grid("class_name ~ method")
            + p9.coord_fixed(xlim=(-1, 1), ylim=(-1, 1))
            + p9.labs(
                x="asymmetry index of the CAM, original slice (L - R)/(L + R)",
                y="same, mirrored slice (map flipped back)",
            )
            + p9.theme_bw()
        )
        save_figure(plot, out / "figures" / "mirror_asymmetry.png", width=7, height=6)
        figs.append(
            (
                "figures/mirror_asymmetry.png",
                "Hemispheric asymmetry of each map against that of the mirrored slice's map "
                "flipped back. On the diagonal: the explanation follows the anatomy. Points "
                "in the upper-left / lower-right quadrants: the map stayed on the same side "
                "of the image when the anatomy moved.",
            )
        )
    return figs


# --------------------------------------------------------------------------- main


def hemispheres(store, rows, progress: bool = False) -> tuple[np.ndarray, str]:
    """Hemisphere labels (1 = patient's left, 2 = right, 0 = outside) of store ``rows``,
    and where they come from: ground truth on a synthetic cohort, else the image-derived
    midline of :mod:`hypo.features.anatomy` (computed once per store and cached)."""
    rows = np.asarray(rows)
    if "truth_hemisphere" in store.masks:
        return np.asarray(store.masks["truth_hemisphere"][rows]).astype(np.uint8), "ground truth"
    labels = np.asarray(anatomy_for_store(store, progress=progress).labels[rows])
    hemi = np.zeros(labels.shape, np.uint8)
    hemi[(labels & LEFT) > 0] = HEMI_LEFT
    hemi[(labels & RIGHT) > 0] = HEMI_RIGHT
    return hemi, "image-derived midline (hypo.features.anatomy)"


def _select_rows(inp: Inputs, cfg: MirroringConfig) -> np.ndarray:
    rows = inp.rows(lesion=True)
    if len(rows) == 0:
        raise ExperimentError(
            f"cohort {inp.store.cohort_id}: no held-out slice with a lesion; the mirroring "
            "experiment explains lesion slices"
        )
    if cfg.max_slices is not None and len(rows) > cfg.max_slices:
        rng = rng_for(cfg.seed, NAME, "slices")
        rows = np.sort(rng.choice(rows, size=int(cfg.max_slices), replace=False))
    return rows


def _example(inp: Inputs, row: int, i: int, maps: dict, cls: int) -> dict:
    """The figure's record of store ``row``, position ``i`` of its chunk's maps."""
    table = inp.store.table
    o, m = maps["original"], maps["mirrored"]
    return {
        "participant_id": str(table["participant_id"].iat[row]),
        "slice": int(table["slice"].iat[row]),
        "image": inp.images([row])[0, ..., 0],
        "maps": {
            **{("original", k): o.class_maps(k, cls)[i] for k in o.methods},
            **{("mirrored", k): m.class_maps(k, cls)[i] for k in m.methods},
        },
        "p": {
            "original": float(o.probabilities[i, cls]),
            "mirrored": float(m.probabilities[i, cls]),
        },
    }


def measure(inp: Inputs, rows, hemi, layer, cfg: MirroringConfig, say) -> tuple:
    """Per-slice table of :func:`mirror_metrics` over ``rows`` (in chunks) and the
    figure's example records."""
    classes = inp.classes
    table = inp.store.table
    ex_rows = set(largest_lesions(inp, rows, cfg.n_examples).tolist())
    fig_cls = len(classes) - 1 if classes else None
    parts, examples = [], []
    for a in range(0, len(rows), cfg.chunk):
        r = rows[a : a + cfg.chunk]
        hemi_r = hemi[a : a + cfg.chunk]
        df, maps = mirror_metrics(inp.model, inp.images(r), hemi_r, layer, cfg.methods)
        df["store_index"] = r[df["image"].to_numpy()]
        parts.append(df)
        if fig_cls is not None:
            examples += [
                _example(inp, int(row), i, maps, fig_cls)
                for i, row in enumerate(r)
                if int(row) in ex_rows
            ]
        say(f"CAMs of {min(a + cfg.chunk, len(rows))}/{len(rows)} slices and their mirrors")
    per = pd.concat(parts, ignore_index=True).drop(columns="image")
    per.insert(0, "participant_id", table["participant_id"].to_numpy()[per["store_index"]])
    per.insert(1, "slice", table["slice"].to_numpy()[per["store_index"]])
    names = [classes[c] if c < len(classes) else str(c) for c in per["class_index"]]
    per.insert(per.columns.get_loc("class_index") + 1, "class_name", names)
    return per, examples


def _figures(out: Path, per, examples, cfg: MirroringConfig, classes) -> list:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figs = []
    if examples:
        cname = classes[len(classes) - 1]
        _example_figure(out / "figures" / "mirror_examples.png", examples, cfg.methods, cname)
        figs.append(
            (
                "figures/mirror_examples.png",
                f"Figure 8 of the paper, on {len(examples)} slices with the largest lesions: "
                f"CAMs of class '{cname}' for the slice and its mirror image.",
            )
        )
    return figs + _distribution_figures(out, per)


SHOWN = [
    "method",
    "class_name",
    "n_slices",
    "n_patients",
    "pearson_mean",
    "pearson_low",
    "pearson_high",
    "pearson_median",
    "spearman_mean",
    "spearman_median",
    "sign_agreement",
    "sign_agreement_low",
    "sign_agreement_high",
    "stayed_on_image_left",
    "mean_abs_probability_change",
]


def _report(inp: Inputs, rows, per, summary, layer, hemi_src, cfg, figs) -> tuple:
    """(intro, sections) of the report."""
    n_pat = per["participant_id"].nunique()
    intro = [
        f"Cohort {inp.store.cohort_id}: {len(rows)} held-out lesion slices of {n_pat} patients "
        f"({len(inp.excluded_patients)} patients excluded as the model's training or "
        f"validation patients). Model {inp.model_dir} (classes: {', '.join(inp.classes)}), "
        f"evaluation layer {layer}, methods {method_names(cfg.methods)}, maps from the "
        "pre-softmax logit, resized bilinearly to the input, not normalised.",
        "The paper showed one slice and its mirror image (Figure 8) and judged the maps "
        "'approximately mirrored'. Here every slice is measured: Pearson and Spearman "
        "correlation between the CAM of the mirrored slice and the mirrored CAM, and whether "
        "the map's hemispheric asymmetry keeps its sign when the anatomy is mirrored "
        f"(hemispheres: {hemi_src}). Intervals are 95% "
        "patient-cluster bootstrap intervals of the mean.",
    ]
    sections = [
        {
            "heading": "Mirror equivariance per method and class",
            "paragraphs": [
                "sign_agreement: share of slices whose CAM leans to the same hemisphere "
                "before and after mirroring (1 = always follows the anatomy; 0 = always "
                "stays on the same side of the image); stayed_on_image_left: of the slices "
                "whose map kept its image side, the share where that side was the image's "
                "left (the patient's right). Correlations are undefined (NaN, "
                "counted in mirroring_summary.csv) for all-zero maps.",
            ],
            "tables": [
                (
                    summary[SHOWN].round(3),
                    "Per method and class (mirroring_summary.csv; per slice: mirroring.csv)",
                )
            ],
        },
        {"heading": "Figures", "figures": figs},
    ]
    return intro, sections


def run(settings: RunSettings, cfg: MirroringConfig = MirroringConfig()) -> dict:
    """Run the experiment: measure, write tables, figures and report; return the paths."""
    started = time.perf_counter()
    say = settings.say(NAME)
    inp = open_inputs(settings)
    layer = cfg.layer or inp.cam_layer
    rows = _select_rows(inp, cfg)
    say(f"cohort {inp.store.cohort_id}: {len(rows)} held-out lesion slices")
    hemi, hemi_src = hemispheres(inp.store, rows, settings.progress)
    per, examples = measure(inp, rows, hemi, layer, cfg, say)
    summary = summarise(per, cfg.seed, cfg.n_boot)
    out = Path(settings.out)
    figs = _figures(out, per, examples, cfg, inp.classes)
    say("report")
    intro, sections = _report(inp, rows, per, summary, layer, hemi_src, cfg, figs)
    paths = write_experiment(
        out,
        NAME,
        tables={"mirroring": per, "mirroring_summary": summary},
        sections=sections,
        config=settings.record_of(cfg, layer=layer),
        inputs=inp,
        intro=intro,
        warnings=settings.warnings(inp.cohort),
        started=started,
    )
    say(f"wrote {out}")
    return paths
