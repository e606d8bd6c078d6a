"""python -m hypo.stats: fit a researcher's CSV, list the registered hypotheses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypo.paths import registry_dir
from hypo.stats import po_analysis
from hypo.stats.__main__ import main

DATA = Path(__file__).parent / "data" / "stats"


def test_fit_prints_po_table_checks_and_partial_po(capsys):
    assert main(["fit", str(DATA / "mrs_ppo.csv"), "mrs ~ treated + age_z"]) == 0
    out = capsys.readouterr().out
    assert "OR > 1 means a higher (worse) mrs" in out
    assert "Brant test:" in out and "Nominal (likelihood-ratio) test:" in out
    assert "Partial proportional odds for the terms that fail" in out
    # The printed numbers are po_analysis's.
    res = po_analysis(pd.read_csv(DATA / "mrs_ppo.csv"), "mrs ~ treated + age_z")
    t = res.table.set_index("term")
    assert f"{t.loc['treated', 'OR']:.4g}" in out and f"{t.loc['treated', 'OR_low']:.4g}" in out
    assert "outcome levels (low to high): [0, 1, 2, 3, 4, 5, 6]" in out
    assert set(res.partial_po["term"]) == {"treated"}


def test_fit_with_profile_intervals_and_other_levels(tmp_path, capsys):
    w = pd.read_csv(DATA / "wine.csv")
    w["rating"] = w["rating"] * 10  # a 10-50 scale: not mRS
    path = tmp_path / "wine.tsv"
    w.to_csv(path, sep="\t", index=False)
    argv = ["fit", str(path), "rating ~ temp + contact", "--levels", "10,20,30,40,50"]
    assert main([*argv, "--ci", "profile"]) == 0
    out = capsys.readouterr().out
    # exp(1.50975): the lower profile end of temp in R (tests/data/stats/r/polr_profile_ci.csv)
    assert "95% CI: profile" in out and "4.526" in out
    assert "Every term passes" in out


@pytest.mark.parametrize(
    "table, formula, message",
    [
        (None, "mrs ~ x", "no such file"),
        ("ok", "mrs ~ treated + agez", "names column(s) ['agez']"),
        ("mrs9", "mrs ~ treated", "has value(s) [9] (2 row(s)) outside the mRS grades 0-6"),
        ("empty", "mrs ~ treated", "cannot read"),
    ],
)
def test_fit_errors_name_the_file_and_the_problem(tmp_path, capsys, table, formula, message):
    path = tmp_path / "table.csv"
    d = pd.read_csv(DATA / "mrs_ppo.csv")
    if table == "mrs9":
        d.loc[[0, 5], "mrs"] = 9
    if table == "empty":
        path.write_text("")
    elif table is not None:
        d.to_csv(path, index=False)
    assert main(["fit", str(path), formula]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m hypo.stats fit: ") and str(path) in err and message in err
    assert "Traceback" not in err


def test_hypotheses_lists_feature_map_covariates_population(capsys):
    assert main(["hypotheses"]) == 0
    out = capsys.readouterr().out
    folder = registry_dir() / "hypotheses"
    n = len(list(folder.glob("*.toml")))
    assert out.startswith(f"{n} registered hypotheses in {folder} (matches its lock")
    assert out.count("    covariates   ") == n and out.count("    population   ") == n
    assert "H1_mrs [mrs_maps]  feature asymmetry_ipsi_contra" in out
    assert "gradcam of the mrs model's 'mRS 3-6' class" in out


def test_hypotheses_says_when_the_folder_no_longer_matches_its_lock(tmp_path, capsys):
    src = registry_dir("v1")
    folder = tmp_path / "hypotheses"
    shutil.copytree(src / "hypotheses", folder)
    shutil.copy(src / "lock.json", tmp_path / "lock.json")
    f = folder / "H2_mrs.toml"
    f.write_text(f.read_text().replace('population = "all"', 'population = "age > 50"'))
    assert main(["hypotheses", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT match its lock" in out and "H2_mrs" in out and "age > 50" in out
    assert main(["hypotheses", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_po_analysis_on_a_two_level_outcome_says_po_is_not_testable():
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"y": rng.integers(0, 2, 50), "x": rng.normal(size=50)})
    res = po_analysis(d, "y ~ x")
    assert res.brant.empty and res.partial_po.empty
    assert "cannot be tested" in res.summary()
