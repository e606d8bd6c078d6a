"""The main study as one call: ``run_study(StudyConfig()) -> StudyResult``.

    from hypo.study import StudyConfig, run_study

    result = run_study(StudyConfig(quick=True))
    print(result.summary())
    result.write("reports/my_run")

Order matters: the registry lock is verified before any outcome is read; the features of
both models are computed (cached) before the analysis table is built; the leakage guard
runs on the table before any fit.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import atomic_path, file_hash, stable_hash, write_json_atomic, write_table_atomic
from hypo.cohort import Cohort
from hypo.cohort import load as load_cohort
from hypo.cohort.synthetic import generate_cohort
from hypo.features.join import require_held_out
from hypo.features.pipeline import DEFAULT_CONTROLS, FeatureRun, run_features
from hypo.nets.cards import read_card
from hypo.paths import ANALYSIS_COHORT, REPO_ROOT, cache_dir, data_dir, default_cohort_dir
from hypo.report.provenance import hash_files
from hypo.report.writer import Section, Table, write_analysis_report, write_report
from hypo.stats.registry import NOT_APPLICABLE, Registry, verify_lock

from .config import StudyConfig, StudyError, registry_version_of
from .oracle import truth_rows
from .panels import cam_examples
from .registered import run_hypotheses
from .secondary import CAPTIONS, secondary_analyses
from .table import (
    alias,
    build_table,
    class_index,
    hypothesis_flow,
    hypothesis_flow_summary,
    population_flow,
)

#: First columns of ``results.csv`` (identifiers after them stay in the file).
RESULT_COLUMNS = ["hypothesis", "model", "feature", "term", "estimate", "se", "OR", "OR_low",
                  "OR_high", "p", "q", "n", "direction"]  # fmt: skip


@dataclass
class Statistics:
    """Everything fitted on the analysed patients (cached as one unit)."""

    results: pd.DataFrame
    truth: pd.DataFrame | None
    secondary: dict[str, pd.DataFrame]


@dataclass
class StudyResult:
    """A finished study: tables, statistics, report material and timings."""

    config: StudyConfig
    cohort: Cohort
    table: pd.DataFrame
    flow: pd.DataFrame
    excluded: pd.DataFrame
    results: pd.DataFrame
    secondary: dict[str, pd.DataFrame]
    truth: pd.DataFrame | None
    features: dict[str, FeatureRun]
    cards: dict[str, dict]
    layers: dict[str, str]
    warnings: list[str]
    registry: Registry
    provenance: dict
    timings: dict = field(default_factory=dict)

    @property
    def hypothesis_flow(self) -> pd.DataFrame:
        """Per registered test, who it leaves out of the population and why."""
        return hypothesis_flow(self.data, self.registry)

    @property
    def data(self) -> pd.DataFrame:
        """The analysed patients (the analysis population)."""
        return self.table[self.table["analysis_population"]].reset_index(drop=True)

    def summary(self) -> str:
        """The primary results in a few lines."""
        prim = self.results[
            (self.results["map_source"] == "cam") & (self.results["analysis"] == "primary")
        ]
        lines = [f"{len(self.data)} patients analysed (cohort {self.cohort.cohort_id})"]
        for r in prim.itertuples():
            lines.append(
                f"  {r.hypothesis:<10} {r.model:<6} {r.feature:<28} OR {r.OR:.2f} "
                f"[{r.OR_low:.2f}, {r.OR_high:.2f}]  p {r.p:.3g}  q {r.q:.3g}"
            )
        return "\n".join(lines)

    def write(self, out_dir=None, history: list | None = None) -> dict[str, Path]:
        """Write tables, ``report.*``, ``secondary.*``, ``provenance.json`` and
        ``runtime.json`` into ``out_dir`` (default the config's ``out``).

        All or nothing: the folder is written under a temporary name and renamed onto
        ``out_dir`` when complete (a failure leaves the previous results, or none)."""
        final = Path(out_dir or self.config.out)
        previous = _read_history(final / "runtime.json")
        with atomic_path(final) as out:
            out.mkdir()
            paths = self._write_into(out, previous, history)
        return {k: final / Path(v).relative_to(out) for k, v in paths.items()}

    def _write_into(self, out: Path, previous: list, history: list | None) -> dict[str, Path]:
        t = time.perf_counter()
        power_text = power_paragraph(self.results, registry_version_of(self.config.hypotheses))
        write_table_atomic(out / "results.csv", self.results)
        write_table_atomic(out / "features.csv", self.table)
        for name, df in self.secondary.items():
            write_table_atomic(out / f"secondary_{name}.csv", df)
        write_table_atomic(out / "patient_flow_by_hypothesis.csv", self.hypothesis_flow)
        paths = _write_reports(self, out, power_text)
        self.timings["report_s"] = round(time.perf_counter() - t, 1)
        self.timings["total_s"] = round(
            self.timings.get("total_s", 0) + self.timings["report_s"], 1
        )
        runs = [*previous[-9:], {"cohort": self.cohort.cohort_id, **self.timings}]
        write_json_atomic(out / "runtime.json", {"runs": runs})
        if history is not None:
            history[:] = runs
        paths["results"] = out / "results.csv"
        paths["features"] = out / "features.csv"
        return paths


# --------------------------------------------------------------------------- inputs


def check_model(path: Path, key: str) -> Path:
    """A model folder with ``model.keras`` and ``card.json`` (the outcome model:
    ``head.json`` and ``card.json``), or an error naming the command that trains it."""
    path = Path(path)
    if key == "outcome":
        missing = [f for f in ("head.json", "card.json") if not (path / f).is_file()]
        if missing:
            raise StudyError(
                f"outcome model {path}: missing {missing}"
                f"{'' if path.is_dir() else ' (no such folder)'}. Train it with\n"
                "    python -m analyses.outcome_model --out models/outcome-mil-128\n"
                "or pass --outcome-model DIR, or --no-outcome-model to leave the outcome "
                "model's maps out"
            )
        return path
    missing = [f for f in ("model.keras", "card.json") if not (path / f).is_file()]
    if missing:
        arch, name = ("gap", "stroke-gap-128") if key == "stroke" else ("mrs", "mrs-gap-128")
        epochs = 100 if key == "stroke" else 400
        raise StudyError(
            f"{key} model {path}: missing {missing}. Train it with\n"
            f"    python -m analyses.train_models --model {arch} --size 128 --epochs {epochs} "
            f"--out models/{name}\n"
            f"(after `python -m analyses.prepare_default`), or pass --{key}-model DIR"
        )
    return path


def resolve_cohort(cfg: StudyConfig, stage) -> Cohort:
    """Load the cohort to analyse, generating the default synthetic one when missing."""
    if cfg.cohort is not None:
        root = Path(cfg.cohort)
        if not root.is_dir():
            raise StudyError(f"--cohort {root}: no such folder")
        return load_cohort(root, columns=cfg.columns)
    seed = ANALYSIS_COHORT["seed"]
    if cfg.quick:
        n = int(cfg.quick_patients)
        root = data_dir() / "synthetic" / f"quick-analysis-n{n}-s{seed}"
    else:
        n = ANALYSIS_COHORT["patients"]
        root = default_cohort_dir("analysis")
    if not (root / "participants.tsv").exists() or not (root / "generator.json").exists():
        stage(f"generating the synthetic analysis cohort ({n} patients) -> {root}")
    generate_cohort(root, n_patients=n, seed=seed, progress=cfg.progress)
    return load_cohort(root)


def run_warnings(cfg: StudyConfig, cohort: Cohort, cards: dict, reg: Registry) -> list[str]:
    """What a reader must know about this run's inputs (printed and in the report)."""
    out = []
    synthetic = [k for k, c in cards.items() if (c.get("cohort") or {}).get("generator_hash")]
    if not cohort.is_synthetic and synthetic:
        msg = (
            f"the {' and '.join(synthetic)} model(s) were trained on a synthetic cohort "
            f"but {cohort.cohort_id} is not synthetic: their maps of real DWI may mean "
            "little; retrain on your own data (python -m analyses.train_models --cohort ...)"
        )
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)
        out.append(msg)
    unregistered = sorted({h.method for h in reg.hypotheses.values()} - set(cfg.methods))
    if unregistered:
        out.append(
            f"--method {' '.join(cfg.methods)} leaves out the registered method(s) "
            f"{unregistered}: the tests use {cfg.methods[0]} instead, an exploratory run"
        )
    if cfg.outcome_layer is not None and "outcome" in cards:
        out.append(
            f"--outcome-layer {cfg.outcome_layer} overrides the layer of the outcome model's "
            "maps (the registered one, or its card's cam_layer): an exploratory run"
        )
    if cfg.layer is not None:
        out.append(
            f"--layer {cfg.layer} overrides the registered layer (the card's cam_layer): an "
            "exploratory run, not the registered analysis"
        )
    return out


def outcome_layer(cfg: StudyConfig, card: dict, reg: Registry) -> str:
    """Layer of the outcome model's bag CAMs: ``--outcome-layer``, else ``--layer``, else
    the layer its registered hypotheses name (when not ``cam_layer``), else its card's
    ``cam_layer``."""
    if cfg.outcome_layer or cfg.layer:
        return cfg.outcome_layer or cfg.layer
    named = sorted(
        {h.layer for h in reg.hypotheses.values() if h.model == "outcome"} - {"cam_layer"}
    )
    if len(named) > 1:
        raise StudyError(f"the registry names layers {named} for the outcome model's maps; the "
                         "study computes one (register one layer per model)")  # fmt: skip
    return named[0] if named else card.get("cam_layer")


def compute_features(cfg, cohort, model_dirs, cards, layers, reg, work, stage, timings):
    """Every model's feature run (CAMs, anatomy, slice and patient features; cached): the
    two CNNs, then the outcome model's bag CAMs when configured."""
    feats = {}
    for k in ("stroke", "mrs"):
        t = time.perf_counter()
        mh = file_hash(model_dirs[k] / "model.keras")
        stage(f"{k} model {model_dirs[k]} (model.keras sha256 {mh})")
        random_classes = {
            class_index(cards[k], h.cam_class, h.source)
            for h in reg.hypotheses.values()
            if h.model == k
        }
        feats[k] = run_features(
            cohort,
            model_dirs[k],
            work / f"{k}-{mh[:12]}",
            layer=layers[k],
            methods=cfg.methods,
            controls=DEFAULT_CONTROLS,
            random_control=cfg.random_control,
            random_classes=sorted(random_classes),
            progress=cfg.progress,
            seed=cfg.seed,
            stage=stage,
            max_qc_fail_fraction=cfg.max_qc_fail_fraction,
        )
        timings[f"features_{k}_s"] = round(time.perf_counter() - t, 1)
    if "outcome" in model_dirs:
        # TensorFlow loads only here (a refused cohort is refused without it).
        from hypo.nets.io import load_outcome_model

        from .outcome_maps import outcome_feature_run

        t = time.perf_counter()
        try:
            om = load_outcome_model(model_dirs["outcome"])
        except (FileNotFoundError, ValueError) as e:
            raise StudyError(f"{e}; or pass --no-outcome-model") from e
        hh = stable_hash(om.head.to_dict(), 12)
        stage(f"outcome model {model_dirs['outcome']} (bag CAMs at {layers['outcome']}, head "
              f"{hh}, pooling {om.pooling}, encoder {om.encoder_dir})")  # fmt: skip
        feats["outcome"] = outcome_feature_run(
            cohort, om, work / f"outcome-{hh}", layer=layers["outcome"], methods=cfg.methods,
            controls=DEFAULT_CONTROLS, random_control=cfg.random_control, seed=cfg.seed,
            progress=cfg.progress, stage=stage,
            max_qc_fail_fraction=cfg.max_qc_fail_fraction,
        )  # fmt: skip
        timings["features_outcome_s"] = round(time.perf_counter() - t, 1)
    return feats


# --------------------------------------------------------------------------- statistics


def _statistics_key(data: pd.DataFrame, lock_info: dict, cfg: StudyConfig, sources) -> str:
    """Key of the statistics cache: the analysed table, the locked registry, the settings
    and the code that computes the numbers."""
    here = Path(__file__).parent
    code = [*sorted(here.glob("*.py")), *sorted((REPO_ROOT / "hypo" / "stats").glob("*.py"))]
    return stable_hash(
        {
            "data": pd.util.hash_pandas_object(data, index=False).astype(str).tolist(),
            "columns": list(data.columns),
            "registry": lock_info.get("registry_sha256"),
            "settings": [cfg.n_boot, cfg.seed, cfg.cv_splits, cfg.mice_m, list(sources)],
            "code": [file_hash(f) for f in code if f.is_file()],
        }
    )


def _write_statistics(folder: Path, st: Statistics) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        return
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        st.results.to_pickle(tmp / "results.pkl")
        if st.truth is not None:
            st.truth.to_pickle(tmp / "truth.pkl")
        for name, df in st.secondary.items():
            df.to_pickle(tmp / f"secondary_{name}.pkl")


def _read_statistics(folder: Path) -> Statistics | None:
    if not (folder / "results.pkl").is_file():
        return None
    truth = pd.read_pickle(folder / "truth.pkl") if (folder / "truth.pkl").is_file() else None
    sec = {
        f.stem.removeprefix("secondary_"): pd.read_pickle(f)
        for f in sorted(folder.glob("secondary_*.pkl"))
    }
    return Statistics(pd.read_pickle(folder / "results.pkl"), truth, sec)


def fit_statistics(data, reg, cfg, cohort, sources, folder: Path, stage) -> tuple:
    """Registered tests, the truth oracle and the secondary battery, from the cache when
    nothing they depend on changed; returns ``(Statistics, reused)``."""
    cached = _read_statistics(folder)
    if cached is not None:
        stage(f"statistics: reusing {folder}")
        return cached, True
    st = Statistics(
        results=run_hypotheses(data, reg, cfg.lock, cfg.methods, sources),
        truth=truth_rows(data, cohort) if cohort.is_synthetic else None,
        secondary=secondary_analyses(data, reg, cfg),
    )
    _write_statistics(folder, st)
    return st, False


def assemble_results(st: Statistics) -> pd.DataFrame:
    """``results.csv``: registered tests with their bootstrap CIs, then the truth rows."""
    results = st.results.copy()
    boot = st.secondary["bootstrap"]
    if len(boot) and "OR_low" in boot:
        b = boot.set_index("hypothesis")
        prim = (results["map_source"] == "cam") & (results["analysis"] == "primary")
        for c in ("OR_low", "OR_high"):
            results.loc[prim, f"boot_{c}"] = results.loc[prim, "hypothesis"].map(b[c]).to_numpy()
    results["true_value"] = np.nan
    results["covered"] = pd.NA
    if st.truth is not None:
        results = pd.concat([results, st.truth], ignore_index=True)
    return results[RESULT_COLUMNS + [c for c in results.columns if c not in RESULT_COLUMNS]]


# --------------------------------------------------------------------------- run


def run_study(cfg: StudyConfig) -> StudyResult:
    """Run the whole study (features cached, statistics cached); nothing is written to
    ``cfg.out`` until :meth:`StudyResult.write`."""
    t0 = time.perf_counter()
    cfg = cfg.effective()
    stage = _stage if cfg.progress else (lambda msg: None)
    # Pre-registration first: nothing below may read an outcome before the lock holds.
    reg = verify_lock(cfg.hypotheses, cfg.lock)
    lock_info = json.loads(Path(cfg.lock).read_text(encoding="utf-8"))
    model_dirs = {k: check_model(p, k) for k, p in cfg.model_dirs().items()}
    cards = {k: read_card(p) for k, p in model_dirs.items()}
    missing = sorted({h.model for h in reg.hypotheses.values()} - set(model_dirs))
    untested = []
    if missing:
        # A map source switched off (--no-outcome-model): its registered hypotheses are
        # not tested, and the report says so; the lock still covers every file.
        untested = sorted(i for i, h in reg.hypotheses.items() if h.model in missing)
        reg = reg.without_models(missing)
        if not reg.hypotheses:
            raise StudyError(f"every registered hypothesis needs the {missing} model's maps, but "
                             "no such model is configured (--outcome-model DIR)")  # fmt: skip
    t = time.perf_counter()
    cohort = resolve_cohort(cfg, stage)
    cohort_s = round(time.perf_counter() - t, 1)  # generating a missing synthetic cohort
    stage(f"cohort {cohort.cohort_id} ({len(cohort.participants)} patients)")
    warnings = run_warnings(cfg, cohort, cards, reg)
    if untested:
        warnings.append(f"registered hypotheses {', '.join(untested)} were not tested: they "
                        f"need the {', '.join(missing)} model's maps, which this run leaves "
                        "out (--no-outcome-model or a config without it)")  # fmt: skip
    timings = {"cohort_s": cohort_s}
    layers = {k: cfg.layer or cards[k].get("cam_layer") for k in model_dirs}
    if "outcome" in layers:
        layers["outcome"] = outcome_layer(cfg, cards["outcome"], reg)
    work = cache_dir() / "analyses" / "asymmetry_vs_mrs" / cohort.cohort_id
    feats = compute_features(cfg, cohort, model_dirs, cards, layers, reg, work, stage, timings)
    sources = ["cam", "control_uniform", "control_intensity"]
    if cfg.random_control:
        sources.append("control_random_model")

    stage("analysis table, leakage guard, patient flow")
    table = build_table(feats, reg, cards, layers, cfg.methods, sources).table
    require_held_out(table)
    flow, excluded, pop = population_flow(table)
    table["analysis_population"] = pop.to_numpy()
    data = table[pop].reset_index(drop=True)
    if data.empty:
        steps = "; ".join(f"{r.step}: {r.n_remaining}" for r in flow.itertuples())
        raise StudyError(f"no patient of {cohort.cohort_id} is left to analyse ({steps})")

    t = time.perf_counter()
    stage(f"registered hypotheses on {len(data)} patients x {len(sources)} map sources")
    key = _statistics_key(data, lock_info, cfg, sources)
    st, reused = fit_statistics(data, reg, cfg, cohort, sources, work / "statistics" / key, stage)
    timings["statistics_s"] = round(time.perf_counter() - t, 1)
    timings["statistics_reused"] = reused
    prov = _provenance(cfg, cohort, model_dirs, cards, layers, lock_info, feats)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    return StudyResult(
        config=cfg,
        cohort=cohort,
        table=table,
        flow=flow,
        excluded=excluded,
        results=assemble_results(st),
        secondary=st.secondary,
        truth=st.truth,
        features=feats,
        cards=cards,
        layers=layers,
        warnings=warnings,
        registry=reg,
        provenance=prov,
        timings=timings,
    )


def _stage(msg: str) -> None:
    print(f"[asymmetry_vs_mrs] {msg}", file=sys.stderr, flush=True)


def _read_history(path: Path) -> list:
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text()).get("runs", [])
    except (json.JSONDecodeError, AttributeError):
        return []


def _model_provenance(key: str, folder: Path, card: dict, layer: str) -> dict:
    def sha(name):
        return file_hash(folder / name) if (folder / name).is_file() else None

    out = {
        "path": str(folder),
        "model_keras_sha256": sha("model.keras"),
        "card_sha256": sha("card.json"),
        "cam_layer": layer,
        "classes": card.get("classes"),
        "trained_on": (card.get("cohort") or {}).get("id"),
    }
    if key == "outcome":
        out |= {"head_json_sha256": sha("head.json"), "pooling": card.get("pooling"),
                "encoder": card.get("encoder"), "cam_class": "eta (ordinal linear predictor)"}  # fmt: skip
    return out


def _provenance(cfg, cohort, model_dirs, cards, layers, lock_info, feats) -> dict:
    return {
        "cohort": {
            "id": cohort.cohort_id,
            "content_hash": cohort.content_hash(),
            "participants_sha256": file_hash(Path(cohort.root) / "participants.tsv"),
            "synthetic": bool(cohort.is_synthetic),
        },
        "models": {
            k: _model_provenance(k, model_dirs[k], cards[k], layers[k]) for k in model_dirs
        },  # fmt: skip
        "registry": {
            "lock_file": str(cfg.lock),
            "lock_file_sha256": hash_files([cfg.lock])[str(cfg.lock)],
            "registry_sha256": lock_info.get("registry_sha256"),
            "locked_at": lock_info.get("locked_at"),
        },
        "seeds": {
            "bootstrap": cfg.seed,
            "cv_folds": cfg.seed,
            "mice": cfg.seed,
            "random_control": cfg.seed,
            "cohort": ANALYSIS_COHORT["seed"],
        },
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "caches": {k: feats[k].cam_dirs for k in feats},
    }


# --------------------------------------------------------------------------- report


def po_warnings(po: pd.DataFrame) -> list[str]:
    """A report warning per feature whose proportional-odds check fails (p < 0.05)."""
    out = []
    if po.empty or "brant_omnibus_p" not in po:
        return out
    for _, r in po.iterrows():
        ps = [r.get("brant_feature_p"), r.get("nominal_feature_p")]
        if any(p is not None and np.isfinite(p) and p < 0.05 for p in ps):
            out.append(
                f"{r['hypothesis']} ({r['model']} maps, {r['feature']}): proportional odds "
                f"questionable for the feature (Brant p = {r['brant_feature_p']:.3f}, nominal "
                f"LR p = {r['nominal_feature_p']:.3f}); see secondary_po_checks.csv and read "
                "the common OR as an average over cut-points"
            )
    return out


def _write_reports(res: StudyResult, out: Path, power_text: str = "") -> dict[str, Path]:
    cfg, data, results = res.config, res.data, res.results
    reg = res.registry
    warnings = list(res.warnings)
    examples, panel_kw = cam_examples(
        res.cohort, res.table[res.table["analysis_population"]], res.features, res.cards,
        cfg.methods, cfg.n_panels,
    )  # fmt: skip
    primary = [alias(h, "cam") for h in sorted(reg.hypotheses.values(), key=lambda h: h.id)]
    # Tertile bars need three patients and two distinct values of the feature; fewer gives
    # no figure, not an error.
    figure_feats = [f for f in primary if data[f].notna().sum() >= 3 and data[f].nunique() >= 2]
    if len(figure_feats) < len(primary):
        warnings.append(
            "no outcome figures for "
            + ", ".join(f for f in primary if f not in figure_feats)
            + ": fewer than 3 analysed patients with the feature, or all the same value"
        )
    intro = study_intro(cfg, res.cohort, res.cards, res.layers, len(data), res.truth is not None,
                        reg)  # fmt: skip
    if power_text:
        intro.append(power_text)
    # Tests a map source cannot define stay in results.csv; the report lists them once.
    na = results["error"].fillna("").astype(str).str.startswith(NOT_APPLICABLE)
    if na.any():
        intro.append(
            "Not applicable and left out of the tables below (kept in results.csv): "
            + "; ".join(
                sorted({f"{r.hypothesis} on {r.map_source}" for r in results[na].itertuples()})
            )
            + " (the feature is constant or undefined on that control map; see results.csv)."
        )
    paths = write_analysis_report(
        out,
        res.table,
        # the power sentences are in the intro (and results.csv), not in the wide table
        results[~na].drop(columns=["power_note"], errors="ignore").reset_index(drop=True),
        figure_feats,
        flow=res.flow,
        excluded=res.excluded,
        cam_examples=examples or None,
        cam_kwargs=panel_kw,
        provenance=res.provenance,
        intro=intro,
        warnings=warnings + po_warnings(res.secondary["po_checks"]),
        population="analysis_population",
        hypothesis_flow=hypothesis_flow_summary(res.hypothesis_flow),
    )
    sections = [
        Section(name.replace("_", " ").capitalize(), [Table(df, caption=CAPTIONS.get(name, name))])
        for name, df in res.secondary.items()
        if len(df)
    ]
    if not len(res.secondary.get("partial_po", [])):
        text = (
            "No term of a checked fit failed its proportional-odds check (p < 0.05), so no "
            "partial fit was needed; fits that could not be checked have their error under Po "
            "checks."
        )
        sections.append(Section("Partial po", [text]))
    if not len(res.secondary["mice"]):
        text = "No covariate is missing in the analysis population: no MICE sensitivity "
        sections.append(Section("Mice", [text + "analysis was needed."]))
    secondary = write_report(out, sections, title="Secondary analyses", stem="secondary")
    paths.update({f"secondary_{k}": v for k, v in secondary.items()})
    return paths


def power_paragraph(results: pd.DataFrame, version: str | None, alpha: float = 0.05) -> str:
    """Beside every null primary CAM result, the power that test had against the planted
    swelling effect (``analyses/power/<version>.csv``, :mod:`hypo.study.power`), or "power
    unknown"; also writes the sentence into ``results["power_note"]``."""
    from .power import power_condition, power_figures, power_note, read_shipped

    table = read_shipped(version) if version else None
    prim = (results["map_source"] == "cam") & (results["analysis"] == "primary")
    results["power_note"] = ""
    notes = []
    for i in results.index[prim]:
        h = results.at[i, "hypothesis"]
        note = power_note(table, h)
        results.at[i, "power_note"] = note
        q = results.at[i, "q"]
        if not (np.isfinite(q) and q < alpha):
            notes.append((h, note))
    src = f"analyses/power/{version}.csv" if table is not None else "no power table"
    if not notes:
        return (
            f"Every primary CAM test rejected at q < {alpha}; power per test: results.csv ({src})."
        )
    head = (f"Null results and the power they had (positive controls on the synthetic cohort, "
            f"python -m analyses.power; {src}): ")  # fmt: skip
    tail = (". A null result is evidence of absence only for effects at or above the test's "
            "detectable size.")  # fmt: skip
    # Notes that differ only in the power figure read as one list of numbers.
    figs = [(h, power_figures(table, h)) for h, _ in notes]
    conds = {power_condition(f) if f and f["mde_or"] is None else None for _, f in figs}
    if len(conds) == 1 and None not in conds:
        return (head + f"a null here had power, {conds.pop()}: "
                + ", ".join(f"{h} {f['power']:.2f}" for h, f in figs) + tail)  # fmt: skip
    return head + "; ".join(f"{h}: {n}" for h, n in notes) + tail


def study_intro(cfg, cohort, cards, layers, n, synthetic_truth: bool, reg=None) -> list[str]:
    """The report's opening paragraphs: population, maps, models, how to read them."""
    h0 = next(iter(reg.hypotheses.values())) if reg is not None else None
    covs = ", ".join(h0.covariates) if h0 else "the registered covariates"
    sens = ", ".join(h0.sensitivity_covariates) if h0 else "the sensitivity covariates"
    if h0 is not None and "nihss_baseline" in h0.covariates:
        nihss_note = (
            "NIHSS at admission is a primary covariate (registry v2, amendment 1: "
            "analyses/registry/v2/AMENDMENT.md): without it the primary tests rejected up to "
            "three times their nominal 5 % under the synthetic conditional null."
        )
    else:
        nihss_note = (
            "Read each primary CAM result together with its NIHSS-adjusted sensitivity "
            "result: on the synthetic cohort's conditional null (mRS depends on lesion volume, "
            "side, territory, NIHSS, treatment and age, not on swelling) several primary tests "
            "reject more often than 5 % while the sensitivity tests hold 5 % (python -m "
            "analyses.calibration; registry v2 puts NIHSS in the primary models)."
        )
    s_cls = ", ".join(str(c) for c in cards["stroke"]["classes"])
    m_cls = ", ".join(str(c) for c in cards["mrs"]["classes"])
    text = [
        f"Cohort {cohort.cohort_id}; analysis population: {n} stroke patients with a visible "
        "lesion and a known 3-month mRS, none a training or validation patient of any "
        "model whose maps are used.",
        "Maps used: Grad-CAM of the stroke model's 'stroke' class (classes: "
        f"{s_cls}; layer {layers['stroke']}) and of the mRS model's 'mRS 3-6' class "
        f"(classes: {m_cls}; layer {layers['mrs']}), averaged per patient over the lesion "
        "slices with the map's mass as weight. Why: these are the classes whose evidence the "
        "hypotheses are about, and a patient's lesion slices are where they have non-trivial "
        "predicted probability; the paper calls maps of near-zero-probability classes "
        "artefacts, so the 'no stroke' and 'mRS 0-2' maps of these slices are not tested.",
        f"Models: every fit is a proportional-odds model of mRS 0-6 adjusted for {covs} "
        f"(sensitivity: + {sens}); "
        "features are standardised, so an OR is per SD; OR > 1 means a worse (higher) mRS. "
        "q-values are Benjamini-Hochberg within each family (stroke_maps, mrs_maps) and map "
        "source. Negative controls (map_source control_uniform, control_intensity"
        f"{', control_random_model' if cfg.random_control else ''}) run the same hypotheses "
        "on maps that carry no model evidence.",
        nihss_note,
        "Secondary analyses (bootstrap CIs, proportional-odds checks, partial Spearman, "
        "mRS 0-2 vs 3-6, cross-validated C-index, MICE) are in secondary.md / secondary.html "
        "and secondary_*.csv.",
    ]
    if "outcome" in cards:
        c = cards["outcome"]
        text.append(
            f"Outcome model maps (columns outcome__<feature>__<source> in features.csv; tested "
            "only where a registered hypothesis names model 'outcome'): bag Grad-CAM of the "
            f"patient-level outcome model's ordinal linear predictor (pooling "
            f"{c.get('pooling')}, layer {layers['outcome']}; trained on "
            f"{(c.get('cohort') or {}).get('id')}), the same features, aggregation, anatomy "
            "and QC as the CNNs' maps and the same controls (the randomised-weights one: the "
            "same head on the encoder with randomised weights)."
        )
    if synthetic_truth:
        text.append(
            "Synthetic cohort: rows with hypothesis 'truth' refit the outcome on the "
            "generator's own covariates (true swelling SD, ln(true tissue volume + 1), ...) "
            "and state the generator's coefficient (true_value) and whether the 95% CI covers "
            "it. CAM features measure swelling with error, so they get power, not coverage."
        )
    if cfg.quick:
        text.append("Quick run (--quick): a small cohort and few resamples; not for inference.")
    return text
