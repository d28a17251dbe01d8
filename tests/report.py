"""Figures that tests measure (fault injection, campaigns), printed at the end of the run and
kept in test-artifacts/figures.txt. Loaded as a pytest plugin (``-p tests.report``).

Tests run in several pytest-xdist processes: each appends its figures to a file of its own,
and the process that prints the summary gathers them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARTIFACT = ARTIFACTS / "figures.txt"
_PARTS = ARTIFACTS / "figures.d"


def figure(section: str, line: str) -> None:
    _PARTS.mkdir(parents=True, exist_ok=True)
    with (_PARTS / f"{os.getpid()}.txt").open("a") as part:
        part.write(f"{section}: {line}\n")


def _is_controller(config: Any) -> bool:
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session: Any) -> None:
    if _is_controller(session.config):
        shutil.rmtree(_PARTS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    parts = sorted(_PARTS.glob("*.txt")) if _PARTS.exists() else []
    lines = sorted(line for part in parts for line in part.read_text().splitlines())
    if not lines:
        return
    terminalreporter.section("measured figures")
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACT.write_text("\n".join(lines) + "\n")
