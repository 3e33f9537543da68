"""Signed copies (issue 22, promise 14), through real processes: DalioLite runs and the
command line against a mirror folder and a moto server on 127.0.0.1. Anyone who can write
to the mirror or the bucket plants, changes, renames or replays objects; with a key, a
new machine refuses every one of them, reports them, installs none, and restores the
newest genuine point."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import yaml

from tests.helpers import ROOT

STATE_FILES = ("last_rebalance.json", "paper_account.json")
TIMEOUT = 120
PREFIX = "dalio-lite-backups"


def _env(extra=None):
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


def run(home, env=None):
    return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                           str(home / "config.yaml")], cwd=home.parent, capture_output=True,
                          text=True, env=_env(env), stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def cli(home, *args, env=None):
    return subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                           str(home / "config.yaml"), *map(str, args)], cwd=home,
                          capture_output=True, text=True, env=_env(env),
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def configure(home, **backup):
    doc = yaml.safe_load((home / "config.yaml").read_text())
    doc["backup"].update(backup)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))


def state(home, name="last_rebalance.json"):
    return home / "state" / name


@pytest.fixture
def site(tmp_path, moto_server):
    """A DalioLite install with a key, a mirror folder and a fresh bucket: (home, mirror,
    S3 client, bucket)."""
    home = tmp_path / "bot"
    home.mkdir()
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")
    bucket = f"signed-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    mirror = tmp_path / "mirror"
    configure(home, mirror_dirs=[str(mirror)], cloud_enabled=True, s3_bucket=bucket,
              s3_endpoint_url=moto_server, s3_region="us-east-1", key_file="backup.key")
    made = cli(home, "key", "init")
    assert made.returncode == 0, made.stderr
    return home, mirror, s3, bucket


def two_points(home):
    """A first run, then a rebalance recorded later: (point 1's, point 2's) bytes of
    last_rebalance.json."""
    assert run(home).returncode == 0
    older = state(home).read_bytes()
    state(home).write_text(json.dumps({"timestamp": datetime.now(UTC).isoformat()}))
    done = run(home)
    assert done.returncode == 0, done.stderr
    return older, state(home).read_bytes()


def new_machine(tmp_path, home, key=True):
    """Another machine: the same config.yaml (and key file), nothing else."""
    new = tmp_path / f"new-{uuid.uuid4().hex[:6]}"
    new.mkdir()
    shutil.copy(home / "config.yaml", new / "config.yaml")
    if key:
        shutil.copy(home / "backup.key", new / "backup.key")
    return new


class Stores:
    """Both off-machine stores, as an attacker with write access sees them."""

    def __init__(self, mirror, s3, bucket):
        self.mirror, self.s3, self.bucket = mirror, s3, bucket

    def names(self):
        return sorted(p.name for p in self.mirror.iterdir())

    def get(self, name):
        return (self.mirror / name).read_bytes()

    def put(self, name, data):
        """Write `data` as `name` in the mirror and in the bucket (replacing it)."""
        (self.mirror / name).write_bytes(data)
        self.s3.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{name}", Body=data)

    def put_with_sidecar(self, name, data, keep_signature_of=None):
        """An object and a sidecar that matches it (sha256sum would say OK); with
        `keep_signature_of`, that genuine sidecar's signature line is carried over."""
        import hashlib
        sidecar = f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        if keep_signature_of is not None:
            sidecar += self.get(keep_signature_of + ".sha256").decode().split("\n", 1)[1]
        self.put(name, data)
        self.put(name + ".sha256", sidecar.encode())


def newest_backup_name(stores, stem="last_rebalance"):
    return max(n for n in stores.names() if n.startswith(stem + "_") and n.endswith(".json"))


def point_doc(stores, number):
    return json.loads(stores.get(f"point-{number:010d}.json"))


def top_point(stores):
    return max(int(n[6:16]) for n in stores.names() if re.fullmatch(r"point-\d{10}\.json", n))


def pname(number):
    return f"point-{number:010d}.json"


def _planted(stores, top, when="2099-01-01T00:00:00+00:00"):
    """A backup named 2099 (last rebalanced `when`) with a sidecar that matches, and a
    newer point naming it."""
    name = "last_rebalance_2099-01-01_00-00-00.000000Z.json"
    data = json.dumps({"timestamp": when}).encode()
    stores.put_with_sidecar(name, data)
    doc = point_doc(stores, top)
    doc.update(sequence=top + 1, follows={"sequence": top, "sha256": _sha(stores.get(
        pname(top)))})
    doc["files"]["last_rebalance.json"] = {"backup": name, "sha256": _sha(data)}
    stores.put_with_sidecar(pname(top + 1), _encode(doc))
    return [name, pname(top + 1)]


def _modified(stores, top):
    """The newest point's last rebalance changed to a planted backup's, re-hashed, its
    signature line kept."""
    name = "last_rebalance_2099-01-01_00-00-00.000000Z.json"
    data = json.dumps({"timestamp": "2099-01-01T00:00:00+00:00"}).encode()
    stores.put_with_sidecar(name, data)
    doc = point_doc(stores, top)
    doc["files"]["last_rebalance.json"] = {"backup": name, "sha256": _sha(data)}
    stores.put_with_sidecar(pname(top), _encode(doc), keep_signature_of=pname(top))
    return [name, pname(top)]


def _renamed(stores, top):
    """An older point and a genuine backup, signed sidecars and all, under newer names."""
    old = point_doc(stores, top)["files"]["last_rebalance.json"]["backup"]
    newer = "last_rebalance_2099-01-01_00-00-00.000000Z.json"
    stores.put(newer, stores.get(old))
    stores.put(newer + ".sha256", stores.get(old + ".sha256").replace(old.encode(),
                                                                        newer.encode()))
    stores.put(pname(top + 1), stores.get(pname(top - 1)))
    stores.put(pname(top + 1) + ".sha256", stores.get(pname(top - 1) + ".sha256").replace(
        pname(top - 1).encode(), pname(top + 1).encode()))
    return [newer, pname(top + 1)]


def _replayed(stores, top):
    """Point 1's manifest replayed as the newest point (its number and chain rewritten so
    it reads as one), re-hashed, with point 1's genuine signature line."""
    doc = point_doc(stores, 1)
    doc.update(sequence=top + 1, follows={"sequence": top, "sha256": _sha(stores.get(
        pname(top)))})
    stores.put_with_sidecar(pname(top + 1), _encode(doc), keep_signature_of=pname(1))
    return [pname(top + 1)]


def _sha(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def _encode(doc):
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


ATTACKS = {"planted": _planted, "modified": _modified, "renamed": _renamed,
           "replayed": _replayed}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_new_machine_refuses_forged_objects_and_restores_the_newest_genuine_point(
        tmp_path, site, attack):
    home, mirror, s3, bucket = site
    older, newer = two_points(home)
    stores = Stores(mirror, s3, bucket)
    top = top_point(stores)
    before = {n: state(home, n).read_bytes() for n in STATE_FILES}
    forged = ATTACKS[attack](stores, top)
    key = cli(home, "key", "check")  # the newest point is forged: the key cannot open it
    assert key.returncode == 1, key.stdout
    assert f"FAILED: {mirror}: the newest point, {forged[-1]}, does not open" in key.stdout
    new = new_machine(tmp_path, home)
    done = run(new)
    if attack == "modified":  # the newest point is no point: the one before it is newest
        assert done.returncode in (0, 3), done.stderr
    else:
        assert done.returncode == 0, done.stderr
        for n in STATE_FILES:
            assert state(new, n).read_bytes() == before[n], f"{n}: not the newest point's"
    assert not state(new).exists() or "2099" not in state(new).read_text(), \
        "a forged object was installed"
    status = cli(new, "--json", "status")
    assert status.returncode == 1, status.stdout
    refused = problem_subjects(status)
    assert any(s.endswith("/" + forged[-1]) for s in refused), refused
    verify = cli(new, "--json", "verify", "--cloud")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "problems" in json.loads(verify.stdout), verify.stdout
    bad = {(p["location"], p["name"], p["status"])
           for p in json.loads(verify.stdout)["problems"]}
    for name in forged:
        assert (str(mirror), name, "not authenticated") in bad, bad
        assert (f"s3://{bucket}/{PREFIX}", name, "not authenticated") in bad, bad
    refused = problem_subjects(cli(new, "--json", "status"))
    for name in forged:  # verify read them all: status names each, in both stores
        assert f"{mirror}/{name}" in refused and f"s3://{bucket}/{PREFIX}/{name}" in refused


def problem_subjects(status):
    return {p["subject"] for p in json.loads(status.stdout)["problems"]
            if p["kind"] == "unauthenticated-copy"}


def test_without_the_key_the_same_forgery_is_installed(tmp_path, site):
    """What the key answers: the planted point that the signed install refuses is the one
    an install without a key takes (so the refusal above is the key's doing)."""
    home, mirror, s3, bucket = site
    two_points(home)
    stores = Stores(mirror, s3, bucket)
    stale = (datetime.now(UTC) - timedelta(days=45)).isoformat()
    _planted(stores, top_point(stores), stale)
    new = new_machine(tmp_path, home, key=False)
    configure(new, key_file=None)
    done = run(new)
    assert done.returncode == 0, done.stderr
    assert json.loads(state(new).read_text())["timestamp"] == stale, done.stderr
    signed = new_machine(tmp_path, home)
    assert run(signed).returncode == 0
    assert json.loads(state(signed).read_text())["timestamp"] != stale
    status = cli(new, "status")
    assert status.stdout.count("copies in mirrors and S3 are not authenticated") == 1


def test_a_wrong_key_installs_nothing_and_names_the_key_file(tmp_path, site):
    home, mirror, s3, bucket = site
    two_points(home)
    new = new_machine(tmp_path, home, key=False)
    assert cli(new, "key", "init").returncode == 0  # another key, same file name
    refused = run(new)
    assert refused.returncode == 3, refused.stderr
    assert not state(new).exists(), "nothing is installed with the wrong key"
    restore = cli(new, "restore", "--all", "--yes")
    assert restore.returncode == 1 and not state(new).exists()
    assert str(new / "backup.key") in restore.stderr + restore.stdout
    check = cli(new, "key", "check")
    assert check.returncode == 1
    assert f"which the key file {new / 'backup.key'} does not hold" in check.stdout
    status = json.loads(cli(new, "--json", "status").stdout)
    assert any(f"key file {new / 'backup.key'}" in p["problem"] for p in status["problems"])


def test_a_missing_key_installs_nothing_and_names_the_key_file(tmp_path, site):
    home, mirror, s3, bucket = site
    _, newer = two_points(home)
    new = new_machine(tmp_path, home, key=False)
    refused = run(new)
    assert refused.returncode == 3, refused.stderr
    assert f"key file {new / 'backup.key'} (backup.key_file) does not exist" in refused.stderr
    assert not state(new).exists()
    shutil.copy(home / "backup.key", new / "backup.key")  # put back from where it was kept
    done = run(new)
    assert done.returncode == 0, done.stderr
    assert state(new).read_bytes() == newer


def test_after_rotation_new_copies_use_the_new_key_and_old_copies_still_restore(
        tmp_path, site):
    home, mirror, s3, bucket = site
    assert run(home).returncode == 0
    stores = Stores(mirror, s3, bucket)
    old_top, first = top_point(stores), state(home).read_bytes()
    first_key = (home / "backup.key").read_text()
    rotated = cli(home, "key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_id = re.search(r"added key ([0-9a-f]{12})", rotated.stdout)[1]
    state(home).write_text(json.dumps({"timestamp": datetime.now(UTC).isoformat()}))
    assert run(home).returncode == 0
    top = top_point(stores)
    assert f"key={new_id} " in (mirror / (pname(top) + ".sha256")).read_text()
    assert f"key={new_id} " not in (mirror / (pname(old_top) + ".sha256")).read_text()
    assert cli(home, "verify", "--cloud").returncode == 0, "old copies verify"
    new = new_machine(tmp_path, home)
    older = cli(new, "restore", "--all", "--point", old_top, "--yes")
    assert older.returncode == 0, older.stdout + older.stderr
    assert state(new).read_bytes() == first, "a point signed before the rotation restores"
    # Without the old key (the rotated file cut back to the new key), point 1 is refused,
    # as signed with a key the file does not hold (not as a forgery):
    lines = (home / "backup.key").read_text().splitlines()
    (new / "backup.key").write_text("\n".join(line for line in lines
                                              if line not in first_key) + "\n")
    verify = cli(new, "--json", "verify", "--cloud")
    assert verify.returncode == 1
    assert (pname(old_top), "unknown key") in {
        (p["name"], p["status"]) for p in json.loads(verify.stdout)["problems"]}


def test_encrypted_copies_hold_no_plaintext_and_restore_the_exact_bytes(tmp_path, site):
    home, mirror, s3, bucket = site
    configure(home, encrypt=True)
    older, newer = two_points(home)
    name = newest_backup_name(Stores(mirror, s3, bucket))
    in_s3 = s3.get_object(Bucket=bucket, Key=f"{PREFIX}/{name}")["Body"].read()
    for stored in (in_s3, (mirror / name).read_bytes()):
        assert b"timestamp" not in stored and newer not in stored
    point = s3.get_object(Bucket=bucket, Key=f"{PREFIX}/point-0000000002.json")["Body"].read()
    assert name.encode() not in point, "the point's manifest is encrypted too"
    new = new_machine(tmp_path, home)
    configure(new, mirror_dirs=[])  # from S3 alone
    done = run(new)
    assert done.returncode == 0, done.stderr
    assert state(new).read_bytes() == newer
    for n in STATE_FILES:
        assert state(new, n).read_bytes() == state(home, n).read_bytes()
    drill = cli(home, "drill", "--cloud")
    assert drill.returncode == 0 and "key:" in drill.stdout, drill.stdout + drill.stderr
    # The manual path: download, decrypt with the key file, sha256sum -c.
    hand = tmp_path / "by-hand"
    hand.mkdir()
    (hand / "downloaded").write_bytes(in_s3)
    (hand / f"{name}.sha256").write_bytes(s3.get_object(
        Bucket=bucket, Key=f"{PREFIX}/{name}.sha256")["Body"].read())
    out = cli(home, "key", "decrypt", hand / "downloaded", "--name", name, "--out",
              hand / name)
    assert out.returncode == 0, out.stderr
    check = subprocess.run(["sha256sum", "-c", f"{name}.sha256"], cwd=hand,
                           capture_output=True, text=True)
    assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
    assert (hand / name).read_bytes() == newer


def test_drill_cloud_fails_when_the_key_cannot_open_the_bucket(tmp_path, site):
    home, mirror, s3, bucket = site
    assert run(home).returncode == 0
    assert cli(home, "drill", "--cloud").returncode == 0
    (home / "backup.key").unlink()
    assert cli(home, "key", "init").returncode == 0
    drill = cli(home, "drill", "--cloud")
    assert drill.returncode == 1, drill.stdout
    assert "key check" in drill.stdout and "does not hold" in drill.stdout
