"""Shared pytest fixtures; the builders themselves live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def tiny_cohort(tmp_path):
    """Folder of a valid 3-patient cohort (float32 DWI, lesion masks), see make_tiny_cohort."""
    from tests.helpers import make_tiny_cohort

    return make_tiny_cohort(tmp_path)


@pytest.fixture
def hypo_cache(tmp_path_factory, monkeypatch):
    """Point HYPO_CACHE at a fresh folder so a test neither reads nor leaves cached state."""
    cache = tmp_path_factory.mktemp("hypo_cache")
    monkeypatch.setenv("HYPO_CACHE", str(cache))
    return cache
