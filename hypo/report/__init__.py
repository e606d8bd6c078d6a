"""The report stage: figures, CAM panels, tables, report.md/.html and provenance.json.

Submodules are imported on first use so that ``hypo.report.montage`` and
``hypo.report.provenance`` stay quick to load without plotnine/matplotlib.
"""

from __future__ import annotations

from hypo._util import lazy_exports

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
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
