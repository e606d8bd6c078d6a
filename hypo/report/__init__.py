"""The report stage: figures, CAM panels, tables, report.md/.html and provenance.json.

Submodules are imported on first use so that ``hypo.report.montage`` and
``hypo.report.provenance`` stay quick to load without plotnine/matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "figures": (
        "grotta_data",
        "grotta_bars",
        "forest_data",
        "forest_plot",
        "feature_by_mrs",
        "save_figure",
        "write_figures",
    ),
    "cam_panels": ("CamExample", "cam_panel_figure", "write_cam_panels"),
    "tables": (
        "Table1Row",
        "DEFAULT_TABLE1_ROWS",
        "mrs_group",
        "table1",
        "patient_flow",
        "patient_flow_table",
        "format_results",
        "fmt_p",
    ),
    "writer": (
        "Section",
        "Table",
        "Figure",
        "write_report",
        "write_analysis_report",
        "markdown_table",
    ),
    "provenance": (
        "collect_provenance",
        "write_provenance",
        "library_versions",
        "git_state",
        "hash_files",
    ),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'hypo.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
