"""Worker processes by default (HYPO_WORKERS, else the machine's cores, capped)."""

from __future__ import annotations

import os

import pytest

from hypo._util import MAX_DEFAULT_WORKERS, env_workers


def test_workers_follow_the_environment_else_the_cores(monkeypatch):
    from hypo.features.anatomy import PARALLEL_MIN_PATIENTS, _anatomy_workers
    from hypo.study.secondary import secondary_workers

    monkeypatch.delenv("HYPO_WORKERS", raising=False)
    cores = max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))
    assert env_workers() == cores
    assert secondary_workers(12) == min(cores, 12) and secondary_workers(1) == 1
    assert _anatomy_workers(None, PARALLEL_MIN_PATIENTS - 1) == 1  # too small to pay
    assert _anatomy_workers(None, 200) == cores
    monkeypatch.setenv("HYPO_WORKERS", "1")  # a busy machine: everything in-process
    assert env_workers() == 1 and secondary_workers(12) == 1 and _anatomy_workers(None, 200) == 1
    monkeypatch.setenv("HYPO_WORKERS", "3")
    assert secondary_workers(12) == 3 and secondary_workers(12, workers=1) == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("HYPO_WORKERS", bad)
        with pytest.raises(ValueError, match="HYPO_WORKERS"):
            env_workers()
