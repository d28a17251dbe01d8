"""Figures that tests measure (fault injection, campaigns), printed at the end of the run and
kept in test-artifacts/figures.txt. Loaded as a pytest plugin (``-p tests.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_FIGURES: list[tuple[str, str]] = []
ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "figures.txt"


def figure(section: str, line: str) -> None:
    _FIGURES.append((section, line))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("measured figures")
    lines = [f"{section}: {line}" for section, line in _FIGURES]
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n")
