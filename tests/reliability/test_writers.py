"""One writer per history (promise 13), through real processes on one moto server on
127.0.0.1: a machine that comes back after another took the history over refuses and
writes nothing a later restore takes as newest; a new machine restores one point,
whole; two instances racing the same claim place orders once; a cloned writer id is a
fork; --take-over; the cloud unseen with and without backup.require_fence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import boto3
import pytest
import yaml

from backup_manager import BackupManager
from tests.helpers import ROOT, FaultProxy, refusal_of

STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")
TIMEOUT = 120


@pytest.fixture
def bucket(moto_server):
    name = f"writers-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=name)
    return moto_server, name


def machine(tmp_path, name, endpoint, bucket, **backup):
    """A DalioLite installation sending its history to the shared bucket."""
    home = tmp_path / name
    home.mkdir()
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=endpoint,
                         s3_region="us-east-1", **backup)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    return home


def run(home, *args, days=0):
    command = [sys.executable, str(ROOT / "dalio_lite.py"), "--config",
               str(home / "config.yaml"), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if days:
        if shutil.which("faketime") is None:
            pytest.skip("faketime is not installed (apt-get install faketime); CI installs it")
        command = ["faketime", "-f", f"+{days}d", *command]
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return subprocess.run(command, cwd=home.parent, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def orders_in(proc):
    return [line for line in proc.stderr.splitlines() if "order:" in line]


def move_prices(home):
    config = home / "config.yaml"
    config.write_text(config.read_text().replace("VTI: 250.0", "VTI: 400.0"))


def keys(endpoint, bucket):
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return {o["Key"]: o["ETag"] for o in
            client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def writer_of(home):
    """The writer id: the first line of backups/.writer (the second names its folder)."""
    return (home / "backups" / ".writer").read_text().splitlines()[0]


def image_of(home, clone):
    """`clone`: a block-level image of `home` (a VM's disk restored elsewhere), which
    keeps even the folder backups/.writer names: the same writer id, unnoticed."""
    shutil.copytree(home, clone)
    folder = clone / "backups"
    (folder / ".writer").write_text(
        f"{writer_of(home)}\n{os.stat(folder).st_ino} {os.path.realpath(folder)}\n")


def test_a_machine_that_comes_back_after_another_took_over_refuses(tmp_path, bucket):
    endpoint, name = bucket
    a = machine(tmp_path, "a", endpoint, name)
    assert run(a).returncode == 0  # day 0: A rebalances
    b = machine(tmp_path, "b", endpoint, name)  # A's machine is thought gone: B from S3
    move_prices(b)
    b_day = run(b, days=31)
    assert b_day.returncode == 0, b_day.stderr
    assert orders_in(b_day), "B rebalances on day 31"
    assert writer_of(a) != writer_of(b)
    before = keys(endpoint, name)
    back = run(a, days=32)  # A comes back: a VM resumed, a disk snapshot restored
    assert back.returncode == 3, back.stderr
    assert orders_in(back) == []
    headline, reasons, commands = refusal_of(back.stderr)
    assert headline == "another machine has moved this history on"
    assert f"writer {writer_of(b)}" in reasons[0]
    assert any(c.endswith("restore --all --yes") for c in commands)
    assert any(c.endswith("--take-over") for c in commands)
    assert keys(endpoint, name) == before, "the refusing machine wrote into the bucket"
    c = machine(tmp_path, "c", endpoint, name)
    c_day = run(c, days=33)
    assert c_day.returncode == 0, c_day.stderr
    newest = BackupManager.from_config(b / "config.yaml").history().newest()
    bm = BackupManager.from_config(c / "config.yaml")
    for state_file in STATE_FILES[:2]:  # C's run then writes its own autopilot status
        assert (c / "state" / state_file).read_bytes() == bm.entry_data(newest, state_file), \
            f"{state_file} does not come from B's point"
    assert orders_in(c_day) == []


def test_take_over_on_purpose(tmp_path, bucket):
    endpoint, name = bucket
    a = machine(tmp_path, "a", endpoint, name)
    assert run(a).returncode == 0
    b = machine(tmp_path, "b", endpoint, name)
    assert run(b, days=1).returncode == 0  # B adopts A's history and moves it on
    assert run(a, days=2).returncode == 3
    took = run(a, "--take-over", days=2)
    assert took.returncode == 0, took.stderr
    newest = BackupManager.from_config(a / "config.yaml").history().newest()
    assert (newest.kind, newest.writer) in {("take-over", writer_of(a)), ("run", writer_of(a))}
    kinds = [p.kind for p in BackupManager.from_config(a / "config.yaml").history()]
    assert "take-over" in kinds
    assert run(a, days=3).returncode == 0, "taken over, the history is A's"
    refused = run(b, days=3)
    assert refused.returncode == 3, "and B, the other writer now, refuses"
    assert f"writer {writer_of(a)}" in refusal_of(refused.stderr)[1][0]


def test_two_instances_racing_for_the_same_claim_place_orders_once(tmp_path, bucket):
    endpoint, name = bucket
    a = machine(tmp_path, "a", endpoint, name)
    assert run(a).returncode == 0
    b = machine(tmp_path, "b", endpoint, name)
    shutil.copytree(a / "state", b / "state")  # the same history: two redeploys at once
    for home in (a, b):
        move_prices(home)
    command = [[sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                str(home / "config.yaml"), "--force-rebalance"] for home in (a, b)]
    procs = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for c in command]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], "\n=====\n".join(errs)
    placed = sorted(len([ln for ln in e.splitlines() if "order:" in ln]) for e in errs)
    assert placed[0] == 0 and placed[1] > 0, f"exactly one places its orders: {placed}"
    refused = next(e for p, e in zip(procs, errs, strict=True) if p.returncode == 3)
    assert "another machine has moved this history on" in refused or \
        "another writer committed it first" in refused, refused


def test_a_cloned_writer_id_is_a_fork(tmp_path, bucket):
    endpoint, name = bucket
    a = machine(tmp_path, "a", endpoint, name)
    assert run(a).returncode == 0
    clone = tmp_path / "clone"
    image_of(a, clone)
    (clone / "config.yaml").write_text((a / "config.yaml").read_text())
    assert writer_of(clone) == writer_of(a)
    proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1]))
    try:
        for home in (a, clone):  # both run while the bucket cannot be reached
            doc = yaml.safe_load((home / "config.yaml").read_text())
            doc["backup"]["s3_endpoint_url"] = proxy.url
            (home / "config.yaml").write_text(yaml.safe_dump(doc))
        proxy.fail_503 = 10_000
        for home in (a, clone):
            account = json.loads((home / "state" / "paper_account.json").read_text())
            account["cash"] += 1.0 if home is a else 2.0  # each its own change
            (home / "state" / "paper_account.json").write_text(json.dumps(account))
            assert run(home).returncode == 0
        proxy.fail_503 = 0
        assert subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                               str(a / "config.yaml"), "sync"], capture_output=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0
        forked = run(clone)
        assert forked.returncode == 3, forked.stderr
        headline, reasons, commands = refusal_of(forked.stderr)
        assert headline == "the history has forked: two machines wrote the same point"
        assert any(c.endswith("--take-over") for c in commands)
        status = subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                                 str(clone / "config.yaml"), "--json", "status"],
                                capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert any(p["kind"] == "host-refuses" and "forked" in p["problem"]
                   for p in json.loads(status.stdout)["problems"])
        took = run(clone, "--take-over")
        assert took.returncode == 0, took.stderr
        assert list((clone / "backups" / "forks").glob("point-*.json")), "kept, not deleted"
        assert run(clone).returncode == 0
    finally:
        proxy.close()


@pytest.mark.parametrize("require_fence", [False, True])
def test_the_cloud_unseen_with_every_file_live(tmp_path, bucket, require_fence):
    endpoint, name = bucket
    proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1]))
    try:
        home = machine(tmp_path, "a", proxy.url, name, require_fence=require_fence)
        assert run(home).returncode == 0
        proxy.fail_503 = 10_000
        move_prices(home)
        done = run(home, "--force-rebalance")
        if require_fence:
            assert done.returncode == 3, done.stderr
            assert orders_in(done) == []
            assert "require_fence" in done.stderr
        else:
            assert done.returncode == 0, done.stderr
            assert orders_in(done), "cloud trouble never blocks trading (promise 7)"
        status = subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                                 str(home / "config.yaml"), "--json", "status"],
                                capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        kinds = {p["kind"] for p in json.loads(status.stdout)["problems"]}
        assert "store-unseen" in kinds or "host-refuses" in kinds
    finally:
        proxy.close()
