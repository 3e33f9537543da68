"""Orders are placed once, and one writer per history: what the intent before the
orders costs a rebalancing run.

Local (backups/ only): the intent's commit (a restore point naming four orders, its
manifest and sidecar) against the rebalance's own commit in the same run (two state
files backed up and their point), each timed and its fsyncs counted, against the floor
of two durable files. On S3 (moto on 127.0.0.1): the fence before the orders (the
intent created in the bucket first, exclusively), requests counted, against the same
point committed without fencing (here first, then copied), and the check made before
each order (no other writer's point after the intent). Samples are interleaved.

    python bench/intents.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import durable_write_floor, machine, measure_interleaved, print_table, ratio

from backup_manager import BackupManager

ORDERS = [{"client_order_id": f"daliolite-000000000000-20261206T000000Z-00000{n}",
           "symbol": symbol, "side": "buy", "notional": 10_000.0 * (n + 1)}
          for n, symbol in enumerate(("DBC", "GLD", "TLT", "VTI"))]
GENEROUS = {"keep_last": 36_500, "keep_daily": 36_500, "retention_days": 36_500}


class FsyncCounter:
    """Counts os.fsync calls (every durable step of the package syncs through it on
    Linux) made inside `count(fn)`."""

    def __init__(self) -> None:
        self.real = os.fsync

    def count(self, fn: Callable[[], object]) -> int:
        calls = [0]

        def counted(fd: int) -> None:
            calls[0] += 1
            self.real(fd)

        os.fsync = counted
        try:
            fn()
        finally:
            os.fsync = self.real
        return calls[0]


def run_state(home: Path) -> tuple[BackupManager, Callable[[], None], Callable[[], None]]:
    """A manager over two state files, a function that changes both (a rebalance's
    date and status) and the rebalance's commit of them."""
    state = home / "state"
    state.mkdir(parents=True)
    files = [state / "last_rebalance.json", state / "autopilot_status.json"]
    bm = BackupManager(home / "backups", state_files=files, **GENEROUS)
    n = [0]

    def change() -> None:
        n[0] += 1
        for path in files:
            path.write_text(json.dumps({"timestamp": "2026-12-06T15:45:00+00:00", "n": n[0],
                                        "pad": "x" * 300}))

    def rebalance() -> None:
        with bm.changes("run", "daily check: rebalanced", details={"settles": []}):
            for path in files:
                bm.backup_state_file(path)

    return bm, change, rebalance


def intent_of(bm: BackupManager) -> Callable[[], None]:
    return lambda: bm.claim_point("orders", "intent: 4 order(s)",
                                  details={"orders": ORDERS})


def local_table(runs: int, folder: Path) -> None:
    floor = folder / "floor"
    floor.mkdir()
    one = durable_write_floor(floor)
    bm, change, rebalance = run_state(folder / "bot")
    change()
    rebalance()
    cases = {"floor": (lambda: (one(), one()), None),
             "intent": (intent_of(bm), None),
             "rebalance": (rebalance, change)}
    stats = measure_interleaved(cases, runs)
    counter = FsyncCounter()
    fsyncs = {"floor": counter.count(cases["floor"][0]),
              "intent": counter.count(cases["intent"][0])}
    change()
    fsyncs["rebalance"] = counter.count(rebalance)
    rows = [["floor: 2 durable files (temp, write, fsync, rename, folder sync)",
             stats["floor"].cell(), fsyncs["floor"], "1.00x"],
            ["the intent before the orders (point naming 4 orders: manifest, sidecar)",
             stats["intent"].cell(), fsyncs["intent"], ratio(stats["intent"], stats["floor"])],
            ["the rebalance's commit (2 state files backed up, their point)",
             stats["rebalance"].cell(), fsyncs["rebalance"],
             ratio(stats["rebalance"], stats["floor"])]]
    print_table(f"The intent's commit in a rebalancing run, backups/ only ({runs} runs; "
                f"the intent adds {ratio(stats['intent'], stats['rebalance'])} of the "
                "rebalance's own commit)",
                ["what", "ms (median [min-max])", "fsyncs", "vs floor"], rows)


def s3_table(runs: int, folder: Path) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench")
        bm = BackupManager(folder / "cloud", cloud_enabled=True, s3_bucket="bench",
                           s3_endpoint_url=endpoint, s3_region="us-east-1", **GENEROUS)
        sent: list[str] = []
        bm.cloud.client.meta.events.register(
            "before-send.s3.*", lambda request, **_: sent.append(request.method))

        def unfenced() -> None:
            bm.commit_point("orders", "intent: 4 order(s)", details={"orders": ORDERS},
                            force=True)

        def check() -> None:
            bm.moved_past(9_999_998)  # the run's own case: no point follows its intent

        cases = {"fenced": (intent_of(bm), None), "unfenced": (unfenced, None),
                 "check": (check, None)}
        stats = measure_interleaved(cases, runs)
        requests = {}
        for key, (fn, _) in cases.items():
            sent.clear()
            fn()
            requests[key] = f"{len(sent)} ({', '.join(sorted(set(sent)))})"
        rows = [["fenced: created in the bucket first (PUT If-None-Match: *), then here",
                 stats["fenced"].cell(), requests["fenced"], ratio(stats["fenced"],
                                                                   stats["unfenced"])],
                ["not fenced: committed here, then copied to the bucket",
                 stats["unfenced"].cell(), requests["unfenced"], "1.00x"],
                ["before each order: no other writer's point after the intent (here, "
                 "and the bucket)", stats["check"].cell(), requests["check"],
                 ratio(stats["check"], stats["unfenced"])]]
        print_table(f"The fence before the orders on S3 (moto on 127.0.0.1, {runs} runs)",
                    ["what", "ms (median [min-max])", "requests", "vs not fenced"], rows)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        local_table(args.runs, Path(tmp))
        s3_table(args.runs, Path(tmp))


if __name__ == "__main__":
    main()
