"""Cropping: do CAMs spill less outside the brain when the brain is cropped? (paper 4.1.2,
Figure 9).

The paper compared Grad-CAM and Grad-CAM++ maps of slices with and without its brain crop
(threshold, contours, crop to their extrema, bicubic resize back) and saw "significantly
fewer regions outside the brain" highlighted with the crop -- by eye, on example slices --
and adopted the crop for all further results.

hypo measures it on every held-out lesion slice of a cohort, paired: the same slice
(``participant_id``, ``slice``) preprocessed with and without the crop (same size, same
normalisation), the same model applied to both, and per map

* ``outside_brain_mass``: share of the map's mass outside the brain (brain mask carried
  through each store's own geometry: ground truth on a synthetic cohort, else the
  image-derived brain of :mod:`hypo.features.anatomy`);
* ``lesion_mass``: share of the map's mass on the lesion (relevance mass accuracy, whole
  image) and ``lesion_mass_brain`` (inside the brain only);
* ``pointing_game``: the map's maximum lies on the lesion;
* ``probability``: the predicted probability of the class.

Each measure is compared cropped minus uncropped with Wilcoxon signed-rank tests
(scipy.stats.wilcoxon) over slices and, because a patient's slices are not independent,
over per-patient mean differences (the primary test); the mean difference carries a 95%
patient-cluster bootstrap interval.

Caveat stated in every report: the shipped models were trained on cropped slices only, so
uncropped slices are also a shift of the input distribution; a change in the maps mixes
"less background to highlight" with "an input the model never saw".

Command line: ``python -m analyses.cropping``; in a notebook
``cropping.run(RunSettings(out=..., model_dir=...), CroppingConfig())``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotnine as p9  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from hypo._util import atomic_path, rng_for  # noqa: E402
from hypo.cam import compute  # noqa: E402
from hypo.cam.metrics import pointing_game, relevance_mass_accuracy  # noqa: E402
from hypo.nets.evaluation import cluster_bootstrap_ci  # noqa: E402
from hypo.preprocess import build_slice_store  # noqa: E402
from hypo.report.cam_panels import METHOD_NAMES  # noqa: E402
from hypo.report.figures import save_figure  # noqa: E402
from hypo.report.tables import fmt_p  # noqa: E402
from hypo.study.experiments.frame import (  # noqa: E402
    ExperimentError,
    Inputs,
    RunSettings,
    method_names,
    open_inputs,
    store_brain,
    write_experiment,
)

NAME = "cropping"
MEASURES = (
    "outside_brain_mass",
    "lesion_mass",
    "lesion_mass_brain",
    "pointing_game",
    "probability",
)
CONDITIONS = ("cropped", "uncropped")


@dataclass(frozen=True)
class CroppingConfig:
    """Settings of the cropping experiment.

    Parameters
    ----------
    methods : tuple of str
        CAM methods; paper: Grad-CAM and Grad-CAM++.
    layer : str or None
        Evaluation layer; None = the model card's ``cam_layer``.
    max_slices : int or None
        At most this many paired lesion slices (a seeded random sample); None = all.
    n_examples : int
        Slices in the Figure 9-like panel (largest lesions, one per patient).
    chunk : int
        Slices per CAM computation (bounds memory).
    seed : int
        Seed of the slice sample and the bootstrap.
    n_boot : int
        Patient-cluster bootstrap replicates.
    """

    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    layer: str | None = None
    max_slices: int | None = None
    n_examples: int = 4
    chunk: int = 128
    seed: int = 0
    n_boot: int = 2000


# --------------------------------------------------------------------------- measures


def outside_mass(maps: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Share of each map's total mass outside the brain, shape (n,); NaN for an all-zero map.

    Parameters
    ----------
    maps : ndarray (n, H, W)
        Non-negative relevance maps.
    brain : ndarray (n, H, W) of bool
        Brain masks on the maps' grid.
    """
    a = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    b = np.asarray(brain, dtype=bool).reshape(len(maps), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps {np.shape(maps)} and brain masks {np.shape(brain)} differ")
    tot = a.sum(axis=1)
    out = np.where(b, 0, a).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, out / tot, np.nan)


def map_measures(res, lesion: np.ndarray, brain: np.ndarray) -> pd.DataFrame:
    """Per-map measures of a CamResult against lesion and brain masks.

    Returns one row per (image, method, class): ``image``, ``method``, ``class_index`` and
    the columns of :data:`MEASURES`.
    """
    rows = []
    for method in res.methods:
        for j, cls in enumerate(res.classes):
            a = res[method][:, j]
            rows.append(
                pd.DataFrame(
                    {
                        "image": np.arange(len(a)),
                        "method": method,
                        "class_index": int(cls),
                        "outside_brain_mass": outside_mass(a, brain),
                        "lesion_mass": relevance_mass_accuracy(a, lesion),
                        "lesion_mass_brain": relevance_mass_accuracy(a, lesion, brain),
                        "pointing_game": pointing_game(a, lesion),
                        "probability": res.probabilities[:, cls],
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def pair_rows(cropped_table: pd.DataFrame, uncropped_table: pd.DataFrame, rows) -> pd.DataFrame:
    """Match store rows of the cropped store to the uncropped store by (participant_id, slice).

    Returns a DataFrame with ``participant_id``, ``slice``, ``row_cropped``,
    ``row_uncropped``; slices absent from the uncropped store are dropped.
    """
    keys = ["participant_id", "slice"]
    c = cropped_table.iloc[np.asarray(rows)][keys].copy()
    c["row_cropped"] = np.asarray(rows)
    u = uncropped_table[keys].copy()
    u["row_uncropped"] = np.arange(len(u))
    c["participant_id"] = c["participant_id"].astype(str)
    u["participant_id"] = u["participant_id"].astype(str)
    return c.merge(u, on=keys, how="inner", validate="1:1").reset_index(drop=True)


def paired_tests(per: pd.DataFrame, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Cropped minus uncropped, per (method, class, measure): medians, mean difference with a
    95% patient-cluster bootstrap CI, Wilcoxon signed-rank p over slices and over
    per-patient mean differences (``p_patients``, primary: slices of a patient are not
    independent)."""

    def _wilcoxon(d):
        d = d[np.isfinite(d)]
        if len(d) == 0 or np.all(d == 0):
            return np.nan
        return float(wilcoxon(d).pvalue)

    out = []
    for (method, cls, cname), g in per.groupby(["method", "class_index", "class_name"], sort=False):
        for m in MEASURES:
            c, u = g[f"{m}_cropped"].to_numpy(float), g[f"{m}_uncropped"].to_numpy(float)
            ok = np.isfinite(c) & np.isfinite(u)
            d = (c - u)[ok]
            pids = g["participant_id"].to_numpy()[ok]
            per_pat = pd.Series(d).groupby(pids).mean().to_numpy() if ok.any() else d
            lo, hi = (
                cluster_bootstrap_ci(d, np.ones(len(d)), pids, n_boot, seed)
                if ok.any()
                else (np.nan, np.nan)
            )
            out.append(
                {
                    "method": method,
                    "class_index": cls,
                    "class_name": cname,
                    "measure": m,
                    "n_slices": int(ok.sum()),
                    "n_patients": int(len(np.unique(pids))),
                    "n_undefined": int((~ok).sum()),
                    "median_cropped": float(np.median(c[ok])) if ok.any() else np.nan,
                    "median_uncropped": float(np.median(u[ok])) if ok.any() else np.nan,
                    "mean_difference": float(d.mean()) if ok.any() else np.nan,
                    "difference_low": lo,
                    "difference_high": hi,
                    "p_slices": _wilcoxon(d),
                    "p_patients": _wilcoxon(per_pat),
                }
            )
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- inputs


def _lesion(store, rows) -> np.ndarray:
    return np.asarray(store.masks["lesion"][np.asarray(rows)]).astype(bool)


# --------------------------------------------------------------------------- figures


def _example_figure(path: Path, examples: list[dict], methods, class_name: str) -> Path:
    cols = [(w, m) for w in ("uncropped", "cropped") for m in (None, *methods)]
    vmax = {
        m: max(float(np.max(e["maps"][w, m])) for e in examples for w in CONDITIONS) or 1.0
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
            ax.imshow(e["image"][which], cmap="gray", interpolation="nearest")
            if method is not None:
                heat = ax.imshow(
                    e["maps"][which, method] / vmax[method],
                    cmap="jet",
                    vmin=0,
                    vmax=1,
                    alpha=0.5,
                    interpolation="bilinear",
                )
                out = e["outside"][which, method]
                ax.set_xlabel(f"outside brain {out:.0%}", fontsize=7)
            brain = e["brain"][which].astype(float)
            ax.contour(brain, levels=[0.5], colors="white", linewidths=0.5)
            kw = {"transform": ax.transAxes, "color": "yellow", "fontsize": 8, "va": "center"}
            ax.text(0.02, 0.5, "R", ha="left", **kw)
            ax.text(0.98, 0.5, "L", ha="right", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                title = which if method is None else METHOD_NAMES.get(method, method)
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(f"{e['participant_id']}\nslice {e['slice']}", fontsize=7)
    if heat is not None:
        cb = fig.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.8, pad=0.01)
        cb.set_label(f"CAM of '{class_name}' / its method's maximum in this figure", fontsize=7)
    fig.suptitle("Without and with the brain crop (white: brain outline)", fontsize=9)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
    finally:
        plt.close(fig)
    return path


def _paired_figure(path: Path, per: pd.DataFrame, class_index: int) -> Path:
    g = per[per["class_index"] == class_index]
    parts = []
    for m in ("outside_brain_mass", "lesion_mass"):
        for cond in CONDITIONS:
            parts.append(
                pd.DataFrame(
                    {
                        "key": g["participant_id"] + "/" + g["slice"].astype(str),
                        "method": g["method"].map(lambda k: METHOD_NAMES.get(k, k)),
                        "measure": m.replace("_", " "),
                        "condition": cond,
                        "value": g[f"{m}_{cond}"].to_numpy(float),
                    }
                )
            )
    d = pd.concat(parts, ignore_index=True).dropna()
    d["condition"] = pd.Categorical(d["condition"], categories=list(CONDITIONS[::-1]))
    plot = (
        p9.ggplot(d, p9.aes("condition", "value"))
        + p9.geom_line(p9.aes(group="key"), alpha=0.08)
        + p9.geom_boxplot(width=0.35, outlier_shape="", fill="none", colour="darkred")
        + p9.facet_grid("measure ~ method")
        + p9.labs(x="", y="share of the map's mass", title="Same slices, without and with crop")
        + p9.theme_bw()
    )
    return save_figure(plot, path, width=6, height=5)


# --------------------------------------------------------------------------- steps


def paired_slices(inp: Inputs, cfg: CroppingConfig, progress: bool) -> tuple:
    """The uncropped store (same size and normalisation) and the held-out lesion slices
    paired across both stores (a seeded sample of ``cfg.max_slices``)."""
    crop_store = inp.store
    if not crop_store.config.crop:
        raise ExperimentError(
            f"model {inp.model_dir}: its card's preprocessing has crop=False; the cropping "
            "experiment compares the crop the model was trained with against no crop"
        )
    unc_store = build_slice_store(
        inp.cohort, replace(crop_store.config, crop=False), progress=progress
    )
    pairs = pair_rows(crop_store.table, unc_store.table, inp.rows(lesion=True))
    # A small lesion can vanish in one geometry (nearest-neighbour resize): pair only slices
    # with a lesion in both.
    both = _lesion(unc_store, pairs["row_uncropped"]).reshape(len(pairs), -1).any(axis=1)
    pairs = pairs[both].reset_index(drop=True)
    if len(pairs) == 0:
        raise ExperimentError(
            f"cohort {crop_store.cohort_id}: no held-out lesion slice in both stores"
        )
    if cfg.max_slices is not None and len(pairs) > cfg.max_slices:
        pick = rng_for(cfg.seed, NAME, "slices").choice(len(pairs), cfg.max_slices, False)
        pairs = pairs.iloc[np.sort(pick)].reset_index(drop=True)
    return unc_store, pairs


def _example_pairs(crop_store, pairs: pd.DataFrame, n: int) -> set:
    """Pair indices of the ``n`` largest lesions, one per patient."""
    area = _lesion(crop_store, pairs["row_cropped"]).reshape(len(pairs), -1).sum(axis=1)
    return set(
        pairs.assign(area=area)
        .sort_values(["area", "row_cropped"], ascending=[False, True])
        .drop_duplicates("participant_id")
        .index[:n]
        .tolist()
    )


def _keep_example(e: dict, k: int, cond: str, x, brain, res, fig_cls: int) -> None:
    e["image"][cond] = x[k, ..., 0]
    e["brain"][cond] = brain[k]
    for meth in res.methods:
        e["maps"][cond, meth] = res.class_maps(meth, fig_cls)[k]
        e["outside"][cond, meth] = float(
            outside_mass(e["maps"][cond, meth][None], brain[k][None])[0]
        )


def measure(inp: Inputs, stores: dict, pairs, layer, cfg: CroppingConfig, progress, say):
    """Per-(pair, method, class) measures in both conditions, the figure's examples and
    where the brain masks came from."""
    classes = inp.classes
    fig_cls = len(classes) - 1
    ex_idx = _example_pairs(stores["cropped"], pairs, cfg.n_examples)
    examples = {i: {"image": {}, "maps": {}, "brain": {}, "outside": {}} for i in sorted(ex_idx)}
    parts, brain_src = [], {}
    for a in range(0, len(pairs), cfg.chunk):
        chunk = pairs.iloc[a : a + cfg.chunk]
        merged = None
        for cond, store in stores.items():
            r = chunk[f"row_{cond}"].to_numpy()
            x = np.asarray(store.images[r], dtype=np.float32)[..., None]
            brain, brain_src[cond] = store_brain(store, r, progress=progress)
            res = compute(inp.model, x, layer=layer, methods=cfg.methods)
            df = map_measures(res, _lesion(store, r), brain)
            df = df.rename(columns={m: f"{m}_{cond}" for m in MEASURES})
            merged = (
                df
                if merged is None
                else merged.merge(df, on=["image", "method", "class_index"], validate="1:1")
            )
            for i in ex_idx & set(chunk.index):
                _keep_example(examples[i], i - a, cond, x, brain, res, fig_cls)
                examples[i]["participant_id"] = chunk.at[i, "participant_id"]
                examples[i]["slice"] = chunk.at[i, "slice"]
        merged["pair"] = merged["image"] + a
        parts.append(merged.drop(columns="image"))
        say(f"CAMs of {min(a + cfg.chunk, len(pairs))}/{len(pairs)} slice pairs")
    per = pd.concat(parts, ignore_index=True)
    per = pairs.iloc[per["pair"].to_numpy()].reset_index(drop=True).join(per.drop(columns="pair"))
    names = [classes[c] for c in per["class_index"]]
    per.insert(per.columns.get_loc("class_index") + 1, "class_name", names)
    return per, list(examples.values()), brain_src


def _figures(out: Path, per, examples, cfg: CroppingConfig, classes) -> list:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    fig_cls = len(classes) - 1
    cname = classes[fig_cls]
    figs = []
    if examples:
        path = out / "figures" / "cropping_examples.png"
        _example_figure(path, examples, cfg.methods, cname)
        figs.append(
            (
                "figures/cropping_examples.png",
                f"Figure 9 of the paper, on {len(examples)} slices with the largest "
                f"lesions: CAMs of class '{cname}' without and with the "
                "crop; the label under each map is its mass outside the brain.",
            )
        )
    _paired_figure(out / "figures" / "cropping_paired.png", per, fig_cls)
    figs.append(
        (
            "figures/cropping_paired.png",
            f"Each line is one slice (class '{cname}'); boxes: distribution over slices.",
        )
    )
    return figs


def _report(inp: Inputs, pairs, per, tests, layer, brain_src, cfg, figs) -> tuple:
    """(intro, warnings, sections) of the report."""
    crop_store = inp.store
    n_pat = per["participant_id"].nunique()
    intro = [
        f"Cohort {crop_store.cohort_id}: {len(pairs)} held-out lesion slices of {n_pat} "
        f"patients, each preprocessed with and without the brain crop ({inp.size} px, "
        f"{crop_store.config.normalization} normalisation), paired by (participant_id, "
        f"slice). Model {inp.model_dir} (classes: {', '.join(inp.classes)}), layer {layer}, "
        f"methods {method_names(cfg.methods)}; maps from the "
        "pre-softmax logit, resized bilinearly to the input, not normalised. Brain masks: "
        f"{brain_src.get('cropped')}, carried through each store's own crop and resize.",
        "The paper judged by eye that the crop leaves fewer highlighted regions outside the "
        "brain (Figure 9). Here each measure is compared cropped minus uncropped: mean "
        "difference with a 95% patient-cluster bootstrap CI and Wilcoxon signed-rank tests "
        "over slices (p_slices) and over per-patient mean differences (p_patients, the "
        "primary test: slices of one patient are not independent).",
    ]
    warnings = [
        "The model was trained on cropped slices only: uncropped slices are also inputs "
        "outside its training distribution, so differences mix the effect of less "
        "background with that of an unfamiliar input (see the 'probability' rows).",
        f"At layer {layer} a map has few cells; after the bilinear resize part of the mass "
        "near the brain's edge falls outside the brain in either condition.",
    ]
    shown = tests.drop(columns=["class_index"]).round(4)
    for col in ("p_slices", "p_patients"):
        shown[col] = tests[col].map(fmt_p)
    sections = [
        {
            "heading": "Paired comparison, cropped minus uncropped",
            "tables": [(shown, "cropping_tests.csv; per slice and map: cropping.csv")],
        },
        {"heading": "Figures", "figures": figs},
    ]
    return intro, warnings, sections


def run(settings: RunSettings, cfg: CroppingConfig = CroppingConfig()) -> dict:
    """Run the experiment: measure, write tables, figures and report; return the paths."""
    started = time.perf_counter()
    say = settings.say(NAME)
    inp = open_inputs(settings)
    layer = cfg.layer or inp.cam_layer
    say("slice store without the brain crop (same size and normalisation)")
    unc_store, pairs = paired_slices(inp, cfg, settings.progress)
    say(f"cohort {inp.store.cohort_id}: {len(pairs)} paired held-out lesion slices")
    stores = {"cropped": inp.store, "uncropped": unc_store}
    per, examples, brain_src = measure(inp, stores, pairs, layer, cfg, settings.progress, say)
    tests = paired_tests(per, cfg.seed, cfg.n_boot)
    out = Path(settings.out)
    figs = _figures(out, per, examples, cfg, inp.classes)
    say("report")
    intro, warnings, sections = _report(inp, pairs, per, tests, layer, brain_src, cfg, figs)
    paths = write_experiment(
        out,
        NAME,
        tables={"cropping": per, "cropping_tests": tests},
        sections=sections,
        config=settings.record_of(cfg, layer=layer),
        inputs=inp,
        intro=intro,
        warnings=warnings + settings.warnings(inp.cohort),
        extra_provenance={
            "uncropped_store": {
                "slice_store": unc_store.path.name,
                "config": asdict(unc_store.config),
            },
            "brain_masks": brain_src,
        },
        started=started,
    )
    say(f"wrote {out}")
    return paths
