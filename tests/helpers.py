"""Helpers shared by the test modules."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# RELIABILITY_ITERATIONS scales the reliability loops (default 1; try 10 for a long run).
SCALE = max(1, int(os.environ.get("RELIABILITY_ITERATIONS", "1")))


def scaled(n: int) -> int:
    return n * SCALE


def with_project_python(folder):
    """Give `folder` the virtual environment Quick start makes, at .venv/bin/python
    (this test's interpreter, which has the dependencies)."""
    venv_python = folder / ".venv" / "bin" / "python"
    if not venv_python.exists():
        venv_python.parent.mkdir(parents=True)
        venv_python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        venv_python.chmod(0o755)
    return folder


def fresh_checkout(folder):
    """A copy of this checkout as a fresh clone has it: nothing .gitignore keeps out
    (no state/, backups/, logs/, .venv/), then the Quick start's .venv."""
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")]
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(".git", *ignored))
    return with_project_python(folder)


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

        self.server_class = ThreadedMotoServer
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.host, self.port = self.server.get_host_and_port()
        self.url = f"http://{self.host}:{self.port}"

    def stop(self):
        self.server.stop()

    def start(self):
        self.server = self.server_class(ip_address="127.0.0.1", port=self.port, verbose=False)
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


# --- the backups folder ----------------------------------------------------------


def backups_of(folder: Path, stem: str = "last_rebalance") -> list[str]:
    """Names of the backups of `stem` in `folder` (sidecars left out), sorted."""
    return sorted(p.name for p in folder.glob(f"{stem}_*") if not p.name.endswith(".sha256"))


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


LEGACY = "last_rebalance_2026-02-17_10-30-00.json"


def plant(folder: Path, stem: str, when: datetime, data: bytes | None = None,
          sidecar: bool = True) -> str:
    """A backup of `stem`.json taken at `when` in `folder`, with its sidecar unless not."""
    from backup_manager.formats import format_backup_name

    data = data if data is not None else rebalance_doc(n=str(when))
    name = format_backup_name(stem, ".json", when)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    if sidecar:
        (folder / (name + ".sha256")).write_text(f"{sha256_text(data)}  {name}\n")
    return name


def sha256_text(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def plant_legacy(project: Path, content: bytes, name: str = LEGACY) -> None:
    """A backup and its sidecar as the original module named them (or under `name`)."""
    folder = project / "backups"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    digest = __import__("hashlib").sha256(content).hexdigest()
    (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")


# --- S3 over HTTP ----------------------------------------------------------------

FAST = {"connect_timeout": 0.5, "read_timeout": 0.5}


def cloud_manager(endpoint: str, bucket: str, **kw):
    """A BackupManager sending to `bucket` at `endpoint`, with short timeouts."""
    from backup_manager import BackupManager

    kw.setdefault("s3_client_config", FAST)
    return BackupManager(cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=endpoint,
                         s3_region="us-east-1", **kw)


def remote_keys(endpoint: str, bucket: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def count_requests(manager, operation: str = "*") -> list[str]:
    """Count HTTP requests the manager's client sends (each retry counts)."""
    sent = []
    manager.cloud.client.meta.events.register(
        f"before-send.s3.{operation}", lambda request, **_: sent.append(request.method))
    return sent


def stubbed(bm):
    """A botocore Stubber on the manager's own client, active."""
    from botocore.stub import Stubber

    stub = Stubber(bm.cloud.client)
    stub.activate()
    return stub


class SilentEndpoint:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a hung
    S3 endpoint. Its accept loop is bounded: it ends when the test is done, or after
    `lifetime` seconds at the latest, and closes what it accepted."""

    def __init__(self, lifetime=60.0):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted = []
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + lifetime
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                continue

    def close(self):
        self.stopping.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.server.close()


# --- DalioLite with the cloud ------------------------------------------------------


def cloud_home(tmp_path: Path, endpoint: str, bucket: str, **extra) -> Path:
    """A DalioLite home whose config.yaml sends backups to `bucket` at `endpoint`."""
    import yaml

    home = tmp_path / "bot"
    home.mkdir(exist_ok=True)
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=endpoint,
                         s3_region="us-east-1", **extra)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    return home


def run_bot(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                           str(home / "config.yaml")], capture_output=True, text=True,
                          timeout=120)


# --- refusals ----------------------------------------------------------------------


def refusal_of(stderr: str) -> tuple[str, list[str], list[str]]:
    """(headline, reason lines, commands) of the refusal a run logged: the numbered
    commands without their '  # why' comments, ready to run."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "refusing to trade: " in line)
    headline = lines[start].split("refusing to trade: ", 1)[1]
    reasons, commands = [], []
    for line in lines[start + 1:]:
        if line.startswith("Details:"):
            break
        numbered = re.match(r"  \d+\. (.*)", line)
        if numbered:
            commands.append(numbered[1].split("  # ")[0])
        elif line.startswith("  ") and not commands:
            reasons.append(line.strip())
    return headline, reasons, commands


# --- an S3 endpoint that misbehaves ---------------------------------------------------


SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    """HTTP proxy to an S3 endpoint that injects faults on request: `fail_503` answers
    the next N requests 503 SlowDown, `reads_503` every GET and HEAD, `busy` every
    request for a key ending in one of its entries; `drop` closes the next N connections
    unanswered; `delay` holds each request. `kill(pid, method, path_end)` SIGKILLs a
    process when its request arrives and drops it (a process dying between two of its
    requests); `meanwhile(action, method, path_end)` runs `action()` first (another
    process a step ahead), then passes the request on."""

    def __init__(self, upstream_port):
        self.fail_503 = 0
        self.reads_503 = False  # every GET and HEAD answered 503: writes still go through
        self.busy: set[str] = set()
        self.drop = 0
        self.delay = 0.0
        self.requests = 0
        self.trap: tuple[str, str, object, bool] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path.split("?")[0]
                trap = proxy.trap
                if trap and self.command == trap[0] and path.endswith(trap[1]):
                    proxy.trap = None
                    trap[2]()
                    if trap[3]:
                        self.close_connection = True
                        return
                if proxy.drop > 0:
                    proxy.drop -= 1
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if proxy.fail_503 > 0 or (proxy.reads_503 and self.command in ("GET", "HEAD")) \
                        or any(path.endswith(end) for end in proxy.busy):
                    proxy.fail_503 = max(0, proxy.fail_503 - 1)
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                time.sleep(proxy.delay)
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kill(self, pid, method, path_end):
        self.trap = (method, path_end, lambda: os.kill(pid, signal.SIGKILL), True)

    def meanwhile(self, action, method, path_end):
        self.trap = (method, path_end, action, False)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
