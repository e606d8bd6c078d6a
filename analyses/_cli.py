"""Shared plumbing of the command lines: a run log, and errors as messages, not tracebacks.

    from analyses._cli import run_logged
    return run_logged("asymmetry_vs_mrs", lambda log: _main(args, log), refusals=(...))

Every run writes ``<HYPO_CACHE>/logs/<name>-<time>.log`` (the stage lines and, when it
fails, the traceback). A refusal (an error class the command expects: a cohort problem, a
changed registry) prints its message and exits 2; anything else prints one line naming the
log and exits 1. Nothing the user sees is a Python traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hypo.paths import cache_dir


def column_pairs(values) -> dict[str, str]:
    """``["mrs_3months=mRS_90d", ...]`` (``--column``) as a column map; an error names a
    malformed pair."""
    out = {}
    for v in values or ():
        ours, sep, theirs = str(v).partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise SystemExit(f"--column {v!r}: expected HYPO_NAME=YOUR_COLUMN, e.g. "
                             "mrs_3months=mRS_90d")  # fmt: skip
        out[ours.strip()] = theirs.strip()
    return out


def open_log(name: str) -> tuple[Path, Callable[[str], None]]:
    """A fresh log file and a ``say(message)`` that writes to it (and to stderr)."""
    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    logger = logging.getLogger(f"hypo.{name}.{os.getpid()}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    return path, logger.info


def run_logged(name: str, body: Callable[[Callable[[str], None]], int], refusals=()) -> int:
    """Run ``body(log)``; refusals -> their message (exit 2), other errors -> one line and
    the log's path (exit 1), the traceback in the log."""
    path, log = open_log(name)
    log(f"{name}: {' '.join(sys.argv)}")
    try:
        rc = body(log)
        log(f"finished with exit code {rc}")
        return rc
    except refusals as e:
        log(f"refused: {e}")
        print(f"{name}: refused: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        print(f"{name}: interrupted; completed stages are cached (log {path})", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - reported in one line, the traceback in the log
        log("failed:\n" + traceback.format_exc())
        print(f"{name}: failed: {type(e).__name__}: {e}\n  details: {path}", file=sys.stderr,
              flush=True)  # fmt: skip
        return 1
