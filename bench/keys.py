"""Signed copies: what a key costs a backup. One backup call (local backup, restore
point, and the copies of both to a mirror folder and to S3 on a moto server on
127.0.0.1) without a key, with a key (HMAC-SHA256 in each sidecar), and with a key and
encryption (AES-256-GCM), sampled in turn in one run; ratios against no key."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import Stats, machine, measure_interleaved, print_table

from backup_manager import BackupManager
from backup_manager.keys import KeySource, init_key_file
from backup_manager.seal import Sealing


def manager(root: Path, endpoint: str, bucket: str, sealing: Sealing | None) -> BackupManager:
    return BackupManager(root / "backups", mirror_dirs=[root / "mirror"], cloud_enabled=True,
                         s3_bucket=bucket, s3_endpoint_url=endpoint, s3_region="us-east-1",
                         sealing=sealing)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 10 if args.quick else args.runs
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            key = base / "backup.key"
            init_key_file(key)
            cases = {}
            for label, sealing in (("no key", None),
                                   ("key (signed)", Sealing(KeySource(file=key))),
                                   ("key + encrypt", Sealing(KeySource(file=key), True))):
                root = base / label.replace(" ", "-").replace("(", "").replace(")", "")
                (root / "state").mkdir(parents=True)
                bucket = "bench-" + str(len(cases))
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"
                             ).create_bucket(Bucket=bucket)
                bm = manager(root, endpoint, bucket, sealing)
                state = root / "state" / "last_rebalance.json"
                counter = iter(range(10 ** 9))

                def change(state=state, counter=counter) -> None:
                    state.write_text(json.dumps({"timestamp": "2026-02-17T10:30:00+00:00",
                                                 "n": next(counter), "note": "x" * 900}))

                cases[label] = (lambda bm=bm, state=state: bm.backup_state_file(state),
                                change)
            stats: dict[object, Stats] = measure_interleaved(cases, runs)
    finally:
        server.stop()
    floor = stats["no key"]
    rows = [[label, s.cell(), f"{s.median / floor.median:.2f}x"] for label, s in stats.items()]
    print(f"machine: {machine()}; {runs} runs", file=sys.stderr)
    print_table("One backup call with copies to a mirror and S3 (moto, 127.0.0.1): ms, "
                "median [min-max]", ["case", "ms", "vs no key"], rows)


if __name__ == "__main__":
    main()
