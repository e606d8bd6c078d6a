"""Write ``report.md`` and ``report.html`` from one structured description.

A report is a title, optional introduction paragraphs, report-level warnings and a list of
sections; a section holds paragraphs, tables (DataFrames) and figures (PNG files under the
report folder, given by their path relative to it), in the order given.

Both files are written atomically. The HTML is one self-contained file: figures are
embedded as base64 PNG data (``embed_figures=True``, the default; set it False to link
them by their relative path instead). Every string is escaped on the way out -- titles,
paragraphs, captions, warnings, table headers and cells -- so text read from an input file
(a participant id, a column value) can never become markup. The Markdown file escapes
``<`` (and ``&`` where it would start an entity) because Markdown viewers render inline
HTML, and ``|`` in table cells.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hypo._util import markdown_table, markdown_text, write_text_atomic
from hypo.report import figures as fig
from hypo.report.cam_panels import write_cam_panels
from hypo.report.provenance import collect_provenance, write_provenance
from hypo.report.tables import format_results, patient_flow_table, table1

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #335; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .85rem; }
th, td { border: 1px solid #ccd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef0f6; white-space: nowrap; }
td { max-width: 40rem; }
.long-text { min-width: 16rem; }
tr:nth-child(even) td { background: #fafbfd; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .caption { font-size: .85rem; color: #444; margin-top: .3rem; }
.warnings { background: #fff4e5; border-left: 4px solid #e69500; padding: .5rem 1rem; }
.table-wrap { overflow-x: auto; }
details { margin: .8rem 0; }
summary { cursor: pointer; }
"""


@dataclass
class Table:
    """A table of the report: a DataFrame and a caption (shown above it).

    ``folded``: in the HTML the table sits closed in a ``<details>`` element whose summary
    is the caption and the row count (long lists a reader opens on demand).
    """

    df: pd.DataFrame
    caption: str = ""
    index: bool = False
    folded: bool = False


@dataclass
class Figure:
    """A figure of the report: a file path relative to the report folder and a caption."""

    path: str | os.PathLike
    caption: str = ""


@dataclass
class Section:
    """A section: a heading and its content in order (str = paragraph, Table, Figure).

    A bare DataFrame in ``content`` is a table without caption.
    """

    heading: str
    content: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _as_section(s, i: int) -> Section:
    if isinstance(s, Section):
        return s
    if isinstance(s, Mapping):
        known = {"heading", "paragraphs", "tables", "figures", "warnings", "content"}
        unknown = set(s) - known
        if unknown:
            raise ValueError(
                f"report section {i}: unknown key(s) {sorted(unknown)}; use {sorted(known)}"
            )
        if "heading" not in s:
            raise ValueError(f"report section {i}: no 'heading'")
        content = list(s.get("content", []))
        content += [str(p) for p in s.get("paragraphs", [])]
        for t in s.get("tables", []):
            if isinstance(t, tuple):
                t = Table(*t)
            elif isinstance(t, Mapping):
                t = Table(**t)
            content.append(t)
        for f in s.get("figures", []):
            if isinstance(f, tuple):
                f = Figure(*f)
            elif isinstance(f, Mapping):
                f = Figure(**f)
            elif isinstance(f, str | os.PathLike):
                f = Figure(f)
            content.append(f)
        return Section(str(s["heading"]), content, [str(w) for w in s.get("warnings", [])])
    raise TypeError(f"report section {i}: expected Section or dict, got {type(s).__name__}")


def _check_content(sections: list[Section], out_dir: Path) -> None:
    for sec in sections:
        for item in sec.content:
            if isinstance(item, Figure):
                p = Path(item.path)
                if p.is_absolute() or ".." in p.parts:
                    raise ValueError(
                        f"section {sec.heading!r}: figure path {str(p)!r} must be relative to "
                        f"the report folder {out_dir} and inside it"
                    )
                if not (out_dir / p).is_file():
                    raise FileNotFoundError(
                        f"section {sec.heading!r}: figure {out_dir / p} does not exist"
                    )
            elif isinstance(item, pd.DataFrame | Table):
                df = item.df if isinstance(item, Table) else item
                if not isinstance(df, pd.DataFrame):
                    raise TypeError(
                        f"section {sec.heading!r}: table is a {type(df).__name__}, not a DataFrame"
                    )
            elif not isinstance(item, str):
                raise TypeError(
                    f"section {sec.heading!r}: content items must be str, Table, Figure or "
                    f"DataFrame; got {type(item).__name__}"
                )


# --------------------------------------------------------------------------- Markdown


def _markdown(title: str, intro, warnings, sections: list[Section]) -> str:
    out = [f"# {markdown_text(title)}", ""]
    for p in intro:
        out += [markdown_text(p), ""]
    if warnings:
        out += ["> **Warnings**", ">"]
        out += [f"> - {markdown_text(w)}" for w in warnings]
        out.append("")
    for sec in sections:
        out += [f"## {markdown_text(sec.heading)}", ""]
        if sec.warnings:
            out += [f"> **Warning:** {markdown_text(w)}" for w in sec.warnings]
            out.append("")
        for item in sec.content:
            if isinstance(item, str):
                out += [markdown_text(item), ""]
            elif isinstance(item, Figure):
                rel = Path(item.path).as_posix()
                alt = markdown_text(item.caption or Path(item.path).name).replace("]", "\\]")
                out += [f"![{alt}]({rel})", ""]
                if item.caption:
                    out += [f"*{markdown_text(item.caption)}*", ""]
            else:
                t = item if isinstance(item, Table) else Table(item)
                if t.caption:
                    out += [f"**{markdown_text(t.caption)}**", ""]
                out += [markdown_table(t.df, t.index, float_format=f".{FLOAT_DIGITS}g"), ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML
def _h(s) -> str:
    return html.escape(str(s), quote=True)


#: Significant digits of a float cell (the CSV files keep full precision).
FLOAT_DIGITS = 4


def _fmt_float(v: float) -> str:
    return f"{v:.{FLOAT_DIGITS}g}"


#: Longest text cell shown in full in an HTML table; longer ones are cut (the tables'
#: CSV files keep the whole text) so that one error message cannot stretch a table.
MAX_CELL_CHARS = 240


#: Text cells longer than this get a minimum width, so that a message is not squeezed into
#: a column one word wide.
LONG_CELL_CHARS = 80


def _html_table(t: Table) -> str:
    # to_html(escape=True) escapes cells and headers; the caption is escaped by us. Long
    # text cells are swapped for plain tokens, and put back escaped inside a div after.
    df = t.df
    long_cells: dict[str, str] = {}
    cut = False
    for c in df.columns:
        if df[c].dtype != object:
            continue
        vals = list(df[c])
        changed = False
        for i, v in enumerate(vals):
            if isinstance(v, str) and len(v) > LONG_CELL_CHARS:
                if len(v) > MAX_CELL_CHARS:
                    v, cut = v[: MAX_CELL_CHARS - 6] + " [...]", True
                token = f"hypolongcell{len(long_cells)}x"
                long_cells[token] = f'<div class="long-text">{_h(v)}</div>'
                vals[i] = token
                changed = True
        if changed:
            df = df.copy() if df is t.df else df
            df[c] = vals
    note = (
        f'<p class="caption">Texts longer than {MAX_CELL_CHARS} characters are cut here; the '
        "CSV file has them whole.</p>"
        if cut
        else ""
    )
    body = df.to_html(index=t.index, escape=True, na_rep="", border=0, classes="report-table",
                      float_format=_fmt_float)  # fmt: skip
    for token, cell in long_cells.items():
        body = body.replace(token, cell)
    if t.folded:
        n = len(t.df)
        summary = f"{_h(t.caption or 'Table')} ({n} row{'s' if n != 1 else ''})"
        return (
            f'<details><summary class="caption"><strong>{summary}</strong></summary>\n'
            f'<div class="table-wrap">\n{body}\n</div>{note}</details>'
        )
    cap = f'<p class="caption"><strong>{_h(t.caption)}</strong></p>\n' if t.caption else ""
    return f'{cap}<div class="table-wrap">\n{body}\n</div>{note}'


def _html_figure(f: Figure, out_dir: Path, embed: bool) -> str:
    rel = Path(f.path)
    if embed:
        mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".svg": "image/svg+xml"}.get(rel.suffix.lower(), "application/octet-stream")  # fmt: skip
        data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
        src = f"data:{mime};base64,{data}"
    else:
        src = _h(rel.as_posix())
    alt = _h(f.caption or rel.name)
    cap = f"<figcaption>{_h(f.caption)}</figcaption>" if f.caption else ""
    return f'<figure><img src="{src}" alt="{alt}">{cap}</figure>'


def _html(title: str, intro, warnings, sections: list[Section], out_dir: Path, embed: bool) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title)}</h1>",
    ]
    parts += [f"<p>{_h(p)}</p>" for p in intro]
    if warnings:
        items = "".join(f"<li>{_h(w)}</li>" for w in warnings)
        parts.append(f'<div class="warnings"><strong>Warnings</strong><ul>{items}</ul></div>')
    for sec in sections:
        parts.append(f"<section>\n<h2>{_h(sec.heading)}</h2>")
        if sec.warnings:
            items = "".join(f"<li>{_h(w)}</li>" for w in sec.warnings)
            parts.append(f'<div class="warnings"><ul>{items}</ul></div>')
        for item in sec.content:
            if isinstance(item, str):
                parts.append(f"<p>{_h(item)}</p>")
            elif isinstance(item, Figure):
                parts.append(_html_figure(item, out_dir, embed))
            else:
                parts.append(_html_table(item if isinstance(item, Table) else Table(item)))
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | os.PathLike,
    sections: Sequence[Section | Mapping],
    title: str = "hypo report",
    intro: Sequence[str] = (),
    warnings: Sequence[str] = (),
    embed_figures: bool = True,
    stem: str = "report",
) -> dict[str, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Report folder; figures are looked up relative to it.
    sections : sequence of Section or dict
        A dict section has ``heading`` and any of ``paragraphs`` (str), ``tables``
        (Table, dict of Table's fields, ``(df, caption)`` tuples), ``figures`` (Figure,
        relative path, ``(path, caption)``), ``warnings`` (str) and ``content`` (ordered
        items); content is laid out as paragraphs, then tables, then figures.
    title : str
        Report title.
    intro : sequence of str
        Paragraphs before the first section.
    warnings : sequence of str
        Report-level warnings, shown in a box at the top of both files.
    embed_figures : bool
        Embed figures in the HTML as base64 (a single self-contained file); else link them
        by relative path. ``report.md`` always links them by relative path.

    Returns
    -------
    dict
        ``{"md": path, "html": path}``.
    """
    out_dir = Path(out_dir)
    secs = [_as_section(s, i) for i, s in enumerate(sections)]
    _check_content(secs, out_dir)
    intro = [str(p) for p in intro]
    warnings = [str(w) for w in warnings]
    md = write_text_atomic(out_dir / f"{stem}.md", _markdown(title, intro, warnings, secs))
    page = _html(title, intro, warnings, secs, out_dir, embed_figures)
    htm = write_text_atomic(out_dir / f"{stem}.html", page)
    return {"md": md, "html": htm}


def write_analysis_report(
    out_dir: str | os.PathLike,
    patients: pd.DataFrame,
    results: pd.DataFrame,
    features: Sequence[str],
    flow=None,
    excluded: pd.DataFrame | None = None,
    cam_examples: Sequence | None = None,
    cam_kwargs: Mapping | None = None,
    provenance: Mapping | None = None,
    title: str = "CAM asymmetry features and 3-month mRS",
    intro: Sequence[str] = (),
    warnings: Sequence[str] = (),
    outcome: str = "mrs_3months",
    population: str | None = "analysis_population",
    dpi: int = 150,
    hypothesis_flow: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Figures, ``report.md``/``report.html`` and ``provenance.json`` of a main analysis.

    Sections: patient flow (and who was excluded, by ``participant_id``), Table 1 of the
    analysis population by mRS group, the formatted results table, the forest plot, Grotta
    bars and feature-by-mRS plots per feature, and CAM panels when examples are given.
    Failed fits and missing outcomes become report warnings.

    Parameters
    ----------
    patients : DataFrame
        Patient table (see :func:`hypo.report.tables.table1`).
    results : DataFrame
        Results of :func:`hypo.stats.registry.test_hypotheses`.
    features : sequence of str
        Feature columns to draw Grotta bars and feature-by-mRS plots for.
    flow : DataFrame or sequence, optional
        Patient flow (see :func:`hypo.report.tables.patient_flow_table`).
    excluded : DataFrame, optional
        ``participant_id, step, reason`` of excluded patients.
    cam_examples : sequence, optional
        :class:`hypo.report.cam_panels.CamExample` rows; ``cam_kwargs`` go to the panel
        function (classes, methods, scale, vmin, vmax).
    provenance : dict, optional
        Parts for :func:`hypo.report.provenance.collect_provenance` (cohort and model
        hashes, registry lock hash, seeds, config).
    population : str or None
        Boolean column selecting the analysis population for Table 1 and the figures.
    hypothesis_flow : DataFrame, optional
        Per registered test, who it leaves out of the population and why
        (:func:`hypo.study.table.hypothesis_flow`), shown under the patient flow.

    Returns
    -------
    dict
        Paths of ``md``, ``html``, ``provenance`` and each figure.
    """

    out_dir = Path(out_dir)
    data = patients
    if population is not None and population in patients.columns:
        data = patients[patients[population].astype(bool)]
    warnings = [str(w) for w in warnings]
    if outcome in data.columns and data[outcome].isna().any():
        k = int(data[outcome].isna().sum())
        warnings.append(
            f"{k} patient{'s' if k != 1 else ''} of the analysis population without "
            f"{outcome}: left out of the fits and outcome figures"
        )
    if "error" in results.columns:
        failed = results[results["error"].fillna("").astype(str) != ""]
        for _, r in failed.iterrows():
            warnings.append(
                f"{r['hypothesis']} ({r['model']}, {r['feature']}): fit failed: {r['error']}"
            )
    if "fit_warnings" in results.columns:
        warned = results[results["fit_warnings"].fillna("").astype(str) != ""]
        for _, r in warned.iterrows():
            where = ", ".join(str(r[c]) for c in ("model", "feature", "map_source", "analysis")
                              if c in r and str(r[c]) not in ("", "nan"))  # fmt: skip
            warnings.append(f"{r['hypothesis']} ({where}): {r['fit_warnings']}")

    sections: list[Section] = []
    if flow is not None:
        content: list = [Table(patient_flow_table(flow), caption="Patient flow")]
        if excluded is not None and len(excluded):
            content.append(
                Table(excluded, caption="Excluded patients (by participant_id)", folded=True)
            )
        if hypothesis_flow is not None and len(hypothesis_flow):
            caption = "Patients per registered test: who each test leaves out, and why"
            content.append(Table(hypothesis_flow, caption=caption))
        sections.append(Section("Patient flow", content))
    t1 = table1(data, outcome=outcome)
    sections.append(
        Section(
            "Baseline characteristics",
            [
                Table(t1, caption="Table 1: baseline characteristics by 3-month mRS group"),
                "Continuous characteristics: median [interquartile range]; p-values compare "
                "mRS 0-2 with mRS 3-6 (Mann-Whitney U, chi-square); patients with a missing "
                "outcome are shown but not tested.",
            ],
        )
    )
    figs = fig.write_figures(data, results, list(features), out_dir, outcome=outcome, dpi=dpi)
    sections.append(
        Section(
            "Results",
            [
                Table(
                    format_results(results, compact=True),
                    caption="Registered hypotheses: every test (OR per SD of the feature; "
                    "OR > 1 = worse mRS; q: Benjamini-Hochberg within family and map source)",
                ),
                "Model, family, formula term, estimate (SE), direction and outcome coding of "
                "each row are in results.csv.",
                Figure(figs["forest_plot"], "Odds ratios with 95% confidence intervals"),
            ],
        )
    )
    per_feature: list = []
    for f in features:
        per_feature.append(Figure(figs[f"grotta_{f}"], f"mRS at 3 months by tertile of {f}"))
        per_feature.append(Figure(figs[f"feature_by_mrs_{f}"], f"{f} by mRS at 3 months"))
    if per_feature:
        sections.append(Section("Features and outcome", per_feature))
    if cam_examples:
        rel = Path("figures") / "cam_panels.png"
        write_cam_panels(out_dir / rel, cam_examples, dpi=dpi, **dict(cam_kwargs or {}))
        figs["cam_panels"] = rel
        sections.append(
            Section(
                "Grad-CAM and Grad-CAM++ examples",
                [
                    "Rows: example slices (radiological view, R = patient's right). Columns: "
                    "original slice, preprocessed network input, then heat maps per class and "
                    "method with the predicted probability of that class below each. Raw maps "
                    "share one colour scale per method (its colour bar), across patients and "
                    "classes; raw Grad-CAM and Grad-CAM++ values differ by orders of magnitude, "
                    "so compare colours within a method only.",
                    Figure(rel, "CAM panels"),
                ],
            )
        )
    paths = write_report(out_dir, sections, title=title, intro=intro, warnings=warnings)
    prov = collect_provenance(**dict(provenance or {}))
    paths["provenance"] = write_provenance(out_dir / "provenance.json", prov)
    paths.update({k: out_dir / v for k, v in figs.items()})
    return paths
