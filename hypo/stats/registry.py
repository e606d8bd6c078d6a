"""Pre-registered hypotheses: data files, a hash lock written before outcomes are read, and
one runner that tests a whole family and reports every test with BH q-values.

A hypothesis is one TOML (or JSON) file in a folder (the project uses
``analyses/registry/<version>/hypotheses/``) that fixes one primary choice for everything
that could fork::

    id = "H1"
    family = "asymmetry"
    model = "mrs"                  # CNN whose maps are used: "stroke" or "mrs"
    class = "mrs_3_6"              # class whose CAMs are used
    method = "gradcam"
    layer = "block5_conv3"
    aggregation = "mean_over_slices"
    feature = "asymmetry_index"    # column of the patient feature table
    feature_form = "raw"           # raw | log | log1p | zscore | per_10
    outcome_coding = "mrs"         # see hypo.stats.outcomes.CODINGS
    covariates = ["lesion_volume_ml", "C(side)"]
    sensitivity_covariates = ["age", "nihss_baseline"]
    population = "all"             # or a pandas query, e.g. "side == 'left'"
    two_sided = true
    expected_direction = "more asymmetric relevance -> worse mRS"
    ci = "wald"                    # optional: "profile" for profile-likelihood intervals

Workflow: write the files, :func:`lock` them (hashes of each file's canonical content),
*then* read outcomes and call :func:`test_hypotheses`, which refuses to run unless the
folder still matches the lock.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import tomllib

from .._util import stable_hash, write_json_atomic
from .multiplicity import bh_qvalues
from .outcomes import CODINGS, fit_outcome

__all__ = [
    "FEATURE_FORMS",
    "Hypothesis",
    "Registry",
    "RegistryLockError",
    "lock",
    "run_family",
    "test_hypotheses",
    "verify_amendment",
    "verify_lock",
]

FEATURE_FORMS = ("raw", "log", "log1p", "zscore", "per_10")
CI_METHODS = ("wald", "profile")
MODELS = ("stroke", "mrs", "outcome")
LOCK_VERSION = 1
#: Error prefix of a test the data cannot define (a missing optional covariate, a map source
#: without mass), as opposed to a failed fit.
NOT_APPLICABLE = "not applicable"


class RegistryLockError(ValueError):
    """The hypothesis folder no longer matches its lock (or there is no lock)."""


@dataclass(frozen=True)
class Hypothesis:
    """One pre-registered hypothesis (see the module docstring for the file format)."""

    id: str
    family: str
    model: str
    cam_class: str
    method: str
    layer: str
    aggregation: str
    feature: str
    feature_form: str
    outcome_coding: str
    covariates: tuple[str, ...]
    sensitivity_covariates: tuple[str, ...]
    population: str
    two_sided: bool
    expected_direction: str
    column: str | None = None  # feature-table column, when it differs from ``feature``
    description: str = ""
    ci: str = "wald"  # interval of the OR: "wald" or "profile" (profile likelihood)
    source: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> Hypothesis:
        d = dict(d)
        if "class" in d:
            if "cam_class" in d:
                raise ValueError(f"{source}: give 'class' or 'cam_class', not both")
            d["cam_class"] = d.pop("class")
        names = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; allowed: {sorted(names)}")
        required = [
            f.name for f in fields(cls) if f.name not in ("column", "description", "ci", "source")
        ]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: missing field(s) {missing}")
        for k in ("covariates", "sensitivity_covariates"):
            v = d[k]
            if not isinstance(v, list | tuple) or not all(isinstance(c, str) for c in v):
                raise ValueError(f"{source}: {k} must be a list of column names/terms, got {v!r}")
            d[k] = tuple(v)
        for k in required:
            if k not in ("covariates", "sensitivity_covariates", "two_sided") and (
                not isinstance(d[k], str) or not d[k].strip()
            ):
                raise ValueError(f"{source}: field {k!r} must be a non-empty string, got {d[k]!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", d["id"]):
            raise ValueError(f"{source}: id {d['id']!r} may use letters, digits, '_', '.', '-'")
        if d["model"] not in MODELS:
            raise ValueError(f"{source}: model {d['model']!r}: expected one of {MODELS}")
        if d["feature_form"] not in FEATURE_FORMS:
            raise ValueError(
                f"{source}: feature_form {d['feature_form']!r}: expected one of {FEATURE_FORMS}"
            )
        if d["outcome_coding"] not in CODINGS:
            raise ValueError(
                f"{source}: outcome_coding {d['outcome_coding']!r}: expected one of {list(CODINGS)}"
            )
        if d.get("ci", "wald") not in CI_METHODS:
            raise ValueError(f"{source}: ci {d['ci']!r}: expected one of {CI_METHODS}")
        if d["two_sided"] is not True:
            raise ValueError(
                f"{source}: two_sided must be true; one-sided tests are not supported "
                f"(state the expected direction in expected_direction instead)"
            )
        return cls(**d, source=source)

    def canonical(self) -> dict:
        """Content that the lock hashes (everything but where the file lives)."""
        d = asdict(self)
        d.pop("source")
        if d["ci"] == "wald":
            d.pop("ci")  # the default: files locked before the field existed keep their hash
        d["covariates"] = list(self.covariates)
        d["sensitivity_covariates"] = list(self.sensitivity_covariates)
        return d

    def content_hash(self) -> str:
        return stable_hash(self.canonical(), length=64)


def _read_file(path: Path) -> dict:
    try:
        if path.suffix == ".toml":
            with open(path, "rb") as f:
                return tomllib.load(f)
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot parse ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected one hypothesis as a table/object")
    return obj


@dataclass
class Registry:
    """The hypotheses of one folder, keyed by id."""

    folder: Path
    hypotheses: dict[str, Hypothesis]

    @classmethod
    def load(cls, folder: str | Path) -> Registry:
        """Read every ``*.toml`` and ``*.json`` file of ``folder`` (one hypothesis each)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"hypothesis folder {folder} does not exist")
        hyps: dict[str, Hypothesis] = {}
        files = sorted(p for p in folder.iterdir() if p.suffix in (".toml", ".json"))
        if not files:
            raise ValueError(f"hypothesis folder {folder} holds no .toml or .json files")
        for p in files:
            h = Hypothesis.from_dict(_read_file(p), source=str(p))
            if h.id in hyps:
                raise ValueError(f"hypothesis id {h.id!r} is used by {hyps[h.id].source} and {p}")
            hyps[h.id] = h
        return cls(folder=folder, hypotheses=hyps)

    def without_models(self, models) -> Registry:
        """The hypotheses whose maps come from another model than ``models`` (a view of
        the same folder: the lock still covers every file)."""
        drop = set(models)
        return Registry(self.folder, {i: h for i, h in self.hypotheses.items()
                                      if h.model not in drop})  # fmt: skip

    @property
    def families(self) -> list[str]:
        return sorted({h.family for h in self.hypotheses.values()})

    def family(self, name: str) -> list[Hypothesis]:
        out = [h for h in self.hypotheses.values() if h.family == name]
        if not out:
            raise ValueError(f"no hypotheses in family {name!r}; families: {self.families}")
        return sorted(out, key=lambda h: h.id)

    def hashes(self) -> dict[str, dict]:
        return {
            i: {"file": Path(h.source).name, "sha256": h.content_hash()}
            for i, h in sorted(self.hypotheses.items())
        }


def lock(
    folder: str | Path,
    lock_path: str | Path,
    overwrite: bool = False,
    amendment: str | Path | None = None,
) -> Path:
    """Freeze the registry: write the hash of every hypothesis to ``lock_path``.

    Call this *before* any outcome is read. An existing lock is never replaced unless
    ``overwrite=True`` (re-locking after seeing outcomes defeats pre-registration).
    ``amendment``: the ``amendment.json`` of an amended version; its content hash is locked
    with the hypotheses (:func:`verify_amendment` checks the chain).
    """
    lock_path = Path(lock_path)
    if lock_path.exists() and not overwrite:
        raise FileExistsError(
            f"{lock_path} already exists; a registry is locked once (pass overwrite=True only "
            f"if no outcome has been read since)"
        )
    reg = Registry.load(folder)
    hashes = reg.hashes()
    payload = {
        "version": LOCK_VERSION,
        "hypotheses": hashes,
        "registry_sha256": stable_hash(hashes, length=64),
        "locked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if amendment is not None:
        payload["amendment_sha256"] = stable_hash(_read_amendment(Path(amendment)), length=64)
    return write_json_atomic(lock_path, payload)


AMENDMENT_FIELDS = ("version", "amends", "amends_registry_sha256", "date", "reason", "changes")


def _read_amendment(path: Path) -> dict:
    if not path.is_file():
        raise RegistryLockError(f"{path}: no amendment record")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RegistryLockError(f"{path}: cannot parse ({e})") from e
    missing = [k for k in AMENDMENT_FIELDS if k not in d]
    if missing:
        raise RegistryLockError(f"{path}: missing field(s) {missing}; expected {AMENDMENT_FIELDS}")
    return d


def verify_amendment(version_dir: str | Path) -> dict:
    """Check an amended registry version and the chain to the version it amends.

    ``version_dir`` is ``analyses/registry/<version>`` with ``hypotheses/``, ``lock.json``
    and ``amendment.json`` (fields :data:`AMENDMENT_FIELDS`). Both versions must match
    their own locks, the amendment must name the amended lock's ``registry_sha256``, and
    the amended version's lock must hold the amendment's hash (so neither the record nor
    the hypotheses changed after locking). Returns the amendment record.
    """
    d = Path(version_dir)
    rec = _read_amendment(d / "amendment.json")
    new_lock = d / "lock.json"
    verify_lock(d / "hypotheses", new_lock)
    locked = json.loads(new_lock.read_text(encoding="utf-8"))
    if locked.get("amendment_sha256") != stable_hash(rec, length=64):
        raise RegistryLockError(f"{d / 'amendment.json'} changed after {new_lock} was written "
                                "(or the lock does not hold it)")  # fmt: skip
    old = d.parent / str(rec["amends"])
    verify_lock(old / "hypotheses", old / "lock.json")
    old_hash = json.loads((old / "lock.json").read_text(encoding="utf-8"))["registry_sha256"]
    if rec["amends_registry_sha256"] != old_hash:
        raise RegistryLockError(f"{d / 'amendment.json'} amends registry hash "
                                f"{rec['amends_registry_sha256'][:12]}..., but {old / 'lock.json'} "
                                f"holds {old_hash[:12]}...")  # fmt: skip
    return rec


def verify_lock(folder: str | Path, lock_path: str | Path) -> Registry:
    """Load the registry and check it against its lock.

    Raises
    ------
    RegistryLockError
        No lock, or hypotheses changed / added / removed since locking (each named).
    """
    lock_path = Path(lock_path)
    if not lock_path.exists():
        raise RegistryLockError(
            f"no lock file at {lock_path}: lock the registry (hypo.stats.registry.lock) before "
            f"reading outcomes"
        )
    locked = json.loads(lock_path.read_text(encoding="utf-8"))
    if locked.get("version") != LOCK_VERSION or "hypotheses" not in locked:
        raise RegistryLockError(f"{lock_path} is not a hypothesis lock (version {LOCK_VERSION})")
    reg = Registry.load(folder)
    now, then = reg.hashes(), locked["hypotheses"]
    changed = sorted(i for i in set(now) & set(then) if now[i]["sha256"] != then[i]["sha256"])
    added = sorted(set(now) - set(then))
    removed = sorted(set(then) - set(now))
    if changed or added or removed:
        parts = []
        if changed:
            parts.append("changed: " + ", ".join(f"{i} ({now[i]['file']})" for i in changed))
        if added:
            parts.append("added: " + ", ".join(f"{i} ({now[i]['file']})" for i in added))
        if removed:
            parts.append("removed: " + ", ".join(f"{i} ({then[i]['file']})" for i in removed))
        raise RegistryLockError(
            f"hypothesis registry {reg.folder} no longer matches its lock {lock_path} "
            f"(locked {locked.get('locked_at', '?')}); " + "; ".join(parts)
        )
    return reg


def _transform(values: pd.Series, form: str, where: str) -> pd.Series:
    v = pd.to_numeric(values, errors="coerce").astype(float)
    if form == "raw":
        return v
    if form in ("log", "log1p"):
        bad = v <= (0 if form == "log" else -1)
        if bad.any():
            raise ValueError(
                f"{where}: feature_form {form!r} needs values > {0 if form == 'log' else -1}"
            )
        return np.log(v) if form == "log" else np.log1p(v)
    if form == "zscore":
        return (v - v.mean()) / v.std(ddof=1)
    return v / 10.0  # per_10: OR per 10 units (e.g. per 10 mL, as MR CLEAN reports volume)


def _term_name(column: str) -> str:
    name = re.sub(r"\W", "_", column)
    return name if re.match(r"[A-Za-z_]", name) else f"f_{name}"


#: Columns of :func:`test_hypotheses`'s table, in order.
RESULT_COLUMNS = ("hypothesis", "family", "analysis", "model", "feature", "term", "estimate",
                  "se", "OR", "OR_low", "OR_high", "p", "q", "n", "direction", "coding",
                  "expected_direction", "ci_method", "fit_warnings", "error")  # fmt: skip
_FIT_FIELDS = ("estimate", "se", "OR", "OR_low", "OR_high", "p", "n", "direction", "ci_method",
               "fit_warnings")  # fmt: skip


def _registered_fit(features, h, col: str, analysis: str, outcome_col: str) -> dict:
    """One registered test's numbers (or its error: every failure stays in its row)."""
    try:
        df = features if h.population == "all" else features.query(h.population)
        term = _term_name(col)
        df = df.assign(**{term: _transform(df[col], h.feature_form, f"hypothesis {h.id}")})
        covs = list(h.covariates)
        if analysis == "sensitivity":
            lacking = [c for c in h.sensitivity_covariates if c not in df.columns]
            if lacking:
                return {"term": term, "error": f"{NOT_APPLICABLE}: the table has no column(s) "
                        f"{lacking} of the sensitivity model"}  # fmt: skip
            covs += list(h.sensitivity_covariates)
        rhs = " + ".join([term, *covs])
        table = fit_outcome(df, rhs, outcome_col, h.outcome_coding, ci=h.ci)
        fit_row = table.loc[table["term"] == term].iloc[0]
        return {"term": term, **{k: fit_row[k] for k in _FIT_FIELDS}}
    except Exception as e:  # noqa: BLE001 -- every failure is reported in its row
        error = f"{type(e).__name__}: {e}"
        warnings.warn(f"hypothesis {h.id} ({analysis}) failed: {error}", stacklevel=3)
        return {"term": _term_name(col), "error": error}


def test_hypotheses(
    features: pd.DataFrame,
    registry: Registry | str | Path,
    lock_path: str | Path,
    family: str | None = None,
    outcome_col: str = "mrs_3months",
    sensitivity: bool = False,
    column_for=None,
    ids=None,
) -> pd.DataFrame:
    """Fit every hypothesis of a family (or of all families) and report every test.

    Parameters
    ----------
    features : DataFrame
        One row per patient: the outcome, the features and the covariates.
    registry : Registry or folder
        The hypotheses; re-read from its folder and checked against ``lock_path``.
    lock_path : path
        Lock written by :func:`lock` before outcomes were read. No lock, no results.
    family : str, optional
        One family; default all (q-values are always computed within a family).
    outcome_col : str
        mRS column (0-6).
    sensitivity : bool
        Also fit each hypothesis with its sensitivity covariates added (rows with
        ``analysis = "sensitivity"``; their q-values form their own family).
    column_for : callable, optional
        ``column_for(hypothesis) -> column name`` of the feature; default
        ``hypothesis.column`` or else ``hypothesis.feature``.
    ids : collection of str, optional
        Test only these hypotheses of the (whole, lock-checked) registry, e.g. when a map
        source is not available; the q-values are then computed among them.

    Returns
    -------
    DataFrame
        One row per hypothesis (and analysis): ``hypothesis, family, analysis, model,
        feature, term, estimate, se, OR, OR_low, OR_high, p, q, n, direction, coding,
        expected_direction, ci_method, fit_warnings, error`` (``ci_method``: the hypothesis'
        ``ci``, Wald unless its file says ``ci = "profile"``). A fit that fails keeps its row (NaN numbers and the
        reason in ``error``) and counts as p = 1 in its family's BH correction.
    """
    folder = registry.folder if isinstance(registry, Registry) else Path(registry)
    reg = verify_lock(folder, lock_path)
    hyps = (
        reg.family(family)
        if family is not None
        else sorted(reg.hypotheses.values(), key=lambda h: h.id)
    )
    if ids is not None:
        unknown = sorted(set(ids) - set(reg.hypotheses))
        if unknown:
            raise ValueError(f"hypotheses {unknown} are not in the registry {folder}")
        hyps = [h for h in hyps if h.id in set(ids)]
    if outcome_col not in features.columns:
        raise ValueError(f"outcome column {outcome_col!r} is not in the feature table")
    rows = []
    analyses = ["primary", "sensitivity"] if sensitivity else ["primary"]
    for h in hyps:
        col = column_for(h) if column_for is not None else (h.column or h.feature)
        if col not in features.columns:
            raise ValueError(
                f"hypothesis {h.id}: feature column {col!r} is not in the feature table "
                f"(columns: {list(features.columns)})"
            )
        for analysis in analyses:
            row = {
                "hypothesis": h.id,
                "family": h.family,
                "analysis": analysis,
                "model": h.model,
                "feature": col,
                "coding": h.outcome_coding,
                "expected_direction": h.expected_direction,
                "error": "",
            }
            row.update(_registered_fit(features, h, col, analysis, outcome_col))
            rows.append(row)
    out = pd.DataFrame(rows)
    for k in ("estimate", "se", "OR", "OR_low", "OR_high", "p", "n"):
        if k not in out:
            out[k] = np.nan
    for k in ("direction", "ci_method", "fit_warnings"):
        out[k] = out.get(k, pd.Series(index=out.index, dtype=object)).fillna("")
    out["q"] = np.nan
    for _, idx in out.groupby(["family", "analysis"], sort=False).groups.items():
        out.loc[idx, "q"] = bh_qvalues(out.loc[idx, "p"].to_numpy(dtype=float))
    return out[list(RESULT_COLUMNS)]


# Not a pytest test, despite the name.
test_hypotheses.__test__ = False


def run_family(
    features: pd.DataFrame,
    registry: Registry | str | Path,
    lock_path: str | Path,
    family: str,
    **kwargs,
) -> pd.DataFrame:
    """:func:`test_hypotheses` for one named family."""
    return test_hypotheses(features, registry, lock_path, family=family, **kwargs)
