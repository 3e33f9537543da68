"""Cloud cost: requests per backup and added latency against a moto server on
127.0.0.1, and the bounded time of one backup call when the endpoint is down."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import STATE_1K, Stats, machine, measure, print_table

from backup_manager import BackupManager
from backup_manager.s3 import DEFAULT_CLIENT_CONFIG


def refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def silent_url() -> tuple[str, socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)],
                     daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", server


def full_backlog_url() -> tuple[str, list[socket.socket]]:
    """A port whose accept queue is full: the kernel drops new connection attempts,
    as a host that is down or firewalled does, so connecting times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    held = [server]
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
        held.append(filler)
    time.sleep(0.2)
    return f"http://127.0.0.1:{server.getsockname()[1]}", held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        sys.exit("needs boto3 and moto[server]: pip install -e '.[test]'")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="bench")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dalio-bench-cloud-") as tmp:
        state = Path(tmp) / "s.json"
        state.write_bytes(STATE_1K)
        local = measure(lambda: BackupManager(Path(tmp) / "local").backup_state_file(state),
                        args.runs)
        bm = BackupManager(Path(tmp) / "cloud", cloud_enabled=True, s3_bucket="bench",
                           s3_endpoint_url=url, s3_region="us-east-1")
        sent = []
        bm.cloud.client.meta.events.register("before-send.s3.*",
                                             lambda request, **_: sent.append(request.method))
        bm.backup_state_file(state)
        sent.clear()
        cloud = measure(lambda: bm.backup_state_file(state), args.runs, warmup=0)
        per_backup = len(sent) / args.runs
        methods = sorted(set(sent))
        rows.append(["local only", local.cell(), "", ""])
        rows.append(["with cloud (moto on 127.0.0.1)", cloud.cell(),
                     f"+{cloud.median - local.median:.2f} ms",
                     f"{per_backup:g} requests per backup ({', '.join(methods)})"])
        limits = DEFAULT_CLIENT_CONFIG
        client = (f"default client: connect {limits['connect_timeout']} s, read "
                  f"{limits['read_timeout']} s, {limits['retries']['total_max_attempts']} attempt")
        dropping, held = full_backlog_url()  # the sockets must stay open while measured
        for label, endpoint in [("endpoint refusing connections", refused_url()),
                                ("endpoint dropping connection attempts", dropping),
                                ("endpoint accepting but never answering", silent_url()[0])]:
            down = []
            for _ in range(3):
                manager = BackupManager(Path(tmp) / "down", cloud_enabled=True,
                                        s3_bucket="bench", s3_endpoint_url=endpoint,
                                        s3_region="us-east-1")
                start = time.perf_counter()
                manager.backup_state_file(state)
                down.append(time.perf_counter() - start)
            stats = Stats(down)
            rows.append([label + ", one backup call", stats.cell(), "", client])
    server.stop()
    for sock in held:
        sock.close()
    print(f"machine: {machine()}; runs: {args.runs}")
    print_table("Cloud, ms: median [min-max]", ["case", "time", "added", "notes"], rows)


if __name__ == "__main__":
    main()
