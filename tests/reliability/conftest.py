"""Reliability suites: real processes, real kills, real faults.

RELIABILITY_ITERATIONS scales every loop (default 1: a few minutes in CI;
try 10 for a long run). Each suite prints what it tried and what survived.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def report(request, capsys):
    """Print a figure line that survives pytest's capture (shown with -s or -rA)."""
    lines = []
    yield lines.append
    with capsys.disabled():
        for line in lines:
            print(f"\n[reliability] {request.node.name}: {line}", end="")
