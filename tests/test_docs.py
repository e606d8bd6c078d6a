"""Docs that cannot drift: every Python block of the READMEs runs, every documented command
parses.

Python blocks (```python) of README.md and models/README.md run as written, in order within
a file, in one namespace per file, with ``HYPO_DATA``/``HYPO_CACHE`` in a temporary folder
(blocks use quick sizes). Every ``python -m <module> ...`` a README documents (code blocks
and inline code) is handed to that module's ``main(argv)`` with argument parsing stopped
right after it succeeds: long runs are not run, but a renamed option, a removed module or a
wrong positional fails here.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import isolate_hypo

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "models/README.md"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def documented_commands(text: str) -> list[str]:
    """``python -m ...`` commands of code blocks and inline code, continuation lines
    joined, comments dropped."""
    cmds = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        cmds += [ln.strip() for ln in joined.splitlines() if ln.strip().startswith("python -m")]
    cmds += [c.strip() for c in re.findall(r"`(python -m [^`]+)`", text)]
    return [re.sub(r"\s+#.*$", "", c) for c in cmds]


def normalised_argv(cmd: str) -> tuple[str, list[str]]:
    """Module and arguments of a documented command: optional ``[...]`` parts dropped,
    ``a|b`` alternatives reduced to the first, ``<name>`` placeholders filled."""
    cmd = re.sub(r"\[[^\[\]]*\]", " ", cmd)
    cmd = re.sub(r"\[[^\[\]]*\]", " ", cmd)
    cmd = re.sub(r"([\w.-]+)(?:\|[\w.-]+)+", r"\1", cmd)
    cmd = re.sub(r"<([^>]+)>", r"\1", cmd)
    parts = shlex.split(cmd)
    return parts[2], parts[3:]


class _Parsed(Exception):
    pass


def _all_commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for cmd in documented_commands((ROOT / doc).read_text(encoding="utf-8")):
            # ``python -m analyses.<name>`` names the pattern, not a command
            if cmd.split()[2].startswith("analyses.<"):
                continue
            if (doc, cmd) not in out:
                out.append((doc, cmd))
    return out


@pytest.mark.parametrize("doc, cmd", _all_commands(), ids=lambda x: str(x)[:60])
def test_documented_command_parses(doc, cmd, monkeypatch, tmp_path):
    isolate_hypo(monkeypatch, tmp_path)
    module, argv = normalised_argv(cmd)
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        ns = real(self, args, namespace)
        raise _Parsed(ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    mod = importlib.import_module(module if module.endswith("__main__") else module)
    main = getattr(mod, "main", None)
    if main is None:
        mod = importlib.import_module(f"{module}.__main__")
        main = mod.main
    try:
        main(argv)
    except _Parsed:
        return
    except SystemExit as e:
        pytest.fail(f"{doc}: `{cmd}` does not parse (exit {e.code})")
    pytest.fail(f"{doc}: `{cmd}` returned without parsing its arguments")


@pytest.mark.parametrize("doc", DOCS)
def test_python_blocks_run_as_written(doc, monkeypatch, tmp_path):
    blocks = python_blocks((ROOT / doc).read_text(encoding="utf-8"))
    isolate_hypo(monkeypatch, tmp_path)
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{doc}[python block {i + 1}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - the failing block is named
            pytest.fail(f"{doc}, python block {i + 1} fails: {type(e).__name__}: {e}\n{block}")
