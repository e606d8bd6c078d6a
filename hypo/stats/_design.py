"""Formula handling shared by the model fitters: column checks, outcome levels, design matrices.

Every fitter in :mod:`hypo.stats` goes through :func:`build_design`, so that a formula
naming a missing column, an outcome that cannot be ordered or a single outcome level is
refused in one place, with one wording.
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy

__all__ = [
    "MRS_LEVELS",
    "Design",
    "build_design",
    "check_outcome_levels",
    "formula_columns",
    "ordinal_codes",
    "split_formula",
]

#: The modified Rankin Scale: 0 (no symptoms) to 6 (dead).
MRS_LEVELS = tuple(range(7))

# Names a patsy formula may use that are not data columns.
_FORMULA_NAMES = {
    "C",
    "I",
    "Q",
    "np",
    "numpy",
    "center",
    "standardize",
    "scale",
    "bs",
    "cr",
    "cc",
    "te",
    "Treatment",
    "Sum",
    "Diff",
    "Poly",
    "Helmert",
    "log",
    "exp",
    "sqrt",
} | set(dir(builtins))


def split_formula(formula: str) -> tuple[str, str]:
    """Split ``"y ~ a + b"`` into ``("y", "a + b")``.

    Raises
    ------
    ValueError
        If the formula has no ``~`` or an empty side.
    """
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise ValueError(f"formula {formula!r}: expected exactly one '~', as in 'mrs ~ x + age'")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs or not rhs:
        raise ValueError(f"formula {formula!r}: both sides of '~' must name something")
    return lhs, rhs


def formula_columns(rhs: str) -> list[str]:
    """Data column names a right-hand side refers to (in order of first use)."""
    return list(_formula_columns(rhs))


@functools.lru_cache(maxsize=1024)
def _formula_columns(rhs: str) -> tuple[str, ...]:
    desc = patsy.ModelDesc.from_formula(rhs)
    names: list[str] = []
    for term in desc.rhs_termlist:
        for factor in term.factors:
            code = factor.code
            try:
                tree = ast.parse(code, mode="eval")
            except SyntaxError:
                names.append(code)
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and node.id not in _FORMULA_NAMES:
                    if node.id not in names:
                        names.append(node.id)
    # Q("odd name") refers to a column by string.
    for term in desc.rhs_termlist:
        for factor in term.factors:
            tree = ast.parse(factor.code, mode="eval")
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "Q"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value not in names
                ):
                    names.append(node.args[0].value)
    return tuple(names)


def _check_columns(data: pd.DataFrame, needed: list[str], formula: str) -> None:
    missing = [c for c in needed if c not in data.columns]
    if missing:
        raise ValueError(
            f"formula {formula!r} names column(s) {missing} that are not in the data; "
            f"available columns: {list(map(str, data.columns))}"
        )


def check_outcome_levels(y: pd.Series, name: str, levels=None) -> pd.Series:
    """Check an ordinal outcome's values against its levels before any model sees them.

    With ``levels`` (lowest first) every value must be one of them; the result is an
    ordered categorical in that order. Without, an ordered categorical keeps its own
    categories, and a numeric outcome must hold mRS grades (whole numbers 0-6): a 9 coded
    for "unknown" would otherwise become a level worse than death.

    Raises
    ------
    ValueError
        Naming the column, the offending values and how many rows hold them.
    """
    if levels is not None:
        levels = list(levels)
        if len(set(levels)) != len(levels):
            raise ValueError(f"outcome {name!r}: levels={levels} repeat a value")
        vals = y.astype(object) if isinstance(y.dtype, pd.CategoricalDtype) else y
        bad = ~pd.Series(vals).isin(levels).to_numpy()
        if bad.any():
            raise ValueError(
                f"outcome column {name!r} has value(s) {sorted(map(str, pd.unique(y[bad])))[:10]} "
                f"({int(bad.sum())} row(s)) that are not among levels={levels}"
            )
        return pd.Series(
            pd.Categorical(vals, categories=levels, ordered=True), index=y.index, name=y.name
        )
    if isinstance(y.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y)
    ):
        return y
    v = y.to_numpy(dtype=float)
    if np.any(v != np.round(v)):
        return y  # ordinal_codes refuses fractions with its own message
    bad = ~np.isin(v, MRS_LEVELS)
    if bad.any():
        shown = sorted({float(x) for x in v[bad]})[:10]
        shown = [int(x) if x == int(x) else x for x in shown]
        raise ValueError(
            f"outcome column {name!r} has value(s) {shown} ({int(bad.sum())} row(s)) outside "
            f"the mRS grades 0-6; recode 'unknown' codes (e.g. 9) as missing, or pass "
            f"levels=[...] for another ordinal scale"
        )
    return y


def ordinal_codes(y: pd.Series, name: str | None = None) -> tuple[np.ndarray, list]:
    """Integer codes 0..K-1 and level labels of an ordinal outcome (unused levels dropped).

    Accepts an *ordered* pandas Categorical (its category order is the outcome order),
    integers, booleans or floats holding whole numbers. Missing values must have been
    removed before.

    Raises
    ------
    ValueError
        For strings or unordered categories (no order to use), floats with fractions,
        or fewer than two observed levels.
    """
    name = name or (y.name if y.name is not None else "outcome")
    if isinstance(y.dtype, pd.CategoricalDtype):
        if not y.dtype.ordered:
            raise ValueError(
                f"outcome {name!r} is an unordered categorical; make it ordered, e.g. "
                f"pd.Categorical(x, categories=[...], ordered=True)"
            )
        y = y.cat.remove_unused_categories()
        levels = list(y.cat.categories)
        codes = y.cat.codes.to_numpy().astype(int)
    elif pd.api.types.is_bool_dtype(y) or pd.api.types.is_integer_dtype(y):
        levels = [int(v) for v in sorted(pd.unique(y.astype(int)))]
        codes = np.searchsorted(levels, y.astype(int).to_numpy())
    elif pd.api.types.is_float_dtype(y):
        v = y.to_numpy(dtype=float)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"outcome {name!r} has non-finite values")
        if np.any(v != np.round(v)):
            bad = v[v != np.round(v)][:5]
            raise ValueError(
                f"outcome {name!r} holds fractional values (e.g. {bad.tolist()}); an ordinal "
                f"outcome must be whole-numbered levels or an ordered categorical"
            )
        levels = sorted(int(x) for x in np.unique(v))
        codes = np.searchsorted(levels, v.astype(int))
    else:
        raise ValueError(
            f"outcome {name!r} has dtype {y.dtype} (e.g. {y.iloc[:3].tolist()}), which has no "
            f"order; pass integers or an ordered pd.Categorical"
        )
    if len(levels) < 2:
        raise ValueError(
            f"outcome {name!r} has a single observed level ({levels}); nothing to model"
        )
    return np.asarray(codes, dtype=int), levels


@dataclass
class Design:
    """A complete-case design: outcome, covariate matrix without intercept and bookkeeping."""

    formula: str
    outcome: str
    y: pd.Series  # outcome values of the rows kept (original dtype)
    X: pd.DataFrame  # no intercept column
    term_columns: dict[str, list[str]]  # formula term -> its design columns
    index: pd.Index  # data rows kept
    dropped: dict[str, int] = field(default_factory=dict)  # column -> rows missing
    weights: np.ndarray | None = None
    groups: np.ndarray | None = None
    design_info: object = None  # patsy DesignInfo, to build the same columns for new data

    def matrix_for(self, data: pd.DataFrame) -> pd.DataFrame:
        """Design columns (no intercept) for new rows, coded exactly as at fit time."""
        X = patsy.dmatrix(self.design_info, data, return_type="dataframe", NA_action="raise")
        return X.drop(columns=[c for c in X.columns if c == "Intercept"])


def build_design(
    data: pd.DataFrame,
    formula: str,
    weights: str | np.ndarray | pd.Series | None = None,
    groups: str | np.ndarray | pd.Series | None = None,
) -> Design:
    """Validate ``formula`` against ``data`` and build a complete-case design matrix.

    Rows missing any variable the formula (or the weights / groups) uses are dropped; the
    number missing per column is recorded in ``Design.dropped``.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    lhs, rhs = split_formula(formula)
    rhs_cols = formula_columns(rhs)
    _check_columns(data, [lhs, *rhs_cols], formula)

    extra = {}
    for what, val in (("weights", weights), ("groups", groups)):
        if val is None:
            continue
        if isinstance(val, str):
            _check_columns(data, [val], f"{what}={val!r}")
            extra[what] = data[val]
        else:
            arr = pd.Series(np.asarray(val), index=data.index)
            if len(arr) != len(data):
                raise ValueError(f"{what} has {len(arr)} values but data has {len(data)} rows")
            extra[what] = arr

    used = [lhs, *rhs_cols]
    frame = data[used].copy()
    for k, v in extra.items():
        frame[f"__{k}__"] = v.to_numpy()
    miss = frame.isna()
    dropped = {c: int(miss[c].sum()) for c in used if miss[c].any()}
    for k in extra:
        if miss[f"__{k}__"].any():
            dropped[k] = int(miss[f"__{k}__"].sum())
    keep = ~miss.any(axis=1)
    frame = frame.loc[keep]
    if len(frame) == 0:
        raise ValueError(f"formula {formula!r}: no complete rows (missing per column: {dropped})")

    X = _numeric_design(rhs, frame)
    if X is None:
        X = patsy.dmatrix(rhs, frame, return_type="dataframe", NA_action="raise")
        _remember_numeric_design(rhs, frame, X)
    info = X.design_info
    term_columns = {
        name: list(X.columns[sl])
        for name, sl in info.term_name_slices.items()
        if name != "Intercept"
    }
    X = X.drop(columns=[c for c in X.columns if c == "Intercept"])
    w = None
    if "weights" in extra:
        w = frame["__weights__"].to_numpy(dtype=float)
        if np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite and non-negative")
    g = frame["__groups__"].to_numpy() if "groups" in extra else None
    return Design(
        formula=formula,
        outcome=lhs,
        y=frame[lhs],
        X=X,
        term_columns=term_columns,
        index=frame.index,
        dropped=dropped,
        weights=w,
        groups=g,
        design_info=info,
    )


# --------------------------------------------------------------------------- fast path
# A bootstrap builds the same formula hundreds of times on resampled rows; patsy's parse
# and per-factor evaluation took a third of that time. A right-hand side made only of
# plain numeric column names (``z + age + nihss_baseline``) has a design that does not
# depend on the data beyond the columns' values: the first build goes through patsy, is
# checked against the direct one (the same matrix, to the bit) and its DesignInfo kept;
# later builds fill the matrix as patsy does (a column of ones times each column's
# values). Anything else (categorical, bool, nullable or object columns, a transform, an
# interaction, no intercept) always goes through patsy.

_NUMERIC_DESIGNS: dict[tuple, object] = {}


@functools.lru_cache(maxsize=1024)
def _plain_terms(rhs: str) -> tuple[str, ...] | None:
    """Column names of a right-hand side that is an intercept plus single plain names."""
    desc = patsy.ModelDesc.from_formula(rhs)
    terms = desc.rhs_termlist
    if not terms or terms[0] != patsy.INTERCEPT:
        return None
    names = []
    for term in terms[1:]:
        if len(term.factors) != 1:
            return None
        code = term.factors[0].code
        if (
            not code.isidentifier()
            or keyword.iskeyword(code)
            or code in _FORMULA_NAMES
            or code == "Intercept"
        ):
            return None
        names.append(code)
    return tuple(names)


def _numeric_key(rhs: str, frame: pd.DataFrame) -> tuple | None:
    names = _plain_terms(rhs)
    if names is None or frame.columns.duplicated().any():
        return None
    dtypes = tuple(frame[c].dtype for c in names)
    if not all(isinstance(d, np.dtype) and d.kind in "fi" for d in dtypes):
        return None
    return (rhs, tuple(map(str, dtypes)))


def _direct_design(info, frame: pd.DataFrame) -> pd.DataFrame:
    out = np.empty((len(frame), len(info.column_names)))
    out[...] = 1
    for j, name in enumerate(info.column_names):
        if name != "Intercept":
            out[:, j] *= frame[name].to_numpy(dtype=float)
    X = pd.DataFrame(out, columns=list(info.column_names), index=frame.index)
    X.design_info = info
    return X


def _numeric_design(rhs: str, frame: pd.DataFrame) -> pd.DataFrame | None:
    key = _numeric_key(rhs, frame)
    info = _NUMERIC_DESIGNS.get(key) if key is not None else None
    return None if info is None else _direct_design(info, frame)


def _remember_numeric_design(rhs: str, frame: pd.DataFrame, X: pd.DataFrame) -> None:
    key = _numeric_key(rhs, frame)
    if key is None:
        return
    info = X.design_info
    if sorted(info.column_names) != sorted(["Intercept", *_plain_terms(rhs)]):
        return
    direct = _direct_design(info, frame)
    same = direct.columns.equals(X.columns) and direct.index.equals(X.index)
    if same and np.array_equal(direct.to_numpy(), X.to_numpy()) and not direct.isna().any().any():
        _NUMERIC_DESIGNS[key] = info
