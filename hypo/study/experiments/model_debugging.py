"""Model debugging (paper section 4.1.4, Table 2): five architectures, one seed, one split.

The paper trained its Herzog baseline and the "Dense", "Flat", "GAP" and "Shallow" models
with the same random seed on the same training, validation and test data, reported
accuracy, sensitivity and specificity (Wilson 95 % intervals), AUC and negative
log-likelihood (Table 2), and judged each model's Grad-CAM "qualitatively good" or "poor"
by eye. hypo measures the explainability instead, on the test patients' lesion slices:

- relevance mass: share of the Grad-CAM of class "stroke" (pre-softmax score, the ReLU
  after the last convolution, resized to the input) that falls inside the lesion mask,
  counting brain pixels only; next to it the share a uniform map would give (the lesion's
  share of the brain), so a number can be read against chance;
- pointing game: does the map's maximum (inside the brain) lie in the lesion; hit rate
  with a Wilson interval;
- MPRT (model-parameter randomisation test, Adebayo et al. 2018): cascading
  randomisation from the output layer down; the Spearman similarity between the map of
  the trained model and that of the fully randomised model should be near 0 (a map that
  survives randomisation explains the image, not the model).

Settings. ``--full`` is the paper's: 192 px, the whole development cohort, up to 100
epochs with early stopping (patience 10), all five architectures -- for a GPU. The
default is a fixed smaller setting for a 2-core CPU: 96 px, 150 patients, 5 epochs, the
four architectures of the paper's Table 2 (Dense, Flat, GAP, Shallow). The Herzog
baseline pools six times and only takes multiples of 64 px, so it joins whenever the size
allows (``--full``, ``--size 128``; about 5x the GAP model's time per step on a CPU).
``--quick`` (tests): the 12-patient synthetic cohort, 64 px, 1 epoch.

Each model is trained by :func:`hypo.study.experiments.train_models.train_model` (split,
class weights, augmentation, checkpoints) into its own folder under the cache, keyed by
the settings: a killed run continues from its last epoch, finished models are reused.

Command line: ``python -m analyses.model_debugging`` (CPU setting: 96 px, 150 patients, 5
epochs, about 16 min on 2 cores;
``--full`` for a GPU); in a notebook ``model_debugging.run(RunSettings(out=...),
TrainingSetting(), ModelDebuggingConfig())``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotnine as p9

from hypo._util import file_hash, rng_for
from hypo.cam import compute
from hypo.cam.metrics import localisation_table
from hypo.cam.sanity import cascading_randomisation
from hypo.intervals import wilson_ci
from hypo.nets.architectures import SIZE_DIVISOR
from hypo.nets.evaluation import evaluate_stroke, table2
from hypo.report.cam_panels import write_cam_panels
from hypo.report.figures import save_figure
from hypo.study.experiments.frame import (
    ExperimentError,
    RunSettings,
    stage,
    store_brain,
    store_images,
    write_experiment,
)
from hypo.study.experiments.training import (
    CPU,
    Member,
    TrainingSetting,
    describe_setting,
    member_model_dir,
    mode_label,
    models_root,
    native_slice,
    test_rows,
    train_member,
    training_cohort,
    training_store,
)

NAME = "model_debugging"
#: The paper's names of the architectures (Table 2 and section 4.1.4).
PAPER_NAMES = {
    "herzog": "Baseline (Herzog)",
    "dense": "Dense-Model",
    "flat": "Flat-Model",
    "gap": "GAP-Model",
    "shallow": "Shallow-Model",
}
#: The paper's verdict on each model's Grad-CAM (judged by eye, section 4.1.4).
PAPER_VERDICT = {
    "herzog": "qualitatively poor",
    "dense": "qualitatively poor",
    "flat": "qualitatively poor",
    "gap": "qualitatively good",
    "shallow": "qualitatively very good",
}


@dataclass(frozen=True)
class ModelDebuggingConfig:
    """What the experiment trains and measures.

    Parameters
    ----------
    architectures : tuple of str or None
        :data:`PAPER_NAMES` keys; None = all five that take the setting's size (Herzog:
        multiples of 64 px).
    cam_slices : int
        Test lesion slices whose Grad-CAM is scored (seeded draw; 0 = all).
    mprt_slices : int
        Test lesion slices of the cascading randomisation.
    n_boot : int
        Bootstrap replicates of the evaluation.
    full : bool
        The run uses the paper's setting (named in the report).
    """

    architectures: tuple[str, ...] | None = None
    cam_slices: int = 400
    mprt_slices: int = 8
    n_boot: int = 2000
    full: bool = False


def localisation(member: Member, x, lesion, brain, batch_size: int = 32) -> pd.DataFrame:
    """Grad-CAM of class "stroke" against the lesion masks, one row per slice."""
    res = compute(
        member.model,
        x,
        layer=member.card["cam_layer"],
        methods=("gradcam",),
        classes=[1],
        resize=True,
        batch_size=batch_size,
    )
    maps = res["gradcam"][:, 0]
    t = localisation_table(maps, lesion, brain)
    region = brain if brain is not None else np.ones_like(lesion)
    in_region = region.reshape(len(region), -1).sum(1)
    t["chance_relevance_mass"] = t["mask_pixels"] / np.maximum(in_region, 1)
    t["p_stroke"] = res.probabilities[:, 1]
    t["zero_map"] = maps.reshape(len(maps), -1).max(1) <= 0
    return t.drop(columns=["map_index"])


def mprt(member: Member, x, seed: int = 0) -> pd.DataFrame:
    """Cascading randomisation of ``member`` on images ``x`` (Grad-CAM, class stroke)."""
    df = cascading_randomisation(
        member.model,
        x,
        layer=member.card["cam_layer"],
        methods=("gradcam",),
        classes=[1],
        seed=seed,
    )
    df["n_steps"] = int(df["step"].max())
    return df


def explainability_summary(loc: pd.DataFrame, mp: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture: relevance mass, pointing game (Wilson CI), MPRT."""
    rows = []
    for arch, g in loc.groupby("architecture", sort=False):
        pg = g["pointing_game"].dropna()
        lo, hi = wilson_ci(int(pg.sum()), len(pg))
        m = mp[mp["architecture"] == arch]
        last = m[m["step"] == m["step"].max()]["spearman_rho"]
        first = m[m["step"] == 1]["spearman_rho"]
        rows.append(
            {
                "architecture": arch,
                "n_lesion_slices": len(g),
                "zero_maps": int(g["zero_map"].sum()),
                "relevance_mass": g["relevance_mass"].mean(),
                "chance_relevance_mass": g["chance_relevance_mass"].mean(),
                "relevance_rank": g["relevance_rank"].mean(),
                "mask_auc": g["auc"].mean(),
                "pointing_game": pg.mean() if len(pg) else np.nan,
                "pointing_game_low": lo,
                "pointing_game_high": hi,
                "pointing_game_n": len(pg),
                "mprt_rho_logits_randomised": first.median(),
                "mprt_rho_fully_randomised": last.median(),
                "mprt_n_slices": int(m["image"].nunique()) if len(m) else 0,
                "paper_verdict_by_eye": PAPER_VERDICT.get(arch, ""),
            }
        )
    return pd.DataFrame(rows)


def _mprt_figure(mp: pd.DataFrame, path: Path) -> Path:
    d = mp.groupby(["architecture", "step"], sort=False)["spearman_rho"].median().reset_index()
    d["share_randomised"] = d["step"] / d.groupby("architecture")["step"].transform("max")
    fig = (
        p9.ggplot(d, p9.aes("share_randomised", "spearman_rho", colour="architecture"))
        + p9.geom_hline(yintercept=0, linetype="dashed", colour="grey")
        + p9.geom_line()
        + p9.geom_point(size=1)
        + p9.labs(
            x="share of weighted layers re-drawn (from the output down)",
            y="median Spearman rho\n(trained vs randomised Grad-CAM)",
            title="MPRT: cascading randomisation",
        )
        + p9.theme_bw()
    )
    return save_figure(fig, path, width=6.5, height=3.6)


def _panels(cohort, store, members, rows, out: Path) -> Path:
    t = store.table
    x = store_images(store, rows)
    examples = []
    for m in members:
        res = compute(m.model, x, layer=m.card["cam_layer"], methods=("gradcam", "gradcampp"))
        classes = m.card["classes"]
        for i, r in enumerate(rows):
            pid, k = str(t["participant_id"].iloc[r]), int(t["slice"].iloc[r])
            examples.append(
                {
                    "participant_id": pid,
                    "image_native": native_slice(cohort, pid, k),
                    "image_preprocessed": x[i, ..., 0],
                    "maps": {
                        (meth, c): res[meth][i, j]
                        for meth in ("gradcam", "gradcampp")
                        for j, c in enumerate(classes)
                    },
                    "probabilities": {
                        c: float(res.probabilities[i, j]) for j, c in enumerate(classes)
                    },
                    "slice_index": k,
                    "mrs_3months": float(t["mrs_3months"].iloc[r])
                    if "mrs_3months" in t.columns
                    else None,
                    "lesion_mask": np.asarray(store.masks["lesion"][r]) > 0,
                    "model": PAPER_NAMES.get(m.architecture, m.architecture),
                }
            )
    return write_cam_panels(
        out,
        examples,
        classes=[members[0].card["classes"][1]],
        methods=("gradcam", "gradcampp"),
        scale="per_image",
    )


# --------------------------------------------------------------------------- steps


def training_data(settings: RunSettings, setting: TrainingSetting):
    """The training cohort (with lesion masks) and its slice store."""
    cohort = training_cohort(settings)
    if not cohort.has_lesion_masks:
        raise ExperimentError(
            f"cohort {cohort.cohort_id}: no lesion masks; the explainability column is "
            "measured against lesion masks (derivatives/lesion_masks/...)"
        )
    return cohort, training_store(cohort, setting, progress=settings.progress)


def architectures(cfg: ModelDebuggingConfig, size: int) -> tuple[list[str], list[str]]:
    """(architectures to train, those that take ``size`` px)."""
    fits = [a for a in PAPER_NAMES if size % SIZE_DIVISOR[a] == 0]
    archs = list(cfg.architectures or fits)
    wrong = [a for a in archs if a not in fits]
    if wrong:
        raise ExperimentError(
            f"{wrong} cannot take {size} px images (Herzog needs a "
            "multiple of 64, the others of 32 or less)"
        )
    return archs, fits


def train_members(store, setting: TrainingSetting, archs, n_boot: int, quiet: bool) -> list:
    """One trained (or reused) model per architecture, same seed and split."""
    root = models_root(store, setting)
    stage(NAME, f"{len(store.table)} slices at {setting.size} px; models under {root}", quiet)
    members = []
    for arch in archs:
        stage(NAME, f"training {arch} ({setting.epochs} epochs max)", quiet)
        model_dir = member_model_dir(root, arch, setting.seed)
        m = train_member(store, model_dir, arch, setting, n_boot=n_boot, quiet=quiet)
        stage(NAME, f"{arch}: {'reused' if m.reused else 'trained'} -> {m.model_dir}", quiet)
        members.append(m)
    if len({tuple(m.card["test_patients"]) for m in members}) != 1:
        raise AssertionError("the architectures were tested on different patients")
    return members


@dataclass
class _TestSlices:
    """The test slices, their lesion masks and the lesion slices scored."""

    rows: np.ndarray
    y: np.ndarray
    pid: np.ndarray
    x: np.ndarray
    lesion: np.ndarray
    les: np.ndarray  # positions of the scored lesion slices
    mprt_idx: np.ndarray
    brain: np.ndarray | None


def test_slices(store, card, setting: TrainingSetting, cfg: ModelDebuggingConfig) -> _TestSlices:
    rows, y = test_rows(store, card)
    pid = store.table["participant_id"].astype(str).to_numpy()[rows]
    x = store_images(store, rows)
    lesion_all = np.asarray(store.masks["lesion"][rows]) > 0
    les = np.flatnonzero(lesion_all.reshape(len(rows), -1).any(1))
    if cfg.cam_slices and len(les) > cfg.cam_slices:
        les = np.sort(rng_for(setting.seed, "cam-slices").choice(les, cfg.cam_slices, False))
    mprt_idx = les[np.linspace(0, len(les) - 1, min(cfg.mprt_slices, len(les))).astype(int)]
    brain = store_brain(store, rows[les], derive=False)[0]
    return _TestSlices(rows, y, pid, x, lesion_all, les, mprt_idx, brain)


def evaluate_members(members, store, t: _TestSlices, setting, n_boot, quiet) -> tuple:
    """(Table 2, per-metric performance, per-slice localisation, MPRT) of every member."""
    evals, perf, loc_frames, mprt_frames = {}, [], [], []
    les = t.les
    for m in members:
        stage(NAME, f"evaluating {m.architecture} on {len(t.rows)} test slices", quiet)
        proba = m.model.predict(t.x, batch_size=64, verbose=0)
        ev = evaluate_stroke(t.y, proba, t.pid, n_boot=n_boot, seed=setting.seed)
        evals[PAPER_NAMES[m.architecture]] = ev
        p = ev.image.copy()
        p.insert(0, "architecture", m.architecture)
        p.insert(1, "n_parameters", int(m.model.count_params()))
        perf.append(p)
        if len(les):
            lt = localisation(m, t.x[les], t.lesion[les], t.brain)
            lt.insert(0, "architecture", m.architecture)
            lt.insert(1, "participant_id", t.pid[les])
            lt.insert(2, "slice", store.table["slice"].to_numpy()[t.rows[les]])
            loc_frames.append(lt)
            stage(NAME, f"MPRT of {m.architecture} on {len(t.mprt_idx)} slices", quiet)
            d = mprt(m, t.x[t.mprt_idx], seed=setting.seed)
            d.insert(0, "architecture", m.architecture)
            mprt_frames.append(d)
    t2 = table2(evals)
    t2.insert(1, "Parameters", [int(m.model.count_params()) for m in members])
    perf_df = pd.concat(perf, ignore_index=True)
    loc = pd.concat(loc_frames, ignore_index=True) if loc_frames else pd.DataFrame()
    mp = pd.concat(mprt_frames, ignore_index=True) if mprt_frames else pd.DataFrame()
    return t2, perf_df, loc, mp


def _figures(out: Path, cohort, store, members, t: _TestSlices, mp) -> list:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures = []
    if len(mp):
        figures.append(
            (
                "figures/mprt.png",
                "MPRT: median Spearman similarity of the Grad-CAM "
                "(class stroke) of the trained model to that of the model with the top "
                "share of its weighted layers re-drawn. Near 0 = the map depends on the "
                "weights (passes); near 1 = it does not.",
            )
        )
        _mprt_figure(mp, out / figures[-1][0])
    les = t.les
    if len(les):
        ex_rows = t.rows[les[np.argsort(-t.lesion[les].reshape(len(les), -1).sum(1))[:2]]]
        figures.append(
            (
                "figures/cam_panels.png",
                "Grad-CAM and Grad-CAM++ of class stroke "
                "(each map min-max scaled on its own) of the two test slices with the "
                "largest lesions, one row per architecture; lesion outlined.",
            )
        )
        _panels(cohort, store, members, ex_rows, out / figures[-1][0])
    return figures


def _explainability_shown(expl: pd.DataFrame) -> pd.DataFrame:
    """The explainability table with the pointing game and its interval in one column."""
    shown = expl.copy()
    if len(shown):
        shown["pointing_game"] = [
            f"{r.pointing_game:.3f} [{r.pointing_game_low:.3f} {r.pointing_game_high:.3f}] "
            f"(n={r.pointing_game_n})"
            for r in shown.itertuples()
        ]
        shown = shown.drop(columns=["pointing_game_low", "pointing_game_high", "pointing_game_n"])
    return shown


def _sections(mode: str, setting_txt: str, members, t2, expl, figures) -> list:
    layers = ", ".join(f"{m.architecture}: `{m.card['cam_layer']}`" for m in members)
    expl_show = _explainability_shown(expl)
    return [
        {
            "heading": "Setting",
            "paragraphs": [
                f"Mode: {mode}. " + setting_txt,
                "Every architecture: same seed, same split, same slices (`hypo.nets.training` "
                "via `hypo.study.experiments.train_models`). Metrics on the test patients' "
                "slices; label = reader's slice label (`lesion_visible`). Grad-CAM of class "
                "stroke from the pre-softmax score at the ReLU after the last convolution "
                f"({layers}), bilinear to the input.",
            ],
        },
        {
            "heading": "Table 2: performance (image level, Wilson 95 % intervals)",
            "tables": [
                (
                    t2,
                    "Paper's Table 2 columns. AUC = ROC AUC of the probabilities; 'AUC (hard)' "
                    "= (sensitivity + specificity) / 2, what the paper's AUC column equals.",
                )
            ],
        },
        {
            "heading": "Explainability measured against the lesion masks",
            "paragraphs": [
                "relevance_mass: share of the map inside the lesion (brain pixels only); "
                "chance_relevance_mass: what a uniform map gets (the lesion's share of the "
                "brain). pointing_game: hit rate of the map's maximum, Wilson 95 % interval. "
                "mprt_rho_*: median Spearman of the trained model's map to the map after "
                "re-drawing the logits layer only / every weighted layer (want: near 0 after "
                "full randomisation). zero_maps: slices whose stroke map is all zero (ReLU). "
                "The last column is the paper's verdict by eye, for comparison."
            ],
            "tables": [(expl_show, "One row per architecture.")] if len(expl_show) else [],
        },
        {"heading": "Figures", "figures": figures},
    ]


def _provenance(setting, members, cohort, store, card) -> dict:
    return {
        "setting": asdict(setting),
        "models": {
            m.architecture: {
                "folder": str(m.model_dir),
                "sha256": file_hash(m.model_dir / "model.keras"),
                "reused": m.reused,
                "cam_layer": m.card["cam_layer"],
            }
            for m in members
        },
        "cohort": {
            "id": cohort.cohort_id,
            "content_hash": store.cohort_hash,
            "slice_store": store.path.name,
            "synthetic": bool(cohort.is_synthetic),
        },
        "test_patients": list(card["test_patients"]),
    }


def run(
    settings: RunSettings,
    setting: TrainingSetting = CPU,
    cfg: ModelDebuggingConfig = ModelDebuggingConfig(),
) -> dict:
    """Train the architectures, measure performance and explainability, write the
    report; return the paths."""
    started = time.perf_counter()
    q = settings.quiet
    cohort, store = training_data(settings, setting)
    archs, fits = architectures(cfg, setting.size)
    members = train_members(store, setting, archs, cfg.n_boot, q)
    t = test_slices(store, members[0].card, setting, cfg)
    t2, perf_df, loc, mp = evaluate_members(members, store, t, setting, cfg.n_boot, q)
    warnings = []
    left_out = [a for a in PAPER_NAMES if a not in archs]
    if left_out:
        herzog = "herzog" in left_out and "herzog" not in fits
        warnings.append(
            f"Not trained in this run: {', '.join(PAPER_NAMES[a] for a in left_out)}"
            + (" (the Herzog baseline takes only multiples of 64 px)" if herzog else "")
        )
    if len(t.les) == 0:
        warnings.append("The test patients have no lesion slice: no explainability measured.")
        expl = pd.DataFrame()
    else:
        expl = explainability_summary(loc, mp)
    out = Path(settings.out)
    figures = _figures(out, cohort, store, members, t, mp)
    card = members[0].card
    cpu = "CPU setting (smaller than the paper's 192 px, all patients, 100 epochs)"
    mode = mode_label(settings, cfg.full, cpu)
    setting_txt = describe_setting(cohort, store, setting, card)
    tables = {
        "table2": t2,
        NAME: perf_df,
        "explainability": expl,
        "localisation": loc,
        "mprt": mp,
    }
    paths = write_experiment(
        out,
        NAME,
        tables=tables,
        sections=_sections(mode, setting_txt, members, t2, expl, figures),
        config=settings.record_of(cfg),
        intro=[__doc__.split("\n\n")[0]],
        warnings=warnings,
        extra_provenance=_provenance(setting, members, cohort, store, card),
        started=started,
    )
    stage(NAME, f"report -> {out / 'report.md'}", q)
    return paths
