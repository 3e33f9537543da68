"""Names and sizes: what a file name or a file's size may do to listing, restore and
prune. A planted name with non-ASCII digits is no backup; a state file name with a
control character is refused; a dot-file state is an ordinary state; a huge sidecar is
malformed and never read whole."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backup_manager import BackupManager
from tests.helpers import ROOT, rebalance_doc

# Arabic-Indic digits for the year: `\d` matches them, so does a careless pattern.
NON_ASCII = "last_rebalance_\u0662\u0660\u0662\u0666-02-17_10-30-00.123456Z.json"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def plant(folder: Path, name: str, content: bytes, *, with_sidecar: bool) -> None:
    (folder / name).write_bytes(content)
    if with_sidecar:
        (folder / (name + ".sha256")).write_text(
            f"{hashlib.sha256(content).hexdigest()}  {name}\n", encoding="utf-8")


def real_backups(project, state_file, count=2):
    bm = BackupManager(project / "backups", keep_last=50)
    made = []
    for i in range(count):
        content = rebalance_doc(n=f"real {i}")
        state_file.write_bytes(content)
        made.append((bm.backup_state_file(state_file), content))
    return made


@pytest.mark.parametrize("with_sidecar", [True, False], ids=["complete", "incomplete"])
def test_non_ascii_digits_never_make_restore_raise_nor_get_restored(project, state_file,
                                                                   with_sidecar):
    *_, (newest, content) = real_backups(project, state_file)
    plant(project / "backups", NON_ASCII, rebalance_doc(n="planted"), with_sidecar=with_sidecar)
    state_file.unlink()
    result = BackupManager(project / "backups").restore(state_file)
    assert result.name == newest.name
    assert state_file.read_bytes() == content


@pytest.mark.parametrize("with_sidecar", [True, False], ids=["complete", "incomplete"])
def test_non_ascii_digits_never_make_prune_remove_a_real_backup(project, state_file,
                                                                with_sidecar):
    real_backups(project, state_file)
    plant(project / "backups", NON_ASCII, rebalance_doc(n="planted"), with_sidecar=with_sidecar)
    state_file.write_bytes(rebalance_doc(n="after the plant"))
    newest = BackupManager(project / "backups", keep_last=50).backup_state_file(state_file)
    BackupManager(project / "backups", keep_last=0, keep_daily=0).prune()
    assert newest.exists() and sidecar(newest).exists(), \
        "prune removed the newest real backup"


@pytest.mark.parametrize("name", ["last\nrebalance.json", "last_rebalance\t.json",
                                  "x\x1b[31m.json"], ids=["newline", "tab", "escape"])
def test_state_file_name_with_a_control_character_is_refused(project, name):
    path = project / "state" / name
    path.write_bytes(b'{"cash": 1.0}')
    with pytest.raises(ValueError, match="control character"):
        BackupManager(project / "backups").backup_state_file(path)
    folder = project / "backups"
    written = [n for n in os.listdir(folder) if n not in (".lock", ".outbox")] \
        if folder.exists() else []
    assert written == [], f"files written for a refused name: {written!r}"


def test_dot_file_state_is_backed_up_listed_copied_and_restored_from_s3(project, bucket):
    import boto3

    endpoint, bucket_name = bucket
    state = project / "state" / ".hidden.json"
    content = b'{"hidden": true}\n'
    state.write_bytes(content)
    mirror = project / "mirror"

    def manager():
        return BackupManager(project / "backups", mirror_dirs=[mirror], cloud_enabled=True,
                             s3_bucket=bucket_name, s3_endpoint_url=endpoint,
                             s3_region="us-east-1")

    bm = manager()
    backup = bm.backup_state_file(state)
    assert backup is not None and backup.read_bytes() == content
    assert [b.name for b in bm.list_backups(state)] == [backup.name]
    assert ".hidden.json" in bm.backed_up_files(), \
        f"the dot-file state is not among the backed-up files: {bm.backed_up_files()}"
    assert (mirror / backup.name).read_bytes() == content, "not copied to the mirror"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket_name).get("Contents", [])}
    assert {f"dalio-lite-backups/{backup.name}",
            f"dalio-lite-backups/{backup.name}.sha256"} <= keys, f"not in S3: {keys}"
    shutil.rmtree(project / "backups")
    shutil.rmtree(mirror)
    state.unlink()
    manager().restore(state)
    assert state.read_bytes() == content


VERIFY_AND_RESTORE = """
import json, resource
# A safety net for a shared machine: reading the whole sidecar fails at once.
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

from backup_manager import BackupManager
bm = BackupManager("backups")
facts = {}
try:
    facts["statuses"] = {item.name: item.status for item in bm.verify().items}
    facts["peak_after_verify_kib"] = peak_kib()
    facts["restored"] = bm.restore("state/last_rebalance.json").name
    facts["peak_after_restore_kib"] = peak_kib()
except MemoryError:
    facts["error"] = "MemoryError within 1 GiB of address space during " + (
        "restore" if "statuses" in facts else "verify")
print(json.dumps(facts))
"""


def test_huge_sidecar_is_malformed_skipped_and_never_read_whole(project, state_file):
    (good, good_bytes), (huge, _) = real_backups(project, state_file)
    os.truncate(sidecar(huge), 1 << 30)  # a sparse 1 GiB sidecar: the right line, then NULs
    state_file.unlink()
    done = subprocess.run([sys.executable, "-c", VERIFY_AND_RESTORE], cwd=project,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout)
    assert "error" not in facts, f"the 1 GiB sidecar was read whole: {facts['error']}"
    assert facts["statuses"][huge.name] == "malformed sidecar"
    assert facts["restored"] == good.name
    assert state_file.read_bytes() == good_bytes
    for when in ("after_verify", "after_restore"):
        peak_mb = facts[f"peak_{when}_kib"] / 1024
        assert peak_mb < 200, f"peak RSS {when.replace('_', ' ')}: {peak_mb:.0f} MB"
