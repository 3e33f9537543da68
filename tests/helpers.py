"""Helpers shared by the test modules."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# RELIABILITY_ITERATIONS scales the reliability loops (default 1; try 10 for a long run).
SCALE = max(1, int(os.environ.get("RELIABILITY_ITERATIONS", "1")))


def scaled(n: int) -> int:
    return n * SCALE


def rebalance_doc(when: datetime | None = None, **extra) -> bytes:
    """A valid last_rebalance.json; `extra` keys make each one distinct."""
    when = when or datetime.now(UTC) - timedelta(days=1)
    return json.dumps({"timestamp": when.isoformat(), **extra}).encode()


def refused_port() -> int:
    """A local port nobody listens on: connecting is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Endpoint:
    """A moto S3 server on 127.0.0.1 that a test can stop and start again on the same
    port. Buckets live in moto's process memory, so they survive a restart."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._server_class = ThreadedMotoServer
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.host, self.port = self.server.get_host_and_port()
        self.url = f"http://{self.host}:{self.port}"

    def stop(self):
        self.server.stop()

    def start(self):
        self.server = self._server_class(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()


def two_backups(state_file: Path):
    """Back up an older and a newer version of `state_file`, then delete it.

    Returns (manager, the older content, the newest backup's path)."""
    from backup_manager import BackupManager

    bm = BackupManager()
    older = rebalance_doc(n="older")
    state_file.write_bytes(older)
    bm.backup_state_file(state_file)
    state_file.write_bytes(rebalance_doc(n="newer"))
    newest = bm.backup_state_file(state_file)
    state_file.unlink()
    return bm, older, newest
