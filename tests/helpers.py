"""Helpers shared by the test modules."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# RELIABILITY_ITERATIONS scales the reliability loops (default 1; try 10 for a long run).
SCALE = max(1, int(os.environ.get("RELIABILITY_ITERATIONS", "1")))


def scaled(n: int) -> int:
    return n * SCALE


def rebalance_doc(when: datetime | None = None, **extra) -> bytes:
    """A valid last_rebalance.json; `extra` keys make each one distinct."""
    when = when or datetime.now(timezone.utc) - timedelta(days=1)
    return json.dumps({"timestamp": when.isoformat(), **extra}).encode()
