"""Where hypo keeps generated data and caches.

Defaults live under the repository (``data/`` and ``cache/``, both git-ignored); the
environment variables ``HYPO_DATA`` and ``HYPO_CACHE`` move them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Seeds and sizes of the embedded default cohorts (issue 2).
DEV_COHORT = {"name": "dev", "patients": 511, "seed": 20230511}
ANALYSIS_COHORT = {"name": "analysis", "patients": 200, "seed": 20230901}


#: Versions of the pre-registered hypotheses: ``analyses/registry/<version>/`` holds
#: ``hypotheses/`` (one file per hypothesis), ``lock.json`` (written before any outcome was
#: read) and, for an amended version, ``AMENDMENT.md`` / ``amendment.json``.
REGISTRY_ROOT = REPO_ROOT / "analyses" / "registry"
#: The version the main study tests (v2: amendment 1, NIHSS in the primary models and the
#: outcome model's maps as a family; v1 stays verifiable beside it).
REGISTRY_VERSION = "v2"


def registry_dir(version: str = REGISTRY_VERSION) -> Path:
    """Folder of one registry version (``analyses/registry/<version>``)."""
    return REGISTRY_ROOT / version


def registry_version_of(hypotheses: str | Path) -> str | None:
    """The version name of a hypotheses folder inside ``analyses/registry`` (None for a
    folder elsewhere, e.g. a researcher's own registry)."""
    p = Path(hypotheses).resolve()
    if p.name == "hypotheses" and p.parent.parent == REGISTRY_ROOT.resolve():
        return p.parent.name
    return None


def data_dir() -> Path:
    """Root folder for generated cohorts."""
    return Path(os.environ.get("HYPO_DATA", REPO_ROOT / "data"))


def cache_dir() -> Path:
    """Root folder for derived caches (slice stores, CAMs, anatomy)."""
    return Path(os.environ.get("HYPO_CACHE", REPO_ROOT / "cache"))


def default_cohort_dir(which: str = "dev") -> Path:
    """Folder of an embedded default synthetic cohort (``"dev"`` or ``"analysis"``)."""
    spec = {"dev": DEV_COHORT, "analysis": ANALYSIS_COHORT}[which]
    return data_dir() / "synthetic" / f"{spec['name']}-n{spec['patients']}-s{spec['seed']}"
