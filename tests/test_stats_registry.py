"""Hypothesis registry: lock before outcomes, refuse on change, report every test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from hypo.stats import Registry, RegistryLockError, lock, run_family, test_hypotheses, verify_lock

TEMPLATE = """\
id = "{id}"
family = "{family}"
model = "mrs"
class = "mrs_3_6"
method = "gradcam"
layer = "block5_conv3"
aggregation = "mean_over_slices"
feature = "{feature}"
feature_form = "{form}"
outcome_coding = "mrs"
covariates = ["lesion_volume_ml"]
sensitivity_covariates = ["age"]
population = "{population}"
two_sided = true
expected_direction = "higher feature -> worse mRS"
"""


def write(folder, id, feature, family="asym", form="raw", population="all"):
    text = TEMPLATE.format(id=id, feature=feature, family=family, form=form, population=population)
    (folder / f"{id}.toml").write_text(text)


@pytest.fixture
def registry(tmp_path):
    folder = tmp_path / "hypotheses"
    folder.mkdir()
    write(folder, "H1", "asymmetry_index")
    write(folder, "H2", "relevance_mass", form="log")
    write(folder, "H3", "noise")
    write(folder, "H4", "noise", family="other", population="side == 'left'")
    return folder


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    n = 150
    df = pd.DataFrame(
        {
            "asymmetry_index": rng.normal(size=n),
            "relevance_mass": rng.gamma(2, 1, n),
            "noise": rng.normal(size=n),
            "lesion_volume_ml": rng.gamma(2, 15, n),
            "age": rng.normal(70, 10, n),
            "side": rng.choice(["left", "right"], n),
        }
    )
    latent = 1.2 * df["asymmetry_index"] + 0.03 * df["lesion_volume_ml"] + rng.logistic(size=n)
    df["mrs_3months"] = np.digitize(latent, [-1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    return df


def test_load_validates_fields(tmp_path):
    folder = tmp_path / "h"
    folder.mkdir()
    write(folder, "H1", "x", form="cubic")
    with pytest.raises(ValueError, match=r"H1.toml: feature_form 'cubic'"):
        Registry.load(folder)
    (folder / "H1.toml").write_text(
        TEMPLATE.format(id="H1", feature="x", family="f", form="raw", population="all").replace(
            "two_sided = true", "two_sided = false"
        )
    )
    with pytest.raises(ValueError, match="two_sided"):
        Registry.load(folder)


def test_lock_then_verify_and_changes_are_named(registry, tmp_path):
    lock_path = tmp_path / "hypotheses.lock.json"
    lock(registry, lock_path)
    assert set(json.loads(lock_path.read_text())["hypotheses"]) == {"H1", "H2", "H3", "H4"}
    assert set(verify_lock(registry, lock_path).hypotheses) == {"H1", "H2", "H3", "H4"}
    with pytest.raises(FileExistsError):
        lock(registry, lock_path)
    # reformatting without changing content keeps the lock valid
    text = (registry / "H1.toml").read_text()
    (registry / "H1.toml").write_text("# comment\n" + text.replace(" = ", "   =   "))
    verify_lock(registry, lock_path)
    # a changed value, an added and a removed hypothesis are each named
    (registry / "H2.toml").write_text((registry / "H2.toml").read_text().replace('"log"', '"raw"'))
    write(registry, "H5", "noise")
    (registry / "H3.toml").unlink()
    with pytest.raises(RegistryLockError) as err:
        verify_lock(registry, lock_path)
    msg = str(err.value)
    assert "changed: H2" in msg and "added: H5" in msg and "removed: H3" in msg


def test_refuses_to_run_without_matching_lock(registry, features, tmp_path):
    with pytest.raises(RegistryLockError, match="no lock file"):
        test_hypotheses(features, registry, tmp_path / "missing.lock")
    lock_path = tmp_path / "l.json"
    lock(registry, lock_path)
    write(registry, "H1", "noise")  # edited after locking
    with pytest.raises(RegistryLockError, match="changed: H1"):
        run_family(features, registry, lock_path, "asym")


def test_family_results_report_every_test_with_bh(registry, features, tmp_path):
    lock_path = tmp_path / "l.json"
    lock(registry, lock_path)
    out = run_family(features, registry, lock_path, "asym", sensitivity=True)
    primary = out[out["analysis"] == "primary"].set_index("hypothesis")
    assert list(primary.index) == ["H1", "H2", "H3"]  # significant or not
    np.testing.assert_allclose(primary["q"], multipletests(primary["p"], method="fdr_bh")[1])
    assert primary.loc["H1", "p"] < 1e-4 and primary.loc["H1", "OR"] > 1
    assert primary.loc["H1", "direction"].startswith("higher asymmetry_index -> worse")
    assert primary.loc["H2", "term"] == "relevance_mass"
    assert (primary["n"] == 150).all()
    assert len(out[out["analysis"] == "sensitivity"]) == 3
    for col in ["model", "feature", "estimate", "se", "OR_low", "OR_high"]:
        assert col in out.columns


def test_failed_hypothesis_keeps_its_row(registry, features, tmp_path):
    lock_path = tmp_path / "l.json"
    lock(registry, lock_path)
    only_right = features.assign(side="right")  # H4's population is empty
    with pytest.warns(UserWarning, match="H4"):
        out = test_hypotheses(only_right, registry, lock_path, family="other")
    assert len(out) == 1 and out["error"].iloc[0] != "" and np.isnan(out["p"].iloc[0])
    with pytest.raises(ValueError, match="feature column 'noise'"):
        test_hypotheses(features.drop(columns="noise"), registry, lock_path, family="asym")


def test_separated_feature_is_reported_in_its_row(registry, features, tmp_path):
    # Issue 22: a feature that is 0/1 by mRS >= 3 plus 0.001 jitter. The row keeps NaN
    # numbers and names the separation (results.csv's error column; the report lists it).
    lock_path = tmp_path / "l.json"
    lock(registry, lock_path)
    rng = np.random.default_rng(3)
    sep = features.assign(
        noise=(features["mrs_3months"] >= 3) + 0.001 * rng.normal(size=len(features))
    )
    with pytest.warns(UserWarning, match="H3"):
        out = test_hypotheses(sep, registry, lock_path, family="asym").set_index("hypothesis")
    assert out.loc["H3", "error"].startswith("SeparationError")
    assert "cut 2|3 by noise" in out.loc["H3", "error"] and np.isnan(out.loc["H3", "OR"])
    assert out.loc["H1", "error"] == "" and np.isfinite(out.loc["H1", "OR"])


def test_a_hypothesis_may_ask_for_profile_intervals(tmp_path, features):
    folder = tmp_path / "hypotheses"
    folder.mkdir()
    write(folder, "H1", "asymmetry_index")
    f = folder / "H1.toml"
    default_hash = Registry.load(folder).hypotheses["H1"].content_hash()
    f.write_text(f.read_text() + 'ci = "profile"\n')
    assert Registry.load(folder).hypotheses["H1"].content_hash() != default_hash
    f.write_text(f.read_text().replace('ci = "profile"', 'ci = "wald"'))
    # Stating the default changes nothing: registries locked before the field keep their lock.
    assert Registry.load(folder).hypotheses["H1"].content_hash() == default_hash
    f.write_text(f.read_text().replace('ci = "wald"', 'ci = "profile"'))
    lock(folder, tmp_path / "l.json")
    prof = test_hypotheses(features, folder, tmp_path / "l.json").iloc[0]
    write(folder, "H1", "asymmetry_index")
    lock(folder, tmp_path / "l2.json")
    wald = test_hypotheses(features, folder, tmp_path / "l2.json").iloc[0]
    assert (prof["ci_method"], wald["ci_method"]) == ("profile", "wald")
    assert prof["OR"] == pytest.approx(wald["OR"]) and prof["p"] == pytest.approx(wald["p"])
    assert prof["OR_low"] != pytest.approx(wald["OR_low"], abs=1e-4)
    f.write_text(f.read_text() + 'ci = "bootstrap"\n')
    with pytest.raises(ValueError, match="ci 'bootstrap'"):
        Registry.load(folder)


def test_registry_versions_both_verify_and_the_amendment_chain_holds(tmp_path):
    """v1's lock still holds after the amendment; v2 names v1's hash and locks its record;
    a changed record or a wrong amended hash is refused by name."""
    import json
    import shutil

    from hypo.paths import REGISTRY_VERSION, registry_dir
    from hypo.stats.registry import RegistryLockError, verify_amendment, verify_lock

    assert REGISTRY_VERSION == "v2"
    verify_lock(registry_dir("v1") / "hypotheses", registry_dir("v1") / "lock.json")
    rec = verify_amendment(registry_dir("v2"))
    assert rec["amends"] == "v1"
    v2 = verify_lock(registry_dir("v2") / "hypotheses", registry_dir("v2") / "lock.json")
    assert all("nihss_baseline" in h.covariates for h in v2.hypotheses.values())
    assert {h.id for h in v2.hypotheses.values() if h.model == "outcome"} == {
        f"H{i}_outcome" for i in range(1, 5)
    }
    for what in ("record", "hash"):
        root = tmp_path / what
        for v in ("v1", "v2"):
            shutil.copytree(registry_dir(v), root / v)
        f = root / "v2" / "amendment.json"
        d = json.loads(f.read_text())
        if what == "record":
            d["reason"] += " (edited after locking)"
            match = "changed after"
        else:
            d["amends_registry_sha256"] = "0" * 64
            match = "amends registry hash"
        f.write_text(json.dumps(d))
        if what == "hash":  # relock so only the chain is wrong
            from hypo.stats.registry import lock

            lock(root / "v2" / "hypotheses", root / "v2" / "lock.json", overwrite=True,
                 amendment=f)  # fmt: skip
        with pytest.raises(RegistryLockError, match=match):
            verify_amendment(root / "v2")
