"""report.md / report.html writer and provenance.json."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from hypo.report.provenance import collect_provenance, library_versions, write_provenance
from hypo.report.tables import table1
from hypo.report.writer import Section, Table, markdown_table, write_report

ATTACK = "<script>alert(1)</script>"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def report_dir(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "forest.png").write_bytes(PNG)
    return tmp_path


def _sections():
    df = pd.DataFrame({"participant_id": [ATTACK, "sub-002"], "note": ["a|b", "x & y"]})
    return [
        Section(
            "Patient flow",
            ["All participants were screened.", Table(df, caption="Excluded patients")],
        ),
        {
            "heading": "Results",
            "paragraphs": ["Odds ratios per 1 SD."],
            "tables": [(pd.DataFrame({"OR": [1.5], ATTACK: ["col"]}), "Results table")],
            "figures": [("figures/forest.png", "Forest plot")],
            "warnings": ["Proportional odds rejected for H2"],
        },
    ]


def test_writer_writes_both_files_with_every_section(report_dir):
    paths = write_report(
        report_dir, _sections(), title="Asymmetry vs mRS", warnings=["3 fits failed"]
    )
    md = paths["md"].read_text()
    page = paths["html"].read_text()
    for text in (md, page):
        for needle in ("Asymmetry vs mRS", "Patient flow", "Results", "Excluded patients",
                       "Results table", "Forest plot", "3 fits failed",
                       "Proportional odds rejected for H2", "Odds ratios per 1 SD."):  # fmt: skip
            assert needle in text, needle
    assert "![Forest plot](figures/forest.png)" in md
    # Markdown table: the pipe inside a cell is escaped, so each row keeps 2 columns.
    row = next(line for line in md.splitlines() if "sub-002" in line)
    assert row.count(" | ") == 1 and "a\\|b" not in row
    assert "a\\|b" in md
    # HTML embeds the figure as base64 (single self-contained file) by default.
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    linked = write_report(report_dir, _sections(), embed_figures=False, stem="linked")
    assert 'src="figures/forest.png"' in linked["html"].read_text()


def test_html_and_markdown_escape_values_from_data(report_dir):
    paths = write_report(report_dir, _sections(), title=ATTACK, intro=[ATTACK])
    page = paths["html"].read_text()
    md = paths["md"].read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in md.lower()
    assert "x &amp; y" in page


def test_html_escapes_table1_built_from_hostile_values(report_dir):
    df = pd.DataFrame(
        {
            "participant_id": ["sub-1", "sub-2", "sub-3"],
            "age": [60, 70, 80],
            "lesion_side": [ATTACK, "left", "right"],
            "mrs_3months": [1, 4, np.nan],
        }
    )
    t1 = table1(df)
    paths = write_report(report_dir, [{"heading": "Table 1", "tables": [t1]}])
    assert "<script" not in paths["html"].read_text().lower()


def test_writer_validates_figures_and_content(report_dir):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(report_dir, [{"heading": "x", "figures": ["figures/missing.png"]}])
    with pytest.raises(ValueError, match="relative"):
        write_report(
            report_dir, [{"heading": "x", "figures": [str(report_dir / "figures/forest.png")]}]
        )
    with pytest.raises(ValueError, match="unknown key"):
        write_report(report_dir, [{"heading": "x", "tabels": []}])
    with pytest.raises(TypeError, match="content items"):
        write_report(report_dir, [Section("x", [3.14])])
    assert not (report_dir / "report.md").exists()  # nothing half-written


def test_markdown_table_shape():
    text = markdown_table(pd.DataFrame({"a": [1, None], "b": ["x\ny", "<b>"]}))
    lines = text.splitlines()
    assert len(lines) == 4 and lines[1] == "|---|---|"
    assert "&lt;b>" in lines[3] and "<b>" not in text


def test_provenance_versions_git_and_json(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Config:
        seed: int = 0
        tertiles: int = 3

    prov = collect_provenance(
        cohort={"participants_sha256": "abc", "n": np.int64(42)},
        models={"stroke": {"file_sha256": "def"}},
        registry_lock_hash="0123",
        seeds={"cam": 0},
        config=Config(),
        thresholds=np.array([0.5, np.nan]),
    )
    versions = prov["versions"]
    for lib in ("numpy", "pandas", "scipy", "statsmodels", "plotnine", "nibabel", "opencv",
                "scikit-learn", "tensorflow", "keras", "pingouin", "nilearn"):  # fmt: skip
        assert lib in versions
    assert versions["numpy"] == np.__version__
    assert versions["pandas"] == pd.__version__
    assert prov["config"] == {"seed": 0, "tertiles": 3}
    assert prov["cohort"]["n"] == 42 and prov["thresholds"] == [0.5, None]
    assert prov["git"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["git"]["commit"])
    out = write_provenance(tmp_path / "provenance.json", prov)
    back = json.loads(out.read_text())
    assert back["registry_lock_hash"] == "0123" and back["versions"] == versions


def test_provenance_outside_git_does_not_fail(tmp_path):
    prov = collect_provenance(repo=tmp_path)
    assert prov["git"] is None
    assert library_versions()["scipy"] is not None


def test_provenance_refuses_nifti_header_text(tmp_path):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr["descrip"] = b"Jane Doe"
    with pytest.raises(TypeError, match="nibabel"):
        collect_provenance(header=hdr)
    with pytest.raises(ValueError, match="descrip"):
        collect_provenance(cohort={"sub-1": {"descrip": "Jane Doe"}})
    with pytest.raises(TypeError, match="bytes"):
        collect_provenance(cohort={"note": hdr["descrip"].tobytes()})
    with pytest.raises(ValueError, match="reserved"):
        collect_provenance(versions={})


def test_analysis_report_end_to_end(tmp_path):
    from hypo.report import write_analysis_report
    from hypo.report.tables import patient_flow
    from tests.test_report_figures import _example

    rng = np.random.default_rng(11)
    n = 24
    patients = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(n)],
            "age": rng.integers(40, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "nihss_baseline": rng.integers(0, 25, n),
            "ivt": rng.integers(0, 2, n),
            "lesion_volume_ml": rng.gamma(2.0, 10.0, n),
            "asymmetry_index": rng.normal(size=n),
            "mrs_3months": rng.integers(0, 7, n).astype(float),
            "analysis_population": [True] * 20 + [False] * 4,
        }
    )
    patients.loc[0, "participant_id"] = ATTACK
    patients.loc[3, "mrs_3months"] = np.nan
    flow, excluded = patient_flow(
        patients, [("visible lesion", "analysis_population", "no lesion")]
    )
    results = pd.DataFrame(
        {
            "hypothesis": ["H1", "H2"],
            "model": ["mrs", "mrs"],
            "feature": ["asymmetry_index", "edge"],
            "term": ["asymmetry_index", "edge"],
            "estimate": [0.4, np.nan],
            "se": [0.2, np.nan],
            "OR": [np.exp(0.4), np.nan],
            "OR_low": [np.exp(0.0), np.nan],
            "OR_high": [np.exp(0.8), np.nan],
            "p": [0.05, np.nan],
            "q": [0.1, np.nan],
            "n": [19, 19],
            "direction": ["OR > 1: higher (worse) mRS per 1 SD of feature"] * 2,
            "error": ["", ATTACK],
        }
    )
    paths = write_analysis_report(
        tmp_path,
        patients,
        results,
        ["asymmetry_index"],
        flow=flow,
        excluded=excluded,
        cam_examples=[_example()],
        provenance={"seeds": {"analysis": 0}, "registry_lock_hash": "abc"},
        dpi=50,
    )
    page = paths["html"].read_text()
    md = paths["md"].read_text()
    assert "<script" not in page.lower() and "<script" not in md.lower()
    for needle in ("Patient flow", "Table 1", "Registered hypotheses", "CAM panels",
                   "fit failed", "1 patient of the analysis population without"):  # fmt: skip
        assert needle in page and needle in md, needle
    assert page.count("data:image/png;base64,") == 4  # forest, grotta, by-mRS, CAM panels
    prov = json.loads(paths["provenance"].read_text())
    assert prov["registry_lock_hash"] == "abc" and prov["seeds"] == {"analysis": 0}
    assert (tmp_path / "figures" / "cam_panels.png").is_file()


def test_folded_tables_long_cells_and_floats_in_html(report_dir):
    df = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(40)],
            "reason": ["x" * 400, ATTACK + "y" * 100] + [""] * 38,
            "value": np.linspace(0, 1, 40) / 3,
        }  # fmt: skip
    )
    paths = write_report(report_dir, [Section("Flow", [Table(df, "Excluded", folded=True)])])
    page = paths["html"].read_text()
    assert '<details><summary class="caption"><strong>Excluded (40 rows)</strong>' in page
    assert "sub-039" in page and "x" * 235 not in page and "x" * 234 + " [...]" in page
    assert "the CSV file has them whole" in page
    # A long text keeps a readable width, and stays escaped.
    assert '<div class="long-text">&lt;script&gt;' in page and ATTACK not in page
    assert "0.3333" in page and "0.333333" not in page  # 4 significant digits
    md = paths["md"].read_text()
    assert "x" * 400 in md and "0.3333" in md  # Markdown keeps every row and the whole text
