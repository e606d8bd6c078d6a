"""The layering of the code base, read from the import statements (ast), not from docs.

Layers import only downwards: cohort < preprocess < nets < cam < features < stats < report <
study < analyses. Foundation modules (``hypo._util``, ``hypo.paths``, ``hypo.intervals``)
may be imported by every layer and import no layer themselves. No analysis imports another
analysis (shared private helpers ``analyses/_*.py`` are allowed), and no library module
imports an analysis.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["cohort", "preprocess", "nets", "cam", "features", "stats", "report", "study"]
FOUNDATION = {"hypo", "hypo._util", "hypo.paths", "hypo.intervals"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolved(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of a ``from ... import`` (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolved(node, package)
            out.append((node.lineno, mod))
            # ``from hypo import cam`` imports the subpackage
            if mod == "hypo":
                out += [(node.lineno, f"hypo.{a.name}") for a in node.names]
    return out


def layer_of(module: str) -> int | None:
    """Index of a module's layer (None for foundation and non-hypo modules)."""
    if module in FOUNDATION or not module.startswith("hypo."):
        return None
    top = module.split(".")[1]
    if top in LAYERS:
        return LAYERS.index(top)
    return None


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_every_hypo_module_has_a_layer_or_is_foundation():
    orphans = [
        _module_name(p)
        for p in _files("hypo")
        if layer_of(_module_name(p)) is None and _module_name(p) not in FOUNDATION
    ]
    assert not orphans, f"modules outside every layer: {orphans}; add them to LAYERS or FOUNDATION"


def test_library_imports_only_downwards():
    bad = []
    for p in _files("hypo"):
        me = _module_name(p)
        mine = layer_of(me)
        for line, mod in _imports(p):
            if mod.startswith("analyses"):
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {mod} (a command line)")
                continue
            theirs = layer_of(mod)
            if theirs is None:
                if me in FOUNDATION and mod.startswith("hypo.") and mod not in FOUNDATION:
                    bad.append(f"{p.relative_to(ROOT)}:{line}: foundation module imports {mod}")
                continue
            if mine is not None and theirs > mine:
                bad.append(
                    f"{p.relative_to(ROOT)}:{line}: {LAYERS[mine]} imports {mod} "
                    f"({LAYERS[theirs]}, a higher layer)"
                )
    assert not bad, "\n".join(bad)


def test_no_analysis_imports_another_analysis():
    bad = []
    for p in _files("analyses"):
        for line, mod in _imports(p):
            if not mod.startswith("analyses."):
                continue
            name = mod.split(".")[1]
            if not name.startswith("_") and name != "hypotheses":
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_no_dataframe_attrs_side_channel():
    hits = []
    for folder in ("hypo", "analyses"):
        for p in _files(folder):
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr == "attrs":
                    hits.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not hits, f"DataFrame.attrs used (return values instead): {hits}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from hypo.study import run_study\n", "hypo.study"),
        ("from ..stats import x\n", "hypo.stats"),
        ("from . import y\n", "hypo.cam"),
    ],
)
def test_import_reader_resolves_relative_imports(source, expected):
    # The checker itself: an import as written in a module of package hypo.cam.
    node = ast.parse(source).body[0]
    assert _resolved(node, "hypo.cam") == expected
    assert layer_of(expected) is not None


def _import_edges() -> dict[str, set[str]]:
    """Module -> hypo modules it imports, at module level or inside a function (package
    ``__init__`` files, which only re-export, are left out; ``from pkg import submodule``
    counts as the submodule)."""
    modules = {_module_name(p): p for p in _files("hypo")}
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    edges = {}
    for me, p in modules.items():
        if me in packages:
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        package = me.rpartition(".")[0]
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolved(node, package)
                names = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names
                ]
            else:
                continue
            out |= {n for n in names if n in modules and n not in packages}
        edges[me] = out
    return edges


def test_no_import_cycles_between_modules():
    edges = _import_edges()
    cycles, state = [], {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n) :] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)
