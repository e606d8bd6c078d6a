"""Evaluation-layer iteration: at which depth do CAMs explain best? (paper 4.1.3, Figure 10).

The paper computed a Grad-CAM of one slice with a visible lesion at every evaluable layer
of its baseline model (70 of 81 layers), showed the convolutional ones (Figure 10) and
read off by eye that the lesion is already found after five convolutions and that maps
blur in the deepest layers.

hypo draws the same figure for chosen slices (slices x layers, Grad-CAM by default) and
measures, over every held-out lesion slice of a cohort and at every layer with spatial
output (:func:`hypo.cam.spatial_layers`, one forward and backward pass for all layers via
:func:`hypo.cam.layer_sweep`):

* ``relevance_mass``: share of the map's mass inside the brain that lies on the lesion;
* ``pointing_game``: the map's maximum inside the brain lies on the lesion;
* ``outside_brain_mass``: share of the map's mass outside the brain;

as a curve over depth, per CAM method, with 95% patient-cluster bootstrap intervals, and
the chance level of both lesion measures (the lesion's share of the brain: what a uniform
map scores). The class explained is the model's last class ("stroke" for the stroke
model) unless ``--class-index`` says otherwise.

Command line: ``python -m analyses.layer_iteration``; in a notebook
``layer_iteration.run(RunSettings(out=..., model_dir=...), LayerIterationConfig())``.
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

from hypo._util import atomic_path, rng_for  # noqa: E402
from hypo.cam import layer_sweep, spatial_layers  # noqa: E402
from hypo.cam.metrics import pointing_game, relevance_mass_accuracy  # noqa: E402
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
    store_brain,
    write_experiment,
)

NAME = "layer_iteration"
METRICS = ("relevance_mass", "pointing_game", "outside_brain_mass")


@dataclass(frozen=True)
class LayerIterationConfig:
    """Settings of the layer-iteration experiment.

    Parameters
    ----------
    methods : tuple of str
        CAM methods of the curve; paper: Grad-CAM (Figure 10) -- Grad-CAM++ added.
    figure_method : str
        Method of the slices x layers figure (paper: Grad-CAM).
    layers : tuple of str or None
        Layers of the curve; None = every layer with spatial output.
    figure_layers : str or tuple of str
        ``"conv"`` = the convolution layers (what the paper's Figure 10 shows), ``"all"``,
        or layer names.
    class_index : int or None
        Class explained; None = the model's last class.
    slices : tuple of str
        Slices of the figure as ``"participant_id:slice"``; empty = the ``n_examples``
        largest held-out lesions, one per patient.
    n_examples : int
        Slices in the figure when ``slices`` is empty.
    max_slices : int or None
        At most this many lesion slices in the curve (seeded sample); None = all.
    chunk : int
        Slices per sweep (bounds memory: every layer's maps of a chunk are held at once).
    seed, n_boot : int
        Seed of the sample and of the patient-cluster bootstrap; replicates.
    """

    methods: tuple[str, ...] = ("gradcam", "gradcampp")
    figure_method: str = "gradcam"
    layers: tuple[str, ...] | None = None
    figure_layers: str | tuple[str, ...] = "conv"
    class_index: int | None = None
    slices: tuple[str, ...] = ()
    n_examples: int = 3
    max_slices: int | None = None
    chunk: int = 32
    seed: int = 0
    n_boot: int = 2000


# --------------------------------------------------------------------------- measures


def layer_metrics(sweep: dict, lesion: np.ndarray, brain: np.ndarray, cls: int) -> pd.DataFrame:
    """Localisation of class ``cls`` at every layer of a :func:`hypo.cam.layer_sweep` result.

    Parameters
    ----------
    sweep : dict of str -> CamResult
        Maps resized to the input grid.
    lesion, brain : ndarray (n, H, W) of bool
        Lesion and brain masks on the input grid.

    Returns
    -------
    DataFrame
        One row per (layer, method, image): ``layer``, ``method``, ``image`` and
        :data:`METRICS` (NaN where undefined, e.g. an all-zero map).
    """

    rows = []
    for layer, res in sweep.items():
        for method in res.methods:
            a = res.class_maps(method, cls)
            if a.shape != lesion.shape:
                raise ValueError(
                    f"layer {layer}: maps {a.shape} are not on the masks' grid {lesion.shape}; "
                    "sweep with resize=True"
                )
            tot = a.reshape(len(a), -1).sum(axis=1, dtype=np.float64)
            out = np.where(brain, 0, a).reshape(len(a), -1).sum(axis=1, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                outside = np.where(tot > 0, out / tot, np.nan)
            rows.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "method": method,
                        "image": np.arange(len(a)),
                        "relevance_mass": relevance_mass_accuracy(a, lesion, brain),
                        "pointing_game": pointing_game(a, lesion, brain),
                        "outside_brain_mass": outside,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def layer_curve(
    per: pd.DataFrame, layer_info: pd.DataFrame, seed: int = 0, n_boot: int = 2000
) -> pd.DataFrame:
    """Per (layer, method): mean of each metric with a 95% patient-cluster bootstrap CI.

    ``per`` has one row per (layer, method, slice) with ``participant_id`` and
    :data:`METRICS`; ``layer_info`` has ``layer``, ``depth``, ``layer_type``,
    ``resolution``. The pointing game's mean is its hit rate over slices where it is
    defined.
    """

    out = []
    for (layer, method), g in per.groupby(["layer", "method"], sort=False):
        row = {
            "layer": layer,
            "method": method,
            "n_slices": len(g),
            "n_patients": g["participant_id"].nunique(),
        }
        for m in METRICS:
            v = g[m].to_numpy(float)
            ok = np.isfinite(v)
            pids = g["participant_id"].to_numpy()[ok]
            lo, hi = (
                cluster_bootstrap_ci(v[ok], np.ones(ok.sum()), pids, n_boot, seed)
                if ok.any()
                else (np.nan, np.nan)
            )
            row |= {
                m: float(v[ok].mean()) if ok.any() else np.nan,
                f"{m}_low": lo,
                f"{m}_high": hi,
                f"{m}_undefined": int((~ok).sum()),
            }
        out.append(row)
    curve = layer_info.merge(pd.DataFrame(out), on="layer", how="right", validate="1:m")
    return curve.sort_values(["method", "depth"], kind="stable").reset_index(drop=True)


def describe_layers(model, layers) -> pd.DataFrame:
    """``layer``, ``depth`` (position in the model), ``layer_type``, ``resolution`` (cells)."""
    names = [la.name for la in model.layers]
    rows = []
    for name in layers:
        la = model.get_layer(name)
        shape = la.output.shape
        rows.append(
            {
                "layer": name,
                "depth": names.index(name),
                "layer_type": type(la).__name__,
                "resolution": "x".join(str(s) for s in shape[1:-1]),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def _grid_figure(path: Path, examples: list[dict], layers: list[str], method: str, cname: str):
    n_cols = len(layers) + 1
    fig, axes = plt.subplots(
        len(examples),
        n_cols,
        figsize=(1.6 * n_cols + 0.4, 1.7 * len(examples) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    for r, e in enumerate(examples):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(e["image"], cmap="gray", interpolation="nearest")
            if c > 0:
                m = e["maps"][layers[c - 1]]
                lo, hi = float(m.min()), float(m.max())
                # Scales differ by orders of magnitude between layers: each map is shown
                # min-max scaled on its own (display only; the curve uses raw maps).
                shown = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
                ax.imshow(shown, cmap="jet", vmin=0, vmax=1, alpha=0.5, interpolation="bilinear")
                rm = e["relevance_mass"][layers[c - 1]]
                ax.set_xlabel(
                    "mass on lesion " + ("n/a" if not np.isfinite(rm) else f"{rm:.0%}"), fontsize=6
                )
            if e["lesion"].any():
                ax.contour(e["lesion"].astype(float), levels=[0.5], colors="white", linewidths=0.4)
            kw = {"transform": ax.transAxes, "color": "yellow", "fontsize": 7, "va": "center"}
            ax.text(0.02, 0.5, "R", ha="left", **kw)
            ax.text(0.98, 0.5, "L", ha="right", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("input" if c == 0 else layers[c - 1], fontsize=7)
        axes[r, 0].set_ylabel(
            f"{e['participant_id']}\nslice {e['slice']}\np = {e['p']:.2f}", fontsize=7
        )
    fig.suptitle(
        f"{METHOD_NAMES.get(method, method)} of '{cname}' at each layer (each map min-max "
        "scaled; white: lesion outline)",
        fontsize=8,
    )
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
    finally:
        plt.close(fig)
    return path


def _curve_figure(path: Path, curve: pd.DataFrame, chance: float) -> Path | None:
    """The localisation curve by layer; None when no layer has a measure (e.g. no lesion
    slice with a usable brain mask), which the report then says."""
    order = curve.drop_duplicates("layer").sort_values("depth")["layer"].tolist()
    parts = []
    labels = {"relevance_mass": "lesion relevance mass", "pointing_game": "pointing game hit rate"}
    for m, lab in labels.items():
        parts.append(
            pd.DataFrame(
                {
                    "layer": pd.Categorical(curve["layer"], categories=order),
                    "depth": curve["depth"],
                    "method": curve["method"].map(lambda k: METHOD_NAMES.get(k, k)),
                    "metric": lab,
                    "value": curve[m],
                    "low": curve[f"{m}_low"],
                    "high": curve[f"{m}_high"],
                }
            )
        )
    d = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    if d.empty:
        return None
    plot = (
        p9.ggplot(d, p9.aes("layer", "value", colour="method", group="method"))
        + p9.geom_hline(yintercept=chance, linetype="dashed", colour="grey")
        + p9.geom_line()
        + p9.geom_pointrange(p9.aes(ymin="low", ymax="high"), size=0.3)
        + p9.facet_wrap("metric", ncol=1, scales="free_y")
        + p9.labs(
            x="evaluation layer (input to output)",
            y="",
            title="Localisation of the lesion by evaluation layer",
            caption="dashed: chance (lesion share of the brain); bars: 95% patient-cluster "
            "bootstrap CI",
        )
        + p9.theme_bw()
        + p9.theme(axis_text_x=p9.element_text(rotation=90, size=7))
    )
    return save_figure(plot, path, width=8, height=6)


# --------------------------------------------------------------------------- steps


def _figure_rows(inp: Inputs, rows: np.ndarray, cfg: LayerIterationConfig) -> np.ndarray:
    if not cfg.slices:
        return largest_lesions(inp, rows, cfg.n_examples)
    table = inp.store.table
    pids = table["participant_id"].astype(str).to_numpy()
    chosen = []
    for spec in cfg.slices:
        pid, _, sl = str(spec).rpartition(":")
        if not pid or not sl.lstrip("-").isdigit():
            raise ExperimentError(f"--slices {spec!r}: expected participant_id:slice")
        hit = np.flatnonzero((pids == pid) & (table["slice"].to_numpy() == int(sl)))
        if len(hit) == 0:
            raise ExperimentError(
                f"--slices {spec}: no such slice in the slice store of "
                f"{inp.store.cohort_id} (black slices are dropped by preprocessing)"
            )
        if hit[0] not in set(inp.held_out.tolist()):
            raise ExperimentError(
                f"--slices {spec}: {pid} is a training or validation patient of the model"
            )
        chosen.append(int(hit[0]))
    return np.asarray(chosen)


def _pick_figure_layers(info: pd.DataFrame, spec) -> list[str]:
    if spec == "all":
        return info["layer"].tolist()
    if spec == "conv":
        conv = info[info["layer_type"].str.contains("Conv")]["layer"].tolist()
        return conv or info["layer"].tolist()
    missing = [s for s in spec if s not in set(info["layer"])]
    if missing:
        raise ExperimentError(
            f"--figure-layers {missing}: not layers with spatial output; choose from "
            f"{info['layer'].tolist()}"
        )
    return list(spec)


@dataclass
class _Plan:
    """What a run measures: class, layers, figure layers and slices."""

    cls: int
    layers: list
    info: pd.DataFrame
    fig_layers: list
    rows: np.ndarray
    fig_rows: np.ndarray


def plan(inp: Inputs, cfg: LayerIterationConfig) -> _Plan:
    """Check the options against the model and draw the slices."""
    classes = inp.classes
    cls = len(classes) - 1 if cfg.class_index is None else int(cfg.class_index)
    if not 0 <= cls < len(classes):
        raise ExperimentError(f"--class-index {cls}: the model has classes {classes}")
    layers = list(cfg.layers or spatial_layers(inp.model))
    known = set(spatial_layers(inp.model))
    bad = [la for la in layers if la not in known]
    if bad:
        raise ExperimentError(f"--layers {bad}: not layers with spatial output of the model")
    info = describe_layers(inp.model, layers)
    fig_layers = _pick_figure_layers(info, cfg.figure_layers)
    if cfg.figure_method not in cfg.methods:
        raise ExperimentError(f"--figure-method {cfg.figure_method}: not in --methods")
    rows = inp.rows(lesion=True)
    if len(rows) == 0:
        raise ExperimentError(f"cohort {inp.store.cohort_id}: no held-out slice with a lesion")
    if cfg.max_slices is not None and len(rows) > cfg.max_slices:
        rng = rng_for(cfg.seed, NAME, "slices")
        rows = np.sort(rng.choice(rows, size=int(cfg.max_slices), replace=False))
    return _Plan(cls, layers, info, fig_layers, rows, _figure_rows(inp, rows, cfg))


def figure_examples(inp: Inputs, pl: _Plan, cfg: LayerIterationConfig, progress) -> list:
    """The figure's slices with every figure layer's map kept."""
    fig_rows, cls = pl.fig_rows, pl.cls
    table = inp.store.table
    pids = table["participant_id"].astype(str).to_numpy()
    sw = (
        {}
        if len(fig_rows) == 0
        else layer_sweep(
            inp.model,
            inp.images(fig_rows),
            layers=pl.fig_layers,
            methods=(cfg.figure_method,),
            classes=[cls],
        )
    )
    les = inp.lesion_masks(fig_rows)
    brain_f, _ = store_brain(inp.store, fig_rows, progress)
    fig_metrics = layer_metrics(sw, les, brain_f, cls)
    examples = []
    for i, r in enumerate(fig_rows):
        fm = fig_metrics[fig_metrics["image"] == i].set_index("layer")["relevance_mass"]
        examples.append(
            {
                "participant_id": pids[r],
                "slice": int(table["slice"].iat[r]),
                "image": inp.images([r])[0, ..., 0],
                "lesion": les[i],
                "p": float(sw[pl.fig_layers[0]].probabilities[i, cls]),
                "maps": {la: sw[la].class_maps(cfg.figure_method, cls)[i] for la in pl.fig_layers},
                "relevance_mass": fm.to_dict(),
            }
        )
    return examples


def sweep_slices(inp: Inputs, pl: _Plan, cfg: LayerIterationConfig, progress, say) -> tuple:
    """Per-(layer, method, slice) metrics, chance level and brain-mask source."""
    rows, cls = pl.rows, pl.cls
    table = inp.store.table
    pids = table["participant_id"].astype(str).to_numpy()
    parts, chance = [], []
    for a in range(0, len(rows), cfg.chunk):
        r = rows[a : a + cfg.chunk]
        les = inp.lesion_masks(r)
        brain, brain_src = store_brain(inp.store, r, progress)
        sweep = layer_sweep(
            inp.model, inp.images(r), layers=pl.layers, methods=cfg.methods, classes=[cls]
        )
        df = layer_metrics(sweep, les, brain, cls)
        del sweep
        df["store_index"] = r[df["image"].to_numpy()]
        parts.append(df.drop(columns="image"))
        nb = brain.reshape(len(r), -1).sum(axis=1)
        nl = (les & brain).reshape(len(r), -1).sum(axis=1)
        chance.append(np.where(nb > 0, nl / np.maximum(nb, 1), np.nan))
        say(f"layer sweep of {min(a + cfg.chunk, len(rows))}/{len(rows)} slices")
    per = pd.concat(parts, ignore_index=True)
    per.insert(0, "participant_id", pids[per["store_index"].to_numpy()])
    per.insert(1, "slice", table["slice"].to_numpy()[per["store_index"].to_numpy()])
    return per, float(np.nanmean(np.concatenate(chance))), brain_src


BEST_COLUMNS = [
    "method",
    "layer",
    "relevance_mass",
    "relevance_mass_low",
    "relevance_mass_high",
    "pointing_game",
]
CURVE_COLUMNS = [
    "method",
    "layer",
    "depth",
    "layer_type",
    "resolution",
    "n_slices",
    "relevance_mass",
    "relevance_mass_low",
    "relevance_mass_high",
    "pointing_game",
    "pointing_game_low",
    "pointing_game_high",
    "outside_brain_mass",
]


def _best_paragraphs(inp: Inputs, curve, chance_level) -> tuple:
    """(best layer per method, paragraphs on the card's layer)."""
    best = (
        curve.dropna(subset=["relevance_mass"])
        .sort_values(["method", "relevance_mass", "depth"], ascending=[True, False, True])
        .drop_duplicates("method")[BEST_COLUMNS]
    )
    card_layer = inp.cam_layer
    at_card = [
        f"{METHOD_NAMES.get(r.method, r.method)} {r.relevance_mass:.3f} "
        f"(95% CI {r.relevance_mass_low:.3f}-{r.relevance_mass_high:.3f}), pointing game "
        f"{r.pointing_game:.2f}"
        for r in curve[curve["layer"] == card_layer].itertuples()
    ]
    paragraphs = (
        [
            f"At the model card's CAM layer ({card_layer}, used by the other analyses) "
            f"the lesion relevance mass is {'; '.join(at_card)}; chance {chance_level:.3f}."
        ]
        if at_card
        else []
    )
    return best, paragraphs


def _report(inp: Inputs, pl: _Plan, per, curve, chance_level, brain_src, cfg, examples):
    """(intro, sections) of the report."""
    cname = inp.classes[pl.cls]
    n_pat = per["participant_id"].nunique()
    intro = [
        f"Cohort {inp.store.cohort_id}: {len(pl.rows)} held-out lesion slices of {n_pat} "
        f"patients ({len(inp.excluded_patients)} patients excluded as the model's training or "
        f"validation patients). Model {inp.model_dir} (classes: {', '.join(inp.classes)}); "
        f"class explained: '{cname}'; methods {method_names(cfg.methods)}; {len(pl.layers)} "
        "evaluation layers (every layer with spatial output), maps from the pre-softmax "
        "logit, resized bilinearly to the input, raw (not normalised) for the measures. "
        f"Brain masks: {brain_src}.",
        "The paper showed one slice's Grad-CAM at every convolution layer (Figure 10) and "
        "judged by eye where the lesion is found. Here the lesion relevance mass (share of "
        "the map's brain mass on the lesion) and the pointing-game hit rate are measured at "
        f"every layer over the cohort; chance (a uniform map) is {chance_level:.3f}.",
    ]
    best, at_card = _best_paragraphs(inp, curve, chance_level)
    figures = [
        (
            "figures/layer_curve.png",
            "Lesion relevance mass and pointing-game hit rate by evaluation layer.",
        )
    ]
    if examples:
        figures.append(
            (
                "figures/layer_grid.png",
                f"Figure 10 of the paper: {method_names([cfg.figure_method])} of '{cname}' at "
                f"each layer shown ({', '.join(pl.fig_layers)}).",
            )
        )
    sections = [
        {
            "heading": "Which depth explains best",
            "paragraphs": [
                "Layer with the highest mean lesion relevance mass, per method (ties: the "
                "shallower layer). Dropout layers pass their input unchanged at inference, so "
                "their maps equal those of the layer before.",
                *at_card,
            ],
            "tables": [(best.round(3), "Best layer per method")],
        },
        {
            "heading": "Per layer",
            "tables": [
                (
                    curve[CURVE_COLUMNS].round(3),
                    "layer_iteration.csv (per slice: layer_iteration_slices.csv)",
                )
            ],
            "figures": figures,
        },
    ]
    return intro, sections


def run(settings: RunSettings, cfg: LayerIterationConfig = LayerIterationConfig()) -> dict:
    """Run the experiment: measure, write tables, figures and report; return the paths."""
    started = time.perf_counter()
    say = settings.say(NAME)
    inp = open_inputs(settings)
    pl = plan(inp, cfg)
    say(
        f"cohort {inp.store.cohort_id}: {len(pl.rows)} held-out lesion slices x "
        f"{len(pl.layers)} layers"
    )
    # The figure's slices first (they need every figure layer's map kept), then the curve.
    examples = figure_examples(inp, pl, cfg, settings.progress)
    per, chance_level, brain_src = sweep_slices(inp, pl, cfg, settings.progress, say)
    curve = layer_curve(per, pl.info, cfg.seed, cfg.n_boot)
    curve["chance"] = chance_level
    out = Path(settings.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    cname = inp.classes[pl.cls]
    if examples:
        path = out / "figures" / "layer_grid.png"
        _grid_figure(path, examples, pl.fig_layers, cfg.figure_method, cname)
    drawn = _curve_figure(out / "figures" / "layer_curve.png", curve, chance_level)
    say("report")
    intro, sections = _report(inp, pl, per, curve, chance_level, brain_src, cfg, examples)
    if drawn is None:
        intro.append(
            "No layer has a measure (no lesion slice with a usable brain mask and map mass), "
            "so there is no layer curve; see layer_iteration_slices.csv."
        )
        for sec in sections:  # the report's sections are dicts of paragraphs/tables/figures
            sec["figures"] = [f for f in sec.get("figures", []) if "layer_curve" not in f[0]]
    paths = write_experiment(
        out,
        NAME,
        tables={"layer_iteration": curve, "layer_iteration_slices": per},
        sections=sections,
        config=settings.record_of(cfg, class_explained=cname, layers=pl.layers),
        inputs=inp,
        intro=intro,
        warnings=settings.warnings(inp.cohort),
        started=started,
    )
    say(f"wrote {out}")
    return paths
