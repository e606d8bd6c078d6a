"""Falsification harness of the main study: does its statistics keep its promises where
the truth is known? (``python -m analyses.calibration`` is the command line.)

The engine (outcome redraws, fast fits, rejection rates) is :mod:`hypo.stats.calibration`;
this module runs it on the main study's patient table: cheap replicates under the nulls and
a planted effect, full end-to-end replicates through the study's own functions, and the
leakage demonstration. ``args`` below is a :class:`CalibrationSettings` (or the parsed
command line, which has the same fields).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from plotnine import (
    aes,
    facet_wrap,
    geom_abline,
    geom_errorbar,
    geom_hline,
    geom_line,
    geom_point,
    ggplot,
    labs,
    theme_bw,
)

from hypo._util import rng_for, write_table_atomic
from hypo.cohort import layout
from hypo.cohort import load as load_cohort
from hypo.cohort.synthetic import SynthParams, generate_cohort
from hypo.features.join import LeakageError, flag_training_patients, require_held_out
from hypo.features.pipeline import run_features
from hypo.intervals import wilson_ci
from hypo.nets.cards import read_card
from hypo.nets.io import load_model
from hypo.paths import cache_dir, data_dir, default_cohort_dir
from hypo.preprocess import PreprocessConfig, build_slice_store
from hypo.report.writer import Figure, Section, Table
from hypo.stats import fit_proportional_odds, harrell_c
from hypo.stats.calibration import (
    CalibrationConfig,
    check_engine,
    null_band,
    outcome_covariates,
    power_by_size,
    prepare_fits,
    redraw_mrs,
    run_replicate,
    run_replicates,
    summarise,
)
from hypo.stats.registry import verify_lock

from .config import HYPOTHESES_DIR, LOCK_FILE, MRS_MODEL, STROKE_MODEL, StudyConfig
from .oracle import truth_rows
from .registered import run_hypotheses
from .table import build_table, population_flow

NAME = "calibration"
#: Replicates of a --quick run (tests, a first look).
QUICK_REPLICATES = 50
#: Patients of a full replicate's cohort (the main analysis's quick size).
FULL_PATIENTS = 30


@dataclass
class CalibrationSettings:
    """Settings of a calibration run (the command line's options, same names)."""

    features: Path
    out: Path
    cohort: Path | None = None
    n_replicates: int = 1000
    replicates: int = 2
    full_modes: list = field(default_factory=lambda: ["conditional_null", "default"])
    full_patients: int = FULL_PATIENTS
    workers: int = 1
    engine: str = "process"
    chunk: int = 100
    power_sizes: list = field(default_factory=lambda: [0.5, 1, 1.5, 2, 3])
    power_replicates: int = 300
    alpha: float = 0.05
    stroke_model: Path = STROKE_MODEL
    mrs_model: Path = MRS_MODEL
    dev_cohort: Path = field(default_factory=lambda: default_cohort_dir("dev"))
    leakage_patients: int = 80
    no_leakage: bool = False
    hypotheses: Path = HYPOTHESES_DIR
    lock: Path = LOCK_FILE
    quick: bool = False
    seed: int = 0


@dataclass
class CalibrationResult:
    """Tables, report sections and the closing lines of a calibration run."""

    tables: dict[str, pd.DataFrame]
    sections: list
    intro: list[str]
    closing: list[str]
    provenance: dict
    started: float


class CalibrationError(RuntimeError):
    """The calibration cannot run on these inputs (the message says which and why)."""


# --------------------------------------------------------------------------- inputs


def read_cohort_truth(root: Path):
    """participants, truth table and generator parameters of a synthetic cohort folder."""

    root = Path(root)
    files = [root / layout.PARTICIPANTS, root / layout.TRUTH_TABLE, root / layout.GENERATOR]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CalibrationError(
            f"cohort {root}: missing {missing}; the calibration needs a synthetic cohort "
            "(its generator's truth)"
        )
    part = pd.read_csv(files[0], sep="\t", dtype={"participant_id": str}, na_values=["n/a"])
    truth = pd.read_csv(files[1], sep="\t", dtype={"participant_id": str}, na_values=["n/a"])
    gen = json.loads(files[2].read_text(encoding="utf-8"))
    return part, truth, SynthParams.from_dict(gen.get("params") or {}), gen


def candidate_rows(features: pd.DataFrame, where: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The main analysis's population before its mRS-known step, and which lack the mRS.

    The replicates redraw every patient's mRS and then blank the ones the cohort lacks, so
    each replicate analyses exactly the patients the main analysis analysed.
    """
    need = ["participant_id", "group", "has_features", "in_model_training", "mrs_3months"]
    miss = [c for c in need if c not in features.columns]
    if miss:
        raise CalibrationError(f"{where}: lacks {miss}; expected the main analysis's table")
    stroke = features["group"].astype(str).str.lower().eq("stroke")
    visible = pd.to_numeric(features.get("any_lesion_visible"), errors="coerce").fillna(0) > 0
    keep = (
        stroke
        & visible
        & features["has_features"].astype(bool)
        & ~features["in_model_training"].astype(bool)
    )
    rows = features[keep].reset_index(drop=True)
    missing = pd.to_numeric(rows["mrs_3months"], errors="coerce").isna().to_numpy()
    if (~missing).sum() < 10:
        raise CalibrationError(f"{where}: only {(~missing).sum()} analysable patients")
    return rows, missing


# --------------------------------------------------------------------------- full replicates


def full_replicate(i: int, mode: str, args, reg, say) -> pd.DataFrame:
    """One end-to-end replicate: a new seeded cohort, CAMs, features, registered fits."""

    # The CNNs' maps only: the outcome model's maps depend on the outcome (they have the
    # nested design of hypo.study.power).
    reg = reg.without_models(["outcome"])
    seed = int(rng_for(args.seed, "full_replicate", i).integers(1, 2**31 - 1))
    n = args.full_patients
    root = data_dir() / "synthetic" / "calibration" / f"full-{mode}-n{n}-s{seed}"
    say(f"full replicate {i} ({mode}): cohort {root.name}")
    generate_cohort(root, n_patients=n, seed=seed, mode=mode, workers=args.workers,
                    progress=False)  # fmt: skip
    cohort = load_cohort(root)
    dirs = {"stroke": args.stroke_model, "mrs": args.mrs_model}
    cards = {k: read_card(p) for k, p in dirs.items()}
    layers = {k: cards[k].get("cam_layer") for k in dirs}
    work = cache_dir() / "analyses" / NAME / cohort.cohort_id
    feats = {
        k: run_features(cohort, dirs[k], work / k, layer=layers[k], methods=("gradcam",),
                        controls=(), progress=False, seed=args.seed, stage=lambda m: None)
        for k in dirs
    }  # fmt: skip
    cfg = StudyConfig(
        methods=("gradcam",), lock=args.lock, hypotheses=args.hypotheses, progress=False
    )
    table = build_table(feats, reg, cards, layers, cfg.methods, ["cam"]).table
    _, _, pop = population_flow(table)
    data = table[pop].reset_index(drop=True)
    res = run_hypotheses(data, reg, cfg.lock, cfg.methods, ["cam"])
    res = res[res["analysis"] == "primary"]
    truth = truth_rows(data, cohort)
    if truth is not None:
        res = pd.concat(
            [res, truth[truth["term"].isin(["swelling", "log_lesion_volume_ml_plus_1"])]]
        )
    res = res.assign(replicate=i, mode=mode, cohort=cohort.cohort_id, n_patients=n)
    return res.reset_index(drop=True)


def full_replicates(args, reg, say) -> pd.DataFrame:
    """``args.replicates`` end-to-end replicates, cycling over ``args.full_modes``; each is
    cached in ``out/full_replicates/`` so a rerun only runs the missing ones."""
    folder = Path(args.out) / "full_replicates"
    folder.mkdir(parents=True, exist_ok=True)

    parts = []
    for i in range(args.replicates):
        mode = args.full_modes[i % len(args.full_modes)]
        f = folder / f"replicate-{i:04d}-{mode}-s{args.seed}.csv"
        if not f.exists():
            write_table_atomic(f, full_replicate(i, mode, args, reg, say))
        parts.append(pd.read_csv(f))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summarise_full(df: pd.DataFrame, alpha: float, level: float) -> pd.DataFrame:
    """Rejection rate (and, for the truth rows, coverage) over full replicates, with CIs."""

    if df.empty:
        return df
    rows = []
    for (mode, hyp, term), g in df.groupby(["mode", "hypothesis", "term"], sort=True):
        p = pd.to_numeric(g["p"], errors="coerce")
        k, n = int((p < alpha).sum()), len(g)
        lo, hi = wilson_ci(k, n, level)
        row = {"mode": mode, "hypothesis": hyp, "term": term, "n_replicates": n,
               "n_failed": int(p.isna().sum()), "rejection_rate": k / n,
               "mc_low": float(lo), "mc_high": float(hi),
               "mean_OR": float(pd.to_numeric(g["OR"], errors="coerce").mean())}  # fmt: skip
        if "covered" in g and g["covered"].notna().any():
            c = g["covered"].dropna().astype(str).str.lower().eq("true")
            row["coverage"] = float(c.mean())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- leakage


def leakage_demo(args, say) -> tuple[pd.DataFrame, str]:
    """The mRS model's P(mRS 3-6) vs mRS on its training patients and on held-out patients.

    A model's training patients carry their labels into its outputs (and maps): the same
    association test that is honest on held-out patients is inflated on them. Returns the
    comparison and the leakage guard's refusal message for the training patients.
    """

    card = read_card(args.mrs_model)
    cohort_id = (card.get("cohort") or {}).get("id", "")
    root = Path(args.dev_cohort)
    if not root.is_dir():
        raise CalibrationError(f"development cohort {root} not found (--dev-cohort)")
    cohort = load_cohort(root)
    pre = dict(card.get("preprocessing") or {})
    store = build_slice_store(cohort, PreprocessConfig(**pre), progress=False)
    part = cohort.participants.copy()
    if "participant_id" not in part.columns:  # indexed by participant_id
        part = part.rename_axis("participant_id").reset_index()
    part["participant_id"] = part["participant_id"].astype(str)
    ok = part["group"].eq("stroke") & part["mrs_3months"].notna()
    groups = {"training": set(map(str, card["train_patients"])),
              "held_out": set(map(str, card.get("test_patients") or []))}  # fmt: skip
    lesion = np.asarray(store.masks["lesion"]).reshape(len(store.table), -1).any(axis=1)
    pids = store.table["participant_id"].astype(str).to_numpy()
    with_lesion = set(pids[lesion])
    classes = [str(c) for c in card["classes"]]
    k_poor = classes.index("mRS 3-6")
    model = load_model(args.mrs_model, input_shape=(store.config.size, store.config.size, 1))
    rng = rng_for(args.seed, "leakage")
    rows, tables = [], {}
    n_each = min(args.leakage_patients, *(len(ok[part["participant_id"].isin(g)
                                                 & part["participant_id"].isin(with_lesion)])
                                          for g in groups.values()))  # fmt: skip
    for name, members in groups.items():
        cand = part[ok & part["participant_id"].isin(members)
                    & part["participant_id"].isin(with_lesion)]  # fmt: skip
        pick = np.sort(rng.choice(len(cand), size=min(n_each, len(cand)), replace=False))
        sel = cand.iloc[pick]
        idx = np.flatnonzero(np.isin(pids, sel["participant_id"]) & lesion)
        prob = model.predict(np.asarray(store.images[idx], np.float32)[..., None], verbose=0,
                             batch_size=64)[:, k_poor]  # fmt: skip
        per = pd.Series(prob).groupby(pids[idx]).mean()
        d = sel.assign(p_poor=sel["participant_id"].map(per).astype(float))
        d["z"] = (d["p_poor"] - d["p_poor"].mean()) / d["p_poor"].std(ddof=1)
        tables[name] = d
        fit = fit_proportional_odds(d, "mrs_3months ~ z + age + mrs_before")
        r = fit.coef.loc["z"]
        rows.append({"patients": name, "n": len(d), "OR_per_SD": float(np.exp(r["estimate"])),
                     "OR_low": float(np.exp(r["estimate"] - 1.96 * r["se"])),
                     "OR_high": float(np.exp(r["estimate"] + 1.96 * r["se"])),
                     "p": float(r["p"]),
                     "harrell_c": float(harrell_c(d["p_poor"], d["mrs_3months"]))})  # fmt: skip
        say(f"leakage: {name} patients n={len(d)}: OR per SD {rows[-1]['OR_per_SD']:.2f}")
    t = tables["training"].assign(cohort_id=cohort_id)
    try:
        require_held_out(flag_training_patients(t, card))
        refusal = "(no refusal: the guard did not flag the training patients)"
    except LeakageError as e:
        refusal = str(e)
        if len(refusal) > 400:  # the message names every patient; the report shows the gist
            refusal = refusal[:300] + " ... " + refusal[-100:]
    return pd.DataFrame(rows), refusal


# --------------------------------------------------------------------------- figures


def _figures(out: Path, reps: pd.DataFrame, power: pd.DataFrame, alpha: float) -> list:

    figs = []
    fdir = out / "figures"
    fdir.mkdir(parents=True, exist_ok=True)
    nulls = reps[reps["setting"].isin(["complete_null", "conditional_null"])
                 & reps["term"].ne("log_lesion_volume_ml_plus_1")].dropna(subset=["p"])  # fmt: skip
    if len(nulls):
        d = nulls.sort_values("p").assign(
            expected=lambda x: x.groupby(["setting", "hypothesis"])["p"].rank(method="first")
            / x.groupby(["setting", "hypothesis"])["p"].transform("size"))  # fmt: skip
        g = (ggplot(d, aes("expected", "p", colour="hypothesis")) + geom_line()
             + geom_abline(linetype="dashed") + facet_wrap("~setting")
             + labs(x="uniform quantile", y="observed p-value (sorted)",
                    title="p-values under the nulls (on the diagonal = calibrated)")
             + theme_bw())  # fmt: skip
        g.save(fdir / "null_pvalues.png", width=9, height=4.5, dpi=110, verbose=False)
        figs.append(Figure("figures/null_pvalues.png", "Sorted p-values of every hypothesis "
                           "against uniform quantiles under the two nulls."))  # fmt: skip
    if len(power):
        g = (ggplot(power, aes("n_patients", "power")) + geom_line() + geom_point()
             + geom_errorbar(aes(ymin="mc_low", ymax="mc_high"), width=0)
             + geom_hline(yintercept=0.8, linetype="dashed")
             + labs(x="patients analysed", y=f"power at alpha {alpha}",
                    title="Oracle swelling test (OR 1.5 per SD), by cohort size")
             + theme_bw())  # fmt: skip
        g.save(fdir / "power_by_size.png", width=6, height=4, dpi=110, verbose=False)
        figs.append(Figure("figures/power_by_size.png", "Power of the truth-derived swelling "
                           "test by cohort size (Wilson 95 % MC CIs)."))  # fmt: skip
    return figs


# --------------------------------------------------------------------------- run


def _fmt(x, d=3):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def run_calibration(args, say) -> CalibrationResult:

    started = time.perf_counter()
    if args.quick:
        args.n_replicates = min(args.n_replicates, QUICK_REPLICATES)
        args.power_replicates = min(args.power_replicates, 20)
        args.power_sizes = [1.0]
    try:
        check_engine(args.engine)
    except ValueError as e:
        raise CalibrationError(str(e)) from e
    reg = verify_lock(args.hypotheses, args.lock)
    cohort_dir = Path(args.cohort) if args.cohort else default_cohort_dir("analysis")
    part, truth, params, gen = read_cohort_truth(cohort_dir)
    feats_path = Path(args.features)
    if not feats_path.is_file():
        raise CalibrationError(
            f"{feats_path}: no patient table; run `python -m analyses.asymmetry_vs_mrs` first "
            "(or pass --features)"
        )
    features = pd.read_csv(feats_path, dtype={"participant_id": str}, low_memory=False)
    rows, missing = candidate_rows(features, str(feats_path))
    covs = outcome_covariates(part, truth)
    lost = sorted(set(rows["participant_id"]) - set(covs.index))
    if lost:
        raise CalibrationError(
            f"{feats_path}: patients {lost[:5]} are not in cohort {cohort_dir} (--cohort?)"
        )
    covs = covs.loc[rows["participant_id"].to_numpy()]

    def column_for(h):
        return f"{h.model}__{h.feature}__cam"

    specs = prepare_fits(rows, reg, column_for, truth=covs, sensitivity=True)
    n_an = int((~missing).sum())
    say(f"{len(rows)} patients ({n_an} with an mRS, as the main analysis), "
        f"{len(specs) - 1} registered fits (primary and sensitivity) + the oracle fit")  # fmt: skip
    config = CalibrationConfig(n_replicates=args.n_replicates, alpha=args.alpha,
                                   seed=args.seed, chunk=args.chunk, workers=args.workers)  # fmt: skip
    t = time.perf_counter()
    probe = redraw_mrs(covs, "default", np.random.default_rng(0), params, 1.5, missing)
    for _ in range(3):
        run_replicate(probe, specs, args.alpha)
    per = (time.perf_counter() - t) / 3
    est = per * args.n_replicates * len(config.settings) / max(1, args.workers)
    say(
        f"cheap replicates: {args.n_replicates} x {len(config.settings)} settings, "
        f"~{per:.2f} s each -> estimate {est / 60:.1f} min on {args.workers} workers"
    )
    out = Path(args.out)
    reps = run_replicates(out / "replicates", covs, specs, config, missing, params,
                              args.engine, say)  # fmt: skip
    summ = summarise(reps, config, params)
    an_covs = covs[~missing]
    sizes = sorted({max(20, int(round(m * n_an))) for m in args.power_sizes})
    say(f"power by size {sizes} ({args.power_replicates} replicates each)")
    power = power_by_size(an_covs, sizes, args.power_replicates, args.seed, 1.5,
                              args.alpha, config.level, params)  # fmt: skip

    full = pd.DataFrame()
    full_summary = pd.DataFrame()
    notes = []
    if args.replicates > 0:
        try:
            full = full_replicates(args, reg, say)
            full_summary = summarise_full(full, args.alpha, config.level)
        except Exception as e:  # a model or a cohort missing must not lose the cheap results
            notes.append(f"Full replicates not run: {type(e).__name__}: {e}")
    leak = pd.DataFrame()
    refusal = ""
    if not args.no_leakage:
        try:
            leak, refusal = leakage_demo(args, say)
        except Exception as e:
            notes.append(f"Leakage demonstration not run: {type(e).__name__}: {e}")

    rr, fr, ts = summ["rejection_rates"], summ["family_rates"], summ["truth_summary"]
    closing = closing_note(rr, ts, power, n_an, args.n_replicates, args.alpha)
    sections = report_sections(rr, fr, ts, power, full_summary, leak, refusal, closing, args,
                               n_an)  # fmt: skip
    sections.append(Section("Figures", _figures(out, reps, power, args.alpha)))
    intro = [
        f"Cohort {gen.get('generator', 'synthetic')} {cohort_dir.name} (synthetic: the "
        f"generator's outcome model is known); {n_an} analysed patients from {feats_path}. "
        f"Generator mode of the cohort: {gen.get('mode')}; mRS redrawn per setting.",
        f"{args.n_replicates} cheap replicates per setting (features and covariates fixed, "
        "outcomes redrawn; Wald tests, no bootstrap inside), seed "
        f"{args.seed}; {args.replicates} full replicates ({FULL_PATIENTS} patients each).",
        *notes,
    ]
    if args.quick:
        intro.append("Quick run (--quick): few replicates; not for inference.")
    tables = {"rejection_rates": rr, "family_rates": fr, "truth_summary": ts,
              "power_by_size": power, "full_replicates": full_summary, "leakage": leak}  # fmt: skip
    provenance = {"cohort": {"path": str(cohort_dir), "generator_hash": gen.get("hash")},
                  "features": str(feats_path)}  # fmt: skip
    return CalibrationResult(tables, sections, intro, closing, provenance, started)


def closing_note(rr, ts, power, n_an, n_rep, alpha) -> list[str]:
    """The issue's targets, measured (printed and in the report)."""

    lo, hi = null_band(n_rep, alpha)
    lines = [f"Targets (cheap replicates, {n_rep} per setting):"]
    nulls = rr[rr["within_null_band"].notna()]
    sens = nulls["hypothesis"].astype(str).str.endswith("+sensitivity")
    for label, t1 in (("primary", nulls[~sens]), ("sensitivity", nulls[sens])):
        if not len(t1):
            continue
        ok = t1["within_null_band"].fillna(False).astype(bool)
        lines.append(
            f"  type-I within {lo:.3f}-{hi:.3f}, {label} models: {int(ok.sum())}/{len(t1)} "
            "(hypothesis, null) pairs"
            + (": outside: " if (~ok).any() else "")
            + "; ".join(
                f"{r.setting}/{r.hypothesis} {r.rejection_rate:.3f}" for r in t1[~ok].itertuples()
            )  # fmt: skip
        )
    sw = ts[(ts["term"] == "swelling") & (ts["role"] == "power")]
    if len(sw):
        r = sw.iloc[0]
        lines.append(
            f"  coverage of the planted swelling coefficient: {_fmt(r.coverage)} "
            f"(MC CI {_fmt(r.coverage_mc_low)}-{_fmt(r.coverage_mc_high)}; target 0.93-0.97)"
        )
        lines.append(
            f"  power of the truth-derived swelling test at n = {n_an}: "
            f"{_fmt(r.rejection_rate)} (target >= 0.8)"
        )
    if len(power):
        reach = power[power["power"] >= 0.8]
        lines.append(
            "  smallest simulated size reaching power 0.8: "
            + (
                f"{int(reach['n_patients'].min())} patients"
                if len(reach)
                else f"none up to {int(power['n_patients'].max())}"
            )  # fmt: skip
        )
    return lines


def report_sections(rr, fr, ts, power, full, leak, refusal, closing, args, n_an) -> list:

    fmt = lambda df: df.round(4)  # noqa: E731
    secs = [Section("Closing note: the targets", ["\n".join(closing)])]
    t1 = rr[rr["setting"].isin(["complete_null", "conditional_null", "non_proportional_odds"])]
    secs.append(Section("Type-I error under the generator's nulls", [
        "Rejection rate (p < alpha) of every registered hypothesis and of the oracle fit's "
        "terms per setting, with Wilson 95 % Monte-Carlo CIs; null_band is the central 95 % "
        "range of a rate whose truth is alpha. In the non-proportional-odds mode swelling "
        "acts on the severe cuts (OR up to 3 at mRS <= 4 vs 5-6), so rejections there are "
        "not type-I errors of an association test: that setting shows what a common-OR "
        "test reports when proportional odds fails.",
        Table(fmt(t1), "Rejection rates under the nulls and under non-proportional odds"),
        Table(fmt(fr), "Family-wise rates: any p < alpha (uncorrected) and any BH q < alpha "
                       "(under a complete null of the family: the FDR)"),
    ]))  # fmt: skip
    pw = rr[rr["setting"].eq("planted_effect")]
    secs.append(Section("Power and bias with the planted effect (OR 1.5 per SD of swelling)", [
        "Power of each CAM-feature hypothesis (measured, not targeted: a CAM feature measures "
        "swelling with error and is not the generator's variable, so it has no true "
        "coefficient and gets no coverage). Bias and coverage are reported for the oracle "
        "fit on the generator's own covariates, where the estimand is defined.",
        Table(fmt(pw), "Rejection rates with the planted effect"),
        Table(fmt(ts), "Oracle fit: bias, empirical vs model SE, 95 % CI coverage and "
                       "rejection rate per setting"),
        Table(fmt(power), "Power of the oracle swelling test by cohort size (patients "
                          "resampled from the analysed ones)"),
    ]))  # fmt: skip
    secs.append(Section("Full replicates (new cohort, CAMs, features, fits)", [
        f"{args.replicates} end-to-end replicates of {args.full_patients} patients each, modes "
        f"{', '.join(args.full_modes)} in turn. A small check on a 2-core CPU: the CIs are "
        "wide; run `--replicates N` on more cores for a tighter one.",
        Table(fmt(full), "Full replicates: rejection rate per mode and hypothesis")
        if len(full) else "No full replicates ran.",
    ]))  # fmt: skip
    leak_content = [
        "The mRS model's mean P(mRS 3-6) over a patient's lesion slices, standardised, as the "
        "feature of a proportional-odds fit of mRS adjusted for age and pre-stroke mRS, on the "
        "model's own training patients and on the same number of held-out test patients of "
        "the development cohort. A model's outputs (and the maps built on them) on its "
        "training patients carry their labels: the association is inflated there.",
    ]
    if len(leak):
        leak_content.append(Table(fmt(leak), "Leakage: training vs held-out patients"))
        leak_content.append("The leakage guard's refusal for the training patients: "
                            f"`{refusal}`")  # fmt: skip
    else:
        leak_content.append("Not run (--no-leakage or a missing model).")
    secs.append(Section("Leakage: what the guard prevents", leak_content))
    return secs
