"""Positive controls of the main study: power against a planted effect, type-I error under
two nulls, and the minimum detectable effect, for every registered test (issue 17).

The synthetic generator plants swelling (``or_swelling_per_sd``) and renders it in the
images (mass effect, sulcal effacement, ventricle compression). The images, anatomy, slice
embeddings and every CNN's maps do not depend on the outcome, so a replicate keeps them and
redraws the 3-month mRS from the generator's outcome model (:func:`hypo.stats.calibration.
redraw_mrs`) under one *condition*:

* ``complete_null``: mRS depends on age, pre-stroke mRS and sex only;
* ``conditional_null``: mRS depends on NIHSS, territory, volume, side, age and treatment,
  not on swelling (the realistic danger: maps share location and volume with the outcome);
* ``or_<x>``: the default outcome model with swelling's OR per SD set to ``x`` (lesion
  volume, side, NIHSS and the other covariates of each patient fixed: the effect grid).

Each replicate refits, on the same redrawn outcome:

* every registered hypothesis (primary; sensitivity where the table has its covariates) of
  the registry version under test and of any older version compared with it;
* ``truth``: the oracle fit on the generator's own covariates (its swelling term is the
  ceiling: what a perfect measurement of swelling would detect);
* ``image:<statistic>``: each image sign of swelling (:mod:`hypo.features.swelling`,
  measured from the scan) with the registry's primary covariates: is the planted property
  visible in the images at all?
* optionally, *map sets* (:class:`MapSets`): features of maps that depend on the outcome
  (the outcome model's maps: its head is refitted on the development outcomes of the same
  condition). ``K`` map sets per condition, each with ``n / K`` outcome redraws of the
  analysis cohort (a nested design): the map-set features are what the replicate
  conditions on besides the images.

Power of a test is the share of replicates with p < alpha (and, for a registered test,
with BH q < alpha in its family); type-I error the same share under a null. Monte-Carlo
intervals are Wilson intervals. The minimum detectable effect of a test is the smallest OR
per SD at which its power reaches 0.8, interpolated on log OR between grid points ("beyond
the grid" when it never does). The replicate engine is :func:`hypo.stats.calibration.
run_replicates`: seeds per (seed, setting, replicate), resumable chunks, a process pool or
a dask cluster.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hypo._util import write_table_atomic
from hypo.intervals import wilson_ci
from hypo.stats.calibration import (
    CalibrationConfig,
    FitSpec,
    Setting,
    _design,
    check_engine,
    outcome_covariates,
    prepare_fits,
    run_replicates,
)
from hypo.stats.registry import Registry, _term_name, _transform

__all__ = [
    "CONDITIONS_NULL",
    "MapSets",
    "PowerError",
    "PowerResult",
    "PowerSettings",
    "conditions",
    "image_specs",
    "map_set_correlation_summary",
    "minimum_detectable_effect",
    "partial_correlations",
    "power_table",
    "run_power",
    "type_one_table",
]

#: The two nulls (type-I error) every run includes.
CONDITIONS_NULL = (
    Setting("complete_null", "null", "type_I"),
    Setting("conditional_null", "conditional_null", "type_I"),
)
#: Image signs of swelling tested beside the maps (columns of the main study's table).
IMAGE_STATISTICS = ("sulcal_effacement", "ventricle_compression")
#: Power that defines the minimum detectable effect.
MDE_POWER = 0.8
#: Type-I targets of issue 17: every primary test <= 0.065 with its MC upper bound <= 0.08.
TYPE_I_MAX = 0.065
TYPE_I_UPPER_MAX = 0.08


class PowerError(RuntimeError):
    """The power study cannot run on these inputs (the message says which and why)."""


def conditions(effects: Sequence[float]) -> tuple[Setting, ...]:
    """The nulls and one planted-effect setting per OR per SD of swelling in ``effects``."""
    out = list(CONDITIONS_NULL)
    for x in effects:
        x = float(x)
        if not x > 1.0:
            raise PowerError(f"effect {x}: planted ORs must be > 1 (OR 1 is the conditional null)")
        out.append(Setting(f"or_{x:g}", "default", "power", planted_or_per_sd=x))
    return tuple(out)


def _effect_of(setting_name: str) -> float:
    if setting_name.startswith("or_"):
        return float(setting_name[3:])
    return 1.0


@dataclass
class MapSets:
    """Features of maps that depend on the outcome, one set per (condition, replicate k).

    ``features(condition, k)`` returns one row per analysed patient (``participant_id``)
    with the map features as columns; ``hypotheses`` maps a test name to (column, family):
    each is fitted with the registry's primary covariates and ``feature_form`` z-score.
    ``per_condition`` map sets are made per condition (``K``)."""

    features: Callable[[Setting, int], pd.DataFrame]
    hypotheses: dict
    per_condition: int = 1
    describe: str = ""


def image_specs(table: pd.DataFrame, columns, covariates: Sequence[str],
                family: str = "image_statistics", prefix: str = "image:") -> list[FitSpec]:  # fmt: skip
    """Fixed designs testing each column (z-scored) with ``covariates``, one per column
    that the table holds with at least 10 known values. ``columns``: names, or a mapping
    test name -> column."""
    specs = []
    table = table.reset_index(drop=True)
    named = dict(columns) if isinstance(columns, dict) else {c: c for c in columns}
    for name, col in named.items():
        if col not in table.columns or table[col].notna().sum() < 10:
            continue
        term = _term_name(col)
        df = table.assign(**{term: _transform(table[col], "zscore", col)})
        X, rows = _design(df, " + ".join([term, *covariates]))
        specs.append(FitSpec(f"{prefix}{name}", family, tuple(X.columns), (term,),
                             X.to_numpy(float), df.index.to_numpy()[rows]))  # fmt: skip
    return specs


def partial_correlations(table: pd.DataFrame, columns: Sequence[str], truth: pd.Series,
                         covariates: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """Spearman partial correlation of each column with the true swelling, given the
    (numeric) covariates: does the feature measure the planted property at all?"""
    import pingouin as pg

    rows = []
    d = table.reset_index(drop=True).assign(_true_swelling=np.asarray(truth, float))
    covs = [c for c in covariates if c in d.columns]
    for col in columns:
        if col not in d.columns:
            continue
        x = d[[col, "_true_swelling", *covs]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(x) < len(covs) + 5 or x[col].nunique() < 3:
            continue
        r = pg.partial_corr(x, x=col, y="_true_swelling", covar=covs, method="spearman")
        p_col = next(c for c in r.columns if c.startswith("p"))
        ci = r[next(c for c in r.columns if c.upper().startswith("CI"))].iloc[0]
        rows.append({"feature": col, "n": int(len(x)), "partial_r": float(r["r"].iloc[0]),
                     "ci_low": float(ci[0]), "ci_high": float(ci[1]),
                     "p": float(r[p_col].iloc[0])})  # fmt: skip
    return pd.DataFrame(rows, columns=["feature", "n", "partial_r", "ci_low", "ci_high", "p"])


def map_set_correlation_summary(pcs: pd.DataFrame) -> pd.DataFrame:
    """Per map-set feature and condition: the partial correlation with true swelling in
    each map set (``partial_r_by_set``) and their mean. Under a planted effect a head that
    learned swelling gives features (and a linear predictor ``outcome_eta``) that track it
    more than under the nulls."""
    if pcs.empty:
        return pcs
    g = pcs.groupby(["feature", "condition", "effect_or"], sort=False)
    out = g.agg(n=("n", "max"), mean_partial_r=("partial_r", "mean"),
                min_partial_r=("partial_r", "min"), max_partial_r=("partial_r", "max"),
                n_map_sets=("map_set", "nunique")).reset_index()  # fmt: skip
    out["partial_r_by_set"] = [
        " ".join(f"{r:+.2f}" for r in grp.sort_values("map_set")["partial_r"]) for _, grp in g
    ]
    return out.sort_values(["feature", "effect_or", "condition"]).reset_index(drop=True)


# --------------------------------------------------------------------------- summaries


def _kind(hypothesis: str) -> str:
    if hypothesis == "truth":
        return "truth"
    if hypothesis.startswith("image:"):
        return "image statistic"
    if hypothesis.startswith("map:"):
        return "map set"
    return "registered"


def power_table(reps: pd.DataFrame, alpha: float = 0.05, level: float = 0.95) -> pd.DataFrame:
    """Per test and condition: rejection rate (p < alpha) and, for registered and map-set
    tests, the rate of BH q < alpha within the family; Wilson MC intervals.

    Columns: ``hypothesis, family, kind, analysis, condition, effect_or, power, mc_low,
    mc_high, power_q, q_mc_low, q_mc_high, n_replicates, n_failed``. The oracle row uses its
    swelling term; ``power`` under a null is the type-I error."""
    if reps.empty:
        return pd.DataFrame()
    d = reps[(reps["hypothesis"] != "truth") | (reps["term"] == "swelling")].copy()
    d["rej"] = d["p"] < alpha
    d["rej_q"] = d["q"] < alpha
    d["failed"] = d["error"].fillna("").astype(str).ne("")
    g = d.groupby(["hypothesis", "family", "condition"], sort=False)
    out = g.agg(n_rej=("rej", "sum"), n_rej_q=("rej_q", "sum"), n_replicates=("rej", "size"),
                n_failed=("failed", "sum")).reset_index()  # fmt: skip
    out["power"] = out["n_rej"] / out["n_replicates"]
    out["mc_low"], out["mc_high"] = wilson_ci(out["n_rej"], out["n_replicates"], level)
    out["power_q"] = out["n_rej_q"] / out["n_replicates"]
    out["q_mc_low"], out["q_mc_high"] = wilson_ci(out["n_rej_q"], out["n_replicates"], level)
    none_q = out["hypothesis"].map(_kind).isin(["truth", "image statistic"])
    out.loc[none_q, ["power_q", "q_mc_low", "q_mc_high"]] = np.nan
    out["kind"] = out["hypothesis"].map(_kind)
    out["analysis"] = np.where(out["hypothesis"].str.endswith("+sensitivity"), "sensitivity",
                               "primary")  # fmt: skip
    out["effect_or"] = out["condition"].map(_effect_of)
    cols = ["hypothesis", "family", "kind", "analysis", "condition", "effect_or", "power",
            "mc_low", "mc_high", "power_q", "q_mc_low", "q_mc_high", "n_replicates", "n_failed"]  # fmt: skip
    return (
        out[cols]
        .sort_values(["kind", "hypothesis", "effect_or", "condition"])
        .reset_index(drop=True)
    )


def type_one_table(power: pd.DataFrame) -> pd.DataFrame:
    """Rejection rates under the two nulls, with issue 17's verdict per test (rate <=
    0.065 and MC upper bound <= 0.08)."""
    t = power[power["condition"].isin([s.name for s in CONDITIONS_NULL])].copy()
    t = t[t["kind"] != "truth"]
    t["meets_target"] = (t["power"] <= TYPE_I_MAX) & (t["mc_high"] <= TYPE_I_UPPER_MAX)
    return (
        t.rename(columns={"power": "type_I_error"})
        .drop(columns=["effect_or"])
        .reset_index(drop=True)
    )


def minimum_detectable_effect(power: pd.DataFrame, target: float = MDE_POWER,
                              column: str = "power") -> pd.DataFrame:  # fmt: skip
    """Smallest OR per SD of swelling with power >= ``target`` per test, interpolated
    linearly on log OR between the grid's effects (the conditional null is OR 1);
    ``mde_or`` NaN and ``beyond_grid`` True where the largest planted effect falls short."""
    rows = []
    d = power[power["condition"] != "complete_null"]
    for (h, fam, kind), g in d.groupby(["hypothesis", "family", "kind"], sort=False):
        g = g.dropna(subset=[column]).sort_values("effect_or")
        x, y = np.log(g["effect_or"].to_numpy(float)), g[column].to_numpy(float)
        mde = math.nan
        for i in range(len(x)):
            if y[i] >= target:
                if i == 0:
                    mde = math.exp(x[0])
                else:
                    f = (target - y[i - 1]) / (y[i] - y[i - 1])
                    mde = math.exp(x[i - 1] + f * (x[i] - x[i - 1]))
                break
        rows.append({"hypothesis": h, "family": fam, "kind": kind, "mde_or": mde,
                     "beyond_grid": not np.isfinite(mde),
                     "largest_effect": float(g["effect_or"].max()) if len(g) else math.nan,
                     "power_at_largest": float(y[-1]) if len(y) else math.nan})  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the run


@dataclass
class PowerSettings:
    """Settings of a power run (the command line's options, same names)."""

    features: Path
    out: Path
    registry: Path
    lock: Path | None = None
    compare: list = field(default_factory=list)  # [(name, folder)] of older registries
    cohort: Path | None = None
    effects: list = field(default_factory=lambda: [1.25, 1.5, 2.0, 3.0])
    n_null: int = 1000
    n_power: int = 200
    alpha: float = 0.05
    seed: int = 0
    chunk: int = 50
    workers: int = 1
    engine: str = "process"


@dataclass
class PowerInputs:
    """The main analysis's patients (before its mRS-known step) and their generator truth."""

    rows: pd.DataFrame
    missing: np.ndarray
    covariates: pd.DataFrame
    params: object
    cohort: Path


@dataclass
class PowerResult:
    """Tables of a power run and what it conditioned on."""

    tables: dict[str, pd.DataFrame]
    n_analysed: int
    seconds: float
    seconds_per_replicate: float
    inputs: PowerInputs | None = None
    notes: list[str] = field(default_factory=list)


def _candidate_rows(features: pd.DataFrame, where: str):
    from .calibration import CalibrationError, candidate_rows

    try:
        return candidate_rows(features, where)
    except CalibrationError as e:
        raise PowerError(str(e)) from e


def power_inputs(features: Path, cohort: Path | None = None) -> PowerInputs:
    """Read the main analysis's ``features.csv`` and the synthetic cohort's truth once."""
    from .calibration import read_cohort_truth

    cohort_dir = Path(cohort) if cohort else _default_cohort()
    try:
        part, truth, params, _gen = read_cohort_truth(cohort_dir)
    except Exception as e:  # noqa: BLE001 -- the message names the files
        raise PowerError(str(e)) from e
    fpath = Path(features)
    if not fpath.is_file():
        raise PowerError(f"{fpath}: no patient table; run `python -m analyses.asymmetry_vs_mrs` "
                         "first (or pass --features)")  # fmt: skip
    table = pd.read_csv(fpath, dtype={"participant_id": str}, low_memory=False)
    rows, missing = _candidate_rows(table, str(fpath))
    covs = outcome_covariates(part, truth)
    lost = sorted(set(rows["participant_id"]) - set(covs.index))
    if lost:
        raise PowerError(f"{fpath}: patients {lost[:5]} are not in cohort {cohort_dir} (--cohort?)")
    return PowerInputs(rows, missing, covs.loc[rows["participant_id"].to_numpy()], params,
                       cohort_dir)  # fmt: skip


def _column_for(h) -> str:
    return f"{h.model}__{h.feature}__cam"


def fixed_specs(inp: PowerInputs, reg: Registry, compare=(), outcome: bool = True):
    """The fits whose maps do not change between replicates: the registry's tests with a
    column in the table (primary and sensitivity; the outcome model's only with
    ``outcome``, i.e. on the shipped head's maps), the oracle, the image statistics and
    each ``(name, folder)`` of ``compare`` (families prefixed ``<name>:``). Returns the
    specs and the registry's families among them."""
    rows = inp.rows
    fixed = [h for h in reg.hypotheses.values() if _column_for(h) in rows.columns
             and (outcome or h.model != "outcome")]  # fmt: skip
    fams = sorted({h.family for h in fixed})
    specs = prepare_fits(rows, reg, _column_for, truth=inp.covariates, families=fams,
                         sensitivity=True)  # fmt: skip
    specs += image_specs(rows, IMAGE_STATISTICS,
                         list(next(iter(reg.hypotheses.values())).covariates))  # fmt: skip
    for name, folder in compare:
        old = Registry.load(folder)
        ofams = sorted({h.family for h in old.hypotheses.values()
                        if _column_for(h) in rows.columns})  # fmt: skip
        for s in prepare_fits(rows, old, _column_for, families=ofams):
            specs.append(FitSpec(f"{name}:{s.hypothesis}", f"{name}:{s.family}", s.terms,
                                 s.tested, s.X, s.rows))  # fmt: skip
    return specs, fams


def run_power(
    settings: PowerSettings,
    say: Callable[[str], None] = lambda m: None,
    map_sets: MapSets | None = None,
) -> PowerResult:
    """Run (or resume) the power study; see the module docstring.

    ``settings.registry`` is the registry folder under test (loaded, not lock-checked: the
    run reads no analysis outcome, only redraws); ``settings.compare`` older versions whose
    tests are refitted on the same replicates (their families are prefixed ``<name>:``).
    """
    started = time.perf_counter()
    try:
        check_engine(settings.engine)
    except ValueError as e:
        raise PowerError(str(e)) from e
    inp = power_inputs(settings.features, settings.cohort)
    rows, missing, covs, params = inp.rows, inp.missing, inp.covariates, inp.params
    reg = Registry.load(settings.registry)
    specs, fams = fixed_specs(inp, reg, settings.compare, outcome=map_sets is None)
    primary = list(next(iter(reg.hypotheses.values())).covariates)
    n_an = int((~missing).sum())
    say(f"{len(rows)} patients ({n_an} with an mRS, as the main analysis); {len(specs)} fixed "
        f"fits per replicate (registered {fams}, oracle, image statistics"
        f"{', compared: ' + ', '.join(n for n, _ in settings.compare) if settings.compare else ''})")  # fmt: skip

    n_stored = len(list((Path(settings.out) / "replicates").rglob("*.parquet")))
    conds = conditions(settings.effects)
    k_sets = map_sets.per_condition if map_sets is not None else 1
    out = Path(settings.out)
    parts = []
    per_rep = []
    set_pcs = []
    known = ~missing
    swelling = covs["swelling"].to_numpy(float)
    numeric_primary = [c for c in primary if not c.startswith("C(")]
    for cond in conds:
        n_total = settings.n_null if cond.role == "type_I" else settings.n_power
        n_each = int(math.ceil(n_total / k_sets))
        for k in range(k_sets):
            extra = []
            if map_sets is not None:
                mf = map_sets.features(cond, k)
                tab = rows[["participant_id", *primary]].merge(mf, on="participant_id",
                                                                how="left")  # fmt: skip
                for name, (col, fam) in map_sets.hypotheses.items():
                    extra += image_specs(tab, {name: col}, primary, family=fam, prefix="map:")
                # Does this map set's head, trained on development outcomes carrying the
                # condition's effect, measure the analysis patients' true swelling?
                set_cols = [c for c, _ in map_sets.hypotheses.values()]
                set_cols += [c for c in mf.columns if c == "outcome_eta"]
                pc_k = partial_correlations(tab[known], list(dict.fromkeys(set_cols)),
                                            swelling[known], numeric_primary)  # fmt: skip
                set_pcs.append(pc_k.assign(condition=cond.name, effect_or=_effect_of(cond.name),
                                           map_set=k))  # fmt: skip
            name = cond.name if k_sets == 1 else f"{cond.name}.m{k}"
            setting = Setting(name, cond.mode, cond.role, cond.planted_or_per_sd)
            config = CalibrationConfig(n_replicates=n_each, alpha=settings.alpha,
                                       seed=settings.seed, chunk=settings.chunk,
                                       workers=settings.workers, settings=(setting,))  # fmt: skip
            t = time.perf_counter()
            reps = run_replicates(out / "replicates", covs, specs + extra, config, missing,
                                  params, settings.engine, say)  # fmt: skip
            per_rep.append((time.perf_counter() - t) / max(n_each, 1))
            reps = reps.assign(condition=cond.name, map_set=k)
            parts.append(reps)
    reps = pd.concat(parts, ignore_index=True)
    if len(list((Path(settings.out) / "replicates").rglob("*.parquet"))) == n_stored:
        per_rep = []  # every chunk was read from an earlier run: no time to report
    power = power_table(reps, settings.alpha)
    type1 = type_one_table(power)
    mde = minimum_detectable_effect(power)
    cols = [_column_for(h) for h in reg.hypotheses.values() if h.family in fams]
    cols += [c for c in IMAGE_STATISTICS if c in rows]
    pc = partial_correlations(rows[known], cols, swelling[known], numeric_primary)
    tables = {"power": power, "type_I": type1, "mde": mde, "partial_correlations": pc}
    if set_pcs:
        tables["map_set_partial_correlations"] = map_set_correlation_summary(
            pd.concat(set_pcs, ignore_index=True)
        )
    return PowerResult(tables, n_an, time.perf_counter() - started,
                       float(np.median(per_rep)) if per_rep else math.nan, inp)  # fmt: skip


def shipped_table(power: pd.DataFrame, registry_version: str, registry=None) -> pd.DataFrame:
    """The power table shipped as ``analyses/power/<registry-version>.csv`` (primary
    registered tests, every condition): hypothesis, effect_or, power, mc_low, mc_high,
    n_replicates, plus the condition and the BH-q power. With ``registry``, a registered
    outcome-model hypothesis takes the rows of its map-set candidate (its layer and method),
    under its own id."""
    power = power.copy()
    if registry is not None:
        from .outcome_maps import OUTCOME_FEATURES

        for h in registry.hypotheses.values():
            if h.model == "outcome" and h.feature in OUTCOME_FEATURES:
                i = OUTCOME_FEATURES.index(h.feature) + 1
                src = f"map:{candidate_name(i, h.method, h.layer)}"
                sel = power["hypothesis"] == src
                power.loc[sel, ["hypothesis", "kind", "family"]] = [h.id, "registered", h.family]
    p = power[(power["kind"] == "registered") & (power["analysis"] == "primary")]
    p = p[~p["family"].str.contains(":")]  # older registries compared on the same replicates
    out = p[["hypothesis", "condition", "effect_or", "power", "mc_low", "mc_high", "power_q",
             "n_replicates"]].copy()  # fmt: skip
    out.insert(0, "registry_version", registry_version)
    return out.reset_index(drop=True)


def write_shipped(power: pd.DataFrame, registry_version: str, folder: Path, registry=None) -> Path:
    """Write :func:`shipped_table` atomically to ``folder/<registry-version>.csv``."""
    path = Path(folder) / f"{registry_version}.csv"
    write_table_atomic(path, shipped_table(power, registry_version, registry))
    return path


# --------------------------------------------------------------------------- the ladder

#: Published DWI cohorts, mRS 0-2 vs 3-6 at 3 months (issue 17): what real data allow.
PUBLISHED_LADDER = (
    ("lesion volume alone", 0.68, 449, "AJNR Am J Neuroradiol 2025;46(12):2521"),
    ("clinical features", 0.76, 682, "J Neuroradiol 2025;52(6):101391 (doi 10.1016/j.neurad.2025.101391)"),
    ("clinical + deep DWI features", 0.925, 682, "J Neuroradiol 2025;52(6):101391 (doi 10.1016/j.neurad.2025.101391)"),
)  # fmt: skip


def effect_ladder(covariates: pd.DataFrame, effects: Sequence[float], params=None,
                  n_redraws: int = 200, seed: int = 0, missing=None) -> pd.DataFrame:  # fmt: skip
    """What each planted effect means in AUC (mRS 3-6 vs 0-2) on these patients.

    Per condition, outcomes are redrawn ``n_redraws`` times; the AUC of the generator's true
    linear predictor with and without the swelling term is averaged. ``swelling_auc_gain``
    is what a perfect measurement of swelling adds to everything else the generator knows:
    compare it with the published gain of deep DWI features over clinical ones (+0.165)."""
    from sklearn.metrics import roc_auc_score

    from hypo.cohort.synthetic import SynthParams, clinical
    from hypo.stats.calibration import redraw_mrs

    from .._util import rng_for

    p0 = params if params is not None else SynthParams()
    keep = np.ones(len(covariates), bool) if missing is None else ~np.asarray(missing, bool)
    sw = np.asarray(covariates["swelling"], float)
    rows = []
    for cond in conditions(effects)[1:]:
        x = cond.planted_or_per_sd
        p = p0 if x is None else dataclasses.replace(p0, or_swelling_per_sd=float(x))
        eta = clinical.outcome_linear_predictor(covariates, p, cond.mode)
        gamma = math.log(x) if x else 0.0
        with_sw, without = [], []
        for r in range(n_redraws):
            y = redraw_mrs(covariates, cond.mode, rng_for(seed, "ladder", cond.name, r), p0, x)
            poor = (y[keep] >= 3).astype(int)
            if poor.min() == poor.max():
                continue
            with_sw.append(roc_auc_score(poor, (eta + gamma * sw)[keep]))
            without.append(roc_auc_score(poor, eta[keep]))
        rows.append({"condition": cond.name, "effect_or": _effect_of(cond.name),
                     "true_model_auc": float(np.mean(with_sw)),
                     "without_swelling_auc": float(np.mean(without)),
                     "swelling_auc_gain": float(np.mean(with_sw) - np.mean(without)),
                     "n_redraws": len(with_sw)})  # fmt: skip
    return pd.DataFrame(rows)


def cohort_ladder(evaluation_csv: Path | None) -> pd.DataFrame:
    """The default cohort's predictability beside published cohorts: the shipped outcome
    model's out-of-fold evaluation (``models/outcome-mil-128/evaluation.csv``, development
    cohort, cross-fitted) and :data:`PUBLISHED_LADDER`."""
    rows = []
    if evaluation_csv is not None and Path(evaluation_csv).is_file():
        ev = pd.read_csv(evaluation_csv)
        names = {"lesion volume PO": "lesion volume alone", "clinical PO": "clinical features",
                 "image model": "image model (frozen CNN embeddings)",
                 "image + clinical fusion": "clinical + image model",
                 "true model (generator)": "the generator's true model"}  # fmt: skip
        for _, r in ev[ev["row"].isin(names)].iterrows():
            rows.append({"cohort": f"hypo default (synthetic development cohort, n = {int(r['n'])}, "
                                   "out-of-fold)", "predictors": names[r["row"]],
                         "auc": float(r["auc"]), "auc_low": float(r["auc_low"]),
                         "auc_high": float(r["auc_high"]), "n": int(r["n"]),
                         "source": str(evaluation_csv)})  # fmt: skip
    for what, auc, n, src in PUBLISHED_LADDER:
        rows.append({"cohort": "published DWI cohort", "predictors": what, "auc": auc,
                     "auc_low": np.nan, "auc_high": np.nan, "n": n, "source": src})  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- report


def figures(out: Path, power: pd.DataFrame, alpha: float, families=None) -> list:
    """Power curves, one panel per family of the registry under test (``families``: only
    these, e.g. the registered outcome-map candidate), tests labelled H1-H4, with the oracle
    and the image statistics as dashed references in every panel."""
    import re

    from plotnine import (
        aes,
        facet_wrap,
        geom_errorbar,
        geom_hline,
        geom_line,
        geom_point,
        ggplot,
        labs,
        scale_linetype_manual,
        scale_x_log10,
        theme,
        theme_bw,  # fmt: skip
    )

    from hypo.report.writer import Figure

    fdir = Path(out) / "figures"
    fdir.mkdir(parents=True, exist_ok=True)
    d = power[(power["condition"] != "complete_null") & (power["analysis"] == "primary")]
    reg = d[d["kind"].isin(["registered", "map set"]) & ~d["family"].str.contains(":")].copy()
    if families is not None:
        reg = reg[reg["family"].isin(families) | (reg["kind"] == "registered")]
    if reg.empty:
        return []
    ref = d[d["kind"].isin(["truth", "image statistic"])]
    facets = sorted(reg["family"].unique())
    refs = pd.concat([ref.assign(family=f) for f in facets], ignore_index=True)
    reg["test"] = [re.sub(r"^map:", "", h).split("[")[0].split("_")[0] for h in reg["hypothesis"]]
    refs["test"] = ["oracle (truth)" if h == "truth" else h.replace("image:", "image: ")
                    for h in refs["hypothesis"]]  # fmt: skip
    reg["line"], refs["line"] = "map feature", "reference"
    both = pd.concat([reg, refs], ignore_index=True)
    ncol = min(3, len(facets))
    nrow = (len(facets) + ncol - 1) // ncol
    g = (ggplot(both, aes("effect_or", "power", colour="test", linetype="line"))
         + geom_line() + geom_point(size=1.2)
         + geom_errorbar(aes(ymin="mc_low", ymax="mc_high"), width=0.02)
         + geom_hline(yintercept=0.8, linetype="dashed", colour="grey")
         + geom_hline(yintercept=alpha, linetype="dotted", colour="grey")
         + scale_x_log10(breaks=sorted(both["effect_or"].unique()))
         + scale_linetype_manual(values={"map feature": "solid", "reference": "dashed"})
         + facet_wrap("~family", ncol=ncol)
         + labs(x="planted OR per SD of swelling (1 = conditional null)",
                y=f"power (p < {alpha})", colour="", linetype="",
                title="Power of each test against the planted swelling effect")
         + theme_bw() + theme(figure_size=(4 * ncol + 1, 3.2 * nrow + 1.2),
                              legend_position="bottom"))  # fmt: skip
    g.save(fdir / "power_curves.png", dpi=100, verbose=False)
    return [Figure("figures/power_curves.png",
                   "Power (share of replicates with p < alpha; Wilson 95 % Monte-Carlo CIs) of "
                   "every primary registered test (H1 asymmetry, H2 ventricles, H3 cortical "
                   "edge, H4 lesion overlap) against the planted OR per SD of swelling, one "
                   "panel per map family, with the oracle (the generator's own covariates) and "
                   "the image signs of swelling as dashed references in every panel. Grey "
                   "dashed: 0.8; dotted: alpha.")]  # fmt: skip


def wide_power(power: pd.DataFrame) -> pd.DataFrame:
    """Primary tests x conditions, ``power [mc_low, mc_high]`` as text (report table)."""
    d = power[power["analysis"] == "primary"].copy()
    d["cell"] = [f"{p:.3f} [{lo:.2f}, {hi:.2f}]" for p, lo, hi in
                 zip(d["power"], d["mc_low"], d["mc_high"])]  # fmt: skip
    order = list(dict.fromkeys(d.sort_values("effect_or")["condition"]))
    w = d.pivot_table(index=["kind", "family", "hypothesis"], columns="condition", values="cell",
                      aggfunc="first")[order]  # fmt: skip
    w.columns.name = None  # else the report shows an empty "condition" column
    return w.reset_index()


def _fmt(x, d=3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def closing_lines(tables: dict, target: str | None, largest: float) -> list[str]:
    """The run's verdicts in sentences: target power, type-I targets, the ladder."""
    power, type1, mde = tables["power"], tables["type_I"], tables["mde"]
    lines = []
    at = power[(power["effect_or"] == largest) & (power["analysis"] == "primary")]
    truth = at[at["kind"] == "truth"]
    if len(truth):
        lines.append(f"Oracle (generator's covariates) power at OR {largest:g}: "
                     f"{_fmt(truth['power'].iloc[0])} (the ceiling).")  # fmt: skip
    for _, r in at[at["kind"] == "image statistic"].iterrows():
        lines.append(f"Image statistic {r['hypothesis'][6:]}: power {_fmt(r['power'])} at OR "
                     f"{largest:g} [{_fmt(r['mc_low'], 2)}, {_fmt(r['mc_high'], 2)}].")  # fmt: skip
    reg = at[at["kind"].isin(["registered", "map set"]) & ~at["family"].str.contains(":")]
    if len(reg):
        best = reg.sort_values("power", ascending=False).iloc[0]
        lines.append(f"Best map test at OR {largest:g}: {best['hypothesis']} power "
                     f"{_fmt(best['power'])} (BH q < alpha: {_fmt(best['power_q'])}); "
                     f"range over {len(reg)} map tests {_fmt(reg['power'].min())}-"
                     f"{_fmt(reg['power'].max())}.")  # fmt: skip
    if target is not None:
        t = at[at["hypothesis"].isin([target, f"map:{target}"])]
        if len(t):
            r = t.iloc[0]
            ok = r["power_q"] >= MDE_POWER and r["n_replicates"] >= 100
            lines.append(f"Target {target} (named beforehand): power at BH q < alpha "
                         f"{_fmt(r['power_q'])} at OR {largest:g} ({int(r['n_replicates'])} "
                         f"replicates): {'met' if ok else 'NOT met'} (target >= {MDE_POWER}).")  # fmt: skip
        else:
            lines.append(f"Target {target} (named beforehand): not in this run.")
    # The registered tests: the CNN families and, in a run with map sets, the registered
    # candidate of the outcome model's family (the target's).
    fams = set()
    if target is not None and "[" in target:
        fams.add(f"outcome_maps[{target.split('[', 1)[1]}")
    prim = type1[(type1["analysis"] == "primary")
                 & ((type1["kind"] == "registered") | type1["family"].isin(fams))]  # fmt: skip
    cur = prim[~prim["family"].str.contains(":")]
    if len(cur):
        n_ok = int(cur["meets_target"].sum())
        worst = cur.sort_values("type_I_error").iloc[-1]
        lines.append(f"Type-I error, primary tests of the registry under test: {n_ok} of "
                     f"{len(cur)} (test x null) meet <= {TYPE_I_MAX} with MC upper bound <= "
                     f"{TYPE_I_UPPER_MAX}; worst {worst['hypothesis']} {_fmt(worst['type_I_error'])} "
                     f"[{_fmt(worst['mc_low'])}, {_fmt(worst['mc_high'])}] under "
                     f"{worst['condition']}.")  # fmt: skip
        means = cur.groupby("condition")["type_I_error"].mean()
        lines.append("Mean type-I error of those tests: " + ", ".join(
            f"{c} {_fmt(v, 4)}" for c, v in means.items()) + " (nominal 0.05).")  # fmt: skip
    old = prim[prim["family"].str.contains(":")]
    if len(old):
        lines.append(f"Same replicates, older registry: {int(old['meets_target'].sum())} of "
                     f"{len(old)} meet the target; worst {_fmt(old['type_I_error'].max())}.")  # fmt: skip
    m = mde[(mde["kind"] == "registered") & ~mde["family"].str.contains(":")
            & ~mde["hypothesis"].str.endswith("+sensitivity")]  # fmt: skip
    if len(m):
        fin = m[~m["beyond_grid"]]
        lines.append(f"Minimum detectable effect (power {MDE_POWER}) of the default analysis: "
                     + (", ".join(f"{h} OR {v:.2f}" for h, v in zip(fin["hypothesis"],
                                                                      fin["mde_or"]))
                        if len(fin) else f"beyond the grid (> OR {largest:g}) for every map test")
                     + ".")  # fmt: skip
    return lines


def report_sections(res: PowerResult, settings: PowerSettings, target: str | None,
                    out: Path) -> list:  # fmt: skip
    """Report sections: verdicts, curves, tables, the ladder and the instrument's limits."""
    from hypo.report.writer import Section, Table

    t = res.tables
    largest = max(settings.effects) if settings.effects else 1.0
    secs = [Section("Verdicts", [*closing_lines(t, target, largest)])]
    fams = None
    lc = t.get("layer_choice")
    if lc is not None and len(lc) and "registered" in lc and lc["registered"].any():
        fams = [f"outcome_maps[{c}]" for c in lc.loc[lc["registered"], "candidate"]]
    secs.append(Section("Power curves", figures(out, t["power"], settings.alpha, fams)))
    secs.append(Section("Power per test and condition", [
        Table(wide_power(t["power"]), "Primary tests: power (share of replicates with p < "
              "alpha) [Wilson 95 % Monte-Carlo CI] per condition; under the two nulls this is "
              "the type-I error. [truth]: oracle fit on the generator's covariates; "
              "image:<statistic>: a sign of swelling measured from the scan."),
        Table(t["power"], "Every test (primary and sensitivity; older registries prefixed), "
              "with the rate of BH q < alpha within the family (power_q).", folded=True)]))  # fmt: skip
    secs.append(Section("Type-I error under both nulls", [
        Table(t["type_I"], f"Target (issue 17): every primary test <= {TYPE_I_MAX} with its "
              f"Monte-Carlo upper bound <= {TYPE_I_UPPER_MAX}; meets_target per row.")]))  # fmt: skip
    secs.append(Section("Minimum detectable effect", [
        Table(t["mde"], f"Smallest OR per SD of swelling with power >= {MDE_POWER} "
              "(interpolated on log OR; the conditional null is OR 1).")]))  # fmt: skip
    secs.append(Section("Do the features measure swelling?", [
        Table(t["partial_correlations"], "Spearman partial correlation of each feature with "
              "the generator's true swelling, given the primary covariates (analysed "
              "patients): a map feature that does not correlate cannot carry the effect."),
        *([Table(t["map_set_partial_correlations"], "The same per map set of the outcome "
                 "model (head refitted on development outcomes redrawn under each condition): "
                 "the partial correlation of each map feature and of the head's linear "
                 "predictor (outcome_eta) with the analysis patients' true swelling, per "
                 "map set and their mean. A head that learned swelling from the development "
                 "outcomes would show it rising with the planted OR.")]
          if "map_set_partial_correlations" in t else [])]))  # fmt: skip
    if "ladder" in t:
        secs.append(Section("Is the default cohort as predictable as real ones?", [
            Table(t["ladder"], "AUC of mRS 3-6 vs 0-2: the shipped outcome model's "
                  "out-of-fold evaluation on the synthetic development cohort beside published "
                  "DWI cohorts (sources given)."),
            Table(t["effect_ladder"], "What the planted effects mean in AUC on the analysed "
                  "patients: the generator's true model with and without swelling (mean over "
                  "outcome redraws). Deep DWI features added +0.165 AUC to clinical ones in "
                  "the published cohort (0.76 -> 0.925).")]))  # fmt: skip
    if "encoder_information" in t and len(t["encoder_information"]):
        secs.append(Section("Can the outcome model see swelling at all?", [
            Table(t["encoder_information"], "Out-of-fold ridge prediction on the development "
                  "patients from what the ordinal head is fitted on (the frozen encoder's "
                  "pooled slice embeddings and the lesion extent): the true swelling after "
                  "the primary covariates are regressed out, and as a positive control of "
                  "the check the true infarct volume. A head refitted on any outcome can "
                  "use only what this design carries.")]))  # fmt: skip
    if "layer_choice" in t and len(t["layer_choice"]):
        secs.append(Section("Layer and method of the outcome model's maps", [
            Table(t["layer_choice"], "Candidates compared on the same replicates (positive "
                  "controls only): the target feature's power at the largest effect, the "
                  "family's mean power and the largest type-I error under both nulls; the "
                  "chosen candidate is registered in registry v2 (analyses/power/PLAN.md).")]))  # fmt: skip
    secs.append(Section("Limits of the instrument", [
        "A replicate keeps the images and every CNN's maps and redraws outcomes; power here is "
        "the power to detect the planted swelling effect *through each registered feature*. A "
        "map feature detects it only as far as the feature measures swelling (previous "
        "section); the oracle row shows what a perfect measurement would detect and the image "
        "statistics what the pixels carry. A null result of the main analysis is evidence of "
        "absence only for effects at or above the test's minimum detectable effect.",
        "Map sets of the outcome model condition on the development images, the frozen "
        "encoder's embeddings, the pooling and the penalty: only the ordinal head learns "
        "from each redraw of the development outcomes."]))  # fmt: skip
    return secs


# --------------------------------------------------------------------------- the command

#: The target of issue 17, named in ``analyses/power/PLAN.md`` before any power run.
TARGET_HYPOTHESIS = "H1_outcome"
#: Where the shipped power tables live (one per registry version).
POWER_TABLES = Path(__file__).resolve().parents[2] / "analyses" / "power"
QUICK = {"n_null": 40, "n_power": 20, "effects": [3.0]}


@dataclass
class PowerStudy:
    """What :func:`run_power_study` wrote and says."""

    result: PowerResult
    paths: dict
    closing: list[str]


def run_power_study(args, say: Callable[[str], None] = lambda m: None,
                    map_sets: MapSets | None = None) -> PowerStudy:  # fmt: skip
    """The command line's run: settings from ``args`` (see ``analyses/power.py``), the
    replicates, the ladder, the report and, when asked, the shipped power table."""
    from .config import REGISTRY_VERSION, registry_dir
    from .experiments.frame import write_experiment

    version = args.registry or REGISTRY_VERSION
    folder = registry_dir(version) / "hypotheses"
    if not folder.is_dir():
        raise PowerError(f"registry version {version!r}: no folder {folder}")
    compare = [(v, registry_dir(v) / "hypotheses") for v in (args.compare or []) if v != version]
    for v, f in compare:
        if not f.is_dir():
            raise PowerError(f"--compare {v}: no registry folder {f}")
    n_null, n_power, effects = args.n_null, args.n_power, list(args.effects)
    if args.quick:
        n_null, n_power = min(n_null, QUICK["n_null"]), min(n_power, QUICK["n_power"])
        effects = QUICK["effects"]
    settings = PowerSettings(features=Path(args.features), out=Path(args.out), registry=folder,
                             compare=compare, cohort=args.cohort, effects=effects,
                             n_null=n_null, n_power=n_power, seed=args.seed, chunk=args.chunk,
                             workers=args.workers, engine=args.engine)  # fmt: skip
    if map_sets is None and getattr(args, "map_sets", 0):
        map_sets = outcome_map_sets(settings, int(args.map_sets), say)
    res = run_power(settings, say, map_sets)

    inp = res.inputs
    res.tables["effect_ladder"] = effect_ladder(inp.covariates, effects, inp.params,
                                                n_redraws=50 if args.quick else 200,
                                                seed=args.seed, missing=inp.missing)  # fmt: skip
    ev = Path(__file__).resolve().parents[2] / "models" / "outcome-mil-128" / "evaluation.csv"
    res.tables["ladder"] = cohort_ladder(ev if ev.is_file() else None)
    target = TARGET_HYPOTHESIS
    if map_sets is not None:
        from .outcome_maps import encoder_swelling_information, map_inputs

        try:
            res.tables["encoder_information"] = encoder_swelling_information(
                map_inputs(analysis=settings.cohort), seed=args.seed
            )
        except (ValueError, FileNotFoundError) as e:  # e.g. a cohort without truth
            say(f"encoder check not run: {e}")
        res.tables["layer_choice"] = layer_choice(res.tables["power"], max(effects))
        reg = Registry.load(folder)
        h = reg.hypotheses.get(TARGET_HYPOTHESIS)
        if h is not None:  # registered: judge the target on its own layer and method
            target = candidate_name(1, h.method, h.layer)
            # The choice is made (registered); this run only shows the candidates again.
            lc = res.tables["layer_choice"]
            lc["registered"] = lc["candidate"] == f"{h.method}@{h.layer}"
            res.tables["layer_choice"] = lc.rename(columns={"chosen": "rule_on_this_run"})
    closing = closing_lines(res.tables, target, max(effects))
    enc = res.tables.get("encoder_information")
    if enc is not None and len(enc):
        closing.append("The outcome head's inputs (frozen encoder embeddings + lesion extent) "
                       "predict, out of fold on the development patients: "
                       + "; ".join(f"{r.target} from {r.predictors.split(' (')[0]}: r "
                                   f"{_fmt(r.cv_r)}" for r in enc.itertuples()) + ".")  # fmt: skip
    lc = res.tables.get("layer_choice")
    if lc is not None and len(lc):
        for r in lc.itertuples():
            closing.append(f"candidate {r.candidate}: H1 power {_fmt(r.h1_power)} (q: "
                           f"{_fmt(r.h1_power_q)}), family mean {_fmt(r.family_mean_power)}, "
                           f"max type-I {_fmt(r.max_type_I)}"
                           + (" <- chosen" if getattr(r, "chosen", False) else "")
                           + (" <- registered" if getattr(r, "registered", False) else ""))  # fmt: skip
    if np.isfinite(res.seconds_per_replicate):
        closing.append(f"{res.n_analysed} analysed patients; {res.seconds:.0f} s in all, "
                       f"{res.seconds_per_replicate:.3f} s per outcome redraw (median over "
                       "conditions and map sets, all fits of a redraw).")  # fmt: skip
    else:
        closing.append(f"{res.n_analysed} analysed patients; every replicate read from an "
                       "earlier run's chunks (a resumed run): its timing is in that run's log.")  # fmt: skip
    out = Path(args.out)
    sections = report_sections(res, settings, target, out)
    intro = [
        f"Registry {version} under test"
        + (f", compared on the same replicates with {', '.join(v for v, _ in compare)}" if compare else "")
        + f". Conditions: complete null and conditional null ({n_null} outcome redraws each), "
        f"planted OR per SD of swelling {', '.join(f'{e:g}' for e in effects)} ({n_power} each).",
        f"Features: {settings.features}; cohort: {res.inputs.cohort}.",
        *(["Quick run (--quick): few replicates; not for inference."] if args.quick else []),
        *(["Outcome model's maps: " + map_sets.describe] if map_sets is not None else
          ["The outcome model's maps are not part of this run (--map-sets 0)."]),
    ]  # fmt: skip
    paths = write_experiment(out, "power", res.tables, sections,
                             config={k: str(v) for k, v in vars(args).items()}, intro=intro,
                             extra_provenance={"registry_version": version,
                                               "target_hypothesis": target})  # fmt: skip
    if getattr(args, "write_power_table", False):
        if args.quick:
            raise PowerError("--write-power-table needs a full run (not --quick)")
        paths["shipped"] = write_shipped(res.tables["power"], version, POWER_TABLES,
                                         Registry.load(folder))  # fmt: skip
        closing.append(f"power table -> {paths['shipped']}")
    return PowerStudy(res, paths, closing)


def candidate_name(feature_index: int, method: str, layer: str) -> str:
    """Test name of one outcome-model map feature at one method and layer."""
    return f"H{feature_index}_outcome[{method}@{layer}]"


def outcome_map_sets(settings: PowerSettings, per_condition: int, say=lambda m: None,
                     layers=None, methods=None) -> MapSets:  # fmt: skip
    """The outcome model's maps as a nested design (:class:`MapSets`): per condition and map
    set ``k``, the development outcomes are redrawn under the condition (seed: ``(seed,
    "dev_outcomes", condition, k)``), the ordinal head is refitted on them
    (:func:`hypo.study.outcome_maps.outcome_map_features`: encoder, pooling and penalty
    fixed) and the analysis cohort's maps and features computed at every candidate layer
    and method. Every candidate's four features form one BH family."""
    from hypo.cam.fusion import FUSION_LAYER
    from hypo.stats.calibration import redraw_mrs

    from .._util import rng_for
    from .outcome_maps import (
        CANDIDATE_METHODS,
        DEFAULT_LAYERS,
        OUTCOME_FEATURES,
        candidates,
        dev_outcome_covariates,  # fmt: skip
        fuses,
        map_column,
        outcome_map_features,
    )

    layers = tuple(layers or DEFAULT_LAYERS)
    methods = tuple(methods or CANDIDATE_METHODS)
    analysis = settings.cohort
    covs, params, _ = dev_outcome_covariates(analysis=analysis)

    def features(cond: Setting, k: int) -> pd.DataFrame:
        rng = rng_for(settings.seed, "dev_outcomes", cond.name, int(k))
        y = redraw_mrs(covs, cond.mode, rng, params, cond.planted_or_per_sd)
        t = time.perf_counter()
        f = outcome_map_features(y.astype(int), layers=layers, methods=methods,
                                 analysis=analysis)  # fmt: skip
        say(f"map set {cond.name} #{k}: head refitted, maps and features at {len(layers)} "
            f"layer(s) x {len(methods)} method(s) in {time.perf_counter() - t:.0f} s")  # fmt: skip
        return f

    hyps = {}
    for layer, m in candidates(layers, methods):
        for i, feat in enumerate(OUTCOME_FEATURES, 1):
            hyps[candidate_name(i, m, layer)] = (map_column(feat, m, layer),
                                                 f"outcome_maps[{m}@{layer}]")  # fmt: skip
    desc = (f"{per_condition} map set(s) per condition (development outcomes redrawn, head "
            f"refitted), layers {', '.join(layers)}, methods {', '.join(methods)}"
            + (f", and LayerCAM fused over the layers (layer {FUSION_LAYER!r})"
               if fuses(layers, methods) else "") + ".")  # fmt: skip
    return MapSets(features, hyps, per_condition, desc)


def layer_choice(power: pd.DataFrame, largest: float) -> pd.DataFrame:
    """Issue 17 item 4: per candidate (method @ layer) of the outcome model's maps, the
    target feature's (H1) power at the largest planted effect, the family's mean power
    there, and the largest type-I error of its four tests under both nulls. ``chosen``
    marks the candidate with the highest H1 power (ties: family mean) among those whose
    type-I errors are all <= :data:`TYPE_I_MAX` (analyses/power/PLAN.md); positive
    controls only, no analysis outcome."""
    d = power[power["kind"] == "map set"]
    if d.empty:
        return pd.DataFrame()
    rows = []
    for fam, g in d.groupby("family", sort=True):
        cand = fam[fam.index("[") + 1 : -1]
        at = g[g["effect_or"] == largest]
        nul = g[g["condition"].isin([c.name for c in CONDITIONS_NULL])]
        h1 = at[at["hypothesis"].str.startswith("map:H1_outcome[")]
        rows.append({"candidate": cand, "method": cand.split("@")[0],
                     "layer": cand.split("@")[1],
                     "h1_power": float(h1["power"].iloc[0]) if len(h1) else np.nan,
                     "h1_power_q": float(h1["power_q"].iloc[0]) if len(h1) else np.nan,
                     "family_mean_power": float(at["power"].mean()),
                     "max_type_I": float(nul["power"].max()),
                     "n_replicates_effect": int(at["n_replicates"].max()) if len(at) else 0})  # fmt: skip
    out = pd.DataFrame(rows)
    ok = out["max_type_I"] <= TYPE_I_MAX
    out["eligible"] = ok
    out["chosen"] = False
    if ok.any():
        best = out[ok].sort_values(["h1_power", "family_mean_power"], ascending=False).index[0]
        out.loc[best, "chosen"] = True
    return out


def _default_cohort() -> Path:
    from hypo.paths import default_cohort_dir

    return default_cohort_dir("analysis")


def read_shipped(registry_version: str, folder: Path | None = None) -> pd.DataFrame | None:
    """The shipped power table of a registry version, or None where there is none."""
    path = Path(folder or POWER_TABLES) / f"{registry_version}.csv"
    return pd.read_csv(path) if path.is_file() else None


def power_figures(table: pd.DataFrame | None, hypothesis: str) -> dict | None:
    """One registered test's power at the largest planted effect of the shipped table:
    ``power``, ``effect_or``, ``n_replicates`` and ``mde_or`` (the smallest smaller effect
    with power >= 0.8, else None); None without a table or a row."""
    if table is None:
        return None
    d = table[(table["hypothesis"] == hypothesis) & (table["effect_or"] > 1)]
    if d.empty:
        return None
    d = d.sort_values("effect_or")
    top = d.iloc[-1]
    hit = d[d["power"] >= MDE_POWER]
    mde = hit.iloc[0]["effect_or"] if len(hit) else None
    return {"power": float(top["power"]), "effect_or": float(top["effect_or"]),
            "n_replicates": int(top["n_replicates"]),
            "mde_or": float(mde) if mde is not None and mde < top["effect_or"] else None}  # fmt: skip


def power_condition(fig: dict) -> str:
    """``at OR Y per SD of swelling (N replicates)`` of :func:`power_figures`."""
    return f"at OR {fig['effect_or']:g} per SD of swelling ({fig['n_replicates']} replicates)"


def power_note(table: pd.DataFrame | None, hypothesis: str, alpha: float = 0.05) -> str:
    """ "a null here had power X at OR Y" for one registered test (the largest planted effect
    and the smallest with power >= 0.8), or "power unknown" without a table or a row."""
    if table is None:
        return "power unknown (no power table for this registry version)"
    fig = power_figures(table, hypothesis)
    if fig is None:
        return "power unknown (no row for this test)"
    s = f"a null here had power {fig['power']:.2f} {power_condition(fig)}"
    if fig["mde_or"] is not None:
        s += f"; >= {MDE_POWER} from OR {fig['mde_or']:g}"
    return s


# --------------------------------------------------------------------------- benchmark


def benchmark(features: Path, n_redraws: int = 50, fresh: int = 3, fresh_patients: int = 30,
              map_set: bool = True, seed: int = 0, say=lambda m: None) -> pd.DataFrame:  # fmt: skip
    """Seconds per replicate of each design, measured in one run (``analyses.benchmark_power``).

    * ``shortcut``: one outcome redraw with every fixed fit of the default table (v2 and v1
      registered tests, oracle, image statistics);
    * ``map set``: one refit of the outcome head on a redraw of the development outcomes,
      its maps and features at three layers x two methods (a fresh cache: nothing reused);
    * ``fresh cohort``: a new seeded synthetic cohort through the main study's functions
      (generation, slice store, CNN maps, anatomy, features, registered fits;
      :func:`hypo.study.calibration.full_replicate`), ``fresh`` times, also a smoke test.
    """
    import tempfile
    from types import SimpleNamespace

    from hypo.stats.calibration import redraw_mrs, run_replicate

    from .._util import rng_for
    from .calibration import full_replicate
    from .config import HYPOTHESES_DIR, LOCK_FILE, MRS_MODEL, STROKE_MODEL, registry_dir

    rows = []
    inp = power_inputs(features)
    covs, params, missing = inp.covariates, inp.params, inp.missing
    reg = Registry.load(HYPOTHESES_DIR)
    specs, _ = fixed_specs(inp, reg, [("v1", registry_dir("v1") / "hypotheses")])
    t = time.perf_counter()
    for r in range(n_redraws):
        y = redraw_mrs(covs, "default", rng_for(seed, "bench", r), params, 3.0, missing)
        run_replicate(y, specs, 0.05)
    sec = (time.perf_counter() - t) / n_redraws
    rows.append({"design": "shortcut (outcome redraw, fixed maps)", "seconds": sec,
                 "n": n_redraws, "fits": len(specs)})  # fmt: skip
    say(f"shortcut: {sec:.3f} s per redraw ({len(specs)} fits)")
    if map_set:
        from .outcome_maps import dev_outcome_covariates, outcome_map_features

        dcovs, dparams, _ = dev_outcome_covariates()
        y = redraw_mrs(dcovs, "default", rng_for(seed, "bench_dev"), dparams, 3.0)
        with tempfile.TemporaryDirectory() as tmp:
            outcome_map_features(y.astype(int), cache_root=tmp)  # inputs loaded, traced
            y2 = redraw_mrs(dcovs, "default", rng_for(seed, "bench_dev", 2), dparams, 3.0)
            t = time.perf_counter()
            outcome_map_features(y2.astype(int), cache_root=tmp)
            sec = time.perf_counter() - t
        rows.append({"design": "map set (head refitted, 3 layers x 2 methods)",
                     "seconds": sec, "n": 1, "fits": 0})  # fmt: skip
        say(f"map set: {sec:.1f} s")
    args = SimpleNamespace(seed=seed, full_patients=fresh_patients, workers=1,
                           stroke_model=STROKE_MODEL, mrs_model=MRS_MODEL,
                           hypotheses=HYPOTHESES_DIR, lock=LOCK_FILE)  # fmt: skip
    for i in range(fresh):
        t = time.perf_counter()
        res = full_replicate(1000 + i, "default", args, reg, say)
        sec = time.perf_counter() - t
        ok = res["p"].notna().sum()
        rows.append({"design": f"fresh cohort ({fresh_patients} patients, smoke test {i + 1})",
                     "seconds": sec, "n": 1, "fits": int(ok)})  # fmt: skip
        say(f"fresh cohort {i + 1}: {sec:.0f} s, {ok} fits with a p-value")
    return pd.DataFrame(rows)
