"""Keys and signed copies, in one process: key files (init, rotate, damaged lines),
the config keys, and the sealed store's refusals, each named by its source."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from backup_manager import (
    BackupManager,
    ConfigError,
    IntegrityError,
    KeyUnavailable,
    UploadConflict,
    status_problems,
)
from backup_manager.config import backup_options
from backup_manager.keys import KeySource, add_key, init_key_file
from backup_manager.seal import Sealing
from tests.helpers import ROOT, rebalance_doc


def signed_manager(project, key, encrypt=False, mirror="mirror"):
    return BackupManager(project / "backups", mirror_dirs=[project / mirror],
                         sealing=Sealing(KeySource(file=key), encrypt=encrypt))


def test_key_init_writes_a_private_file_once(project):
    key = project / "backup.key"
    first = init_key_file(key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        init_key_file(key)
    assert KeySource(file=key).keyring().signing.id == first
    second = add_key(key)
    ring = KeySource(file=key).keyring()
    assert [k.id for k in ring.keys] == [first, second], "the newest key is last and signs"
    assert ring.signing.id == second
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, "rotation keeps the file private"


def test_a_damaged_key_line_or_a_missing_source_is_named(project, monkeypatch):
    key = project / "backup.key"
    init_key_file(key)
    text = key.read_text()
    key.write_text(text[:-5] + ("A" if text[-5] != "A" else "B") + text[-4:])
    with pytest.raises(KeyUnavailable, match=r"backup.key, line 4: key [0-9a-f]{12} does "
                                             r"not match its secret"):
        KeySource(file=key).keyring()
    with pytest.raises(KeyUnavailable, match="key file .*nothing.key .*does not exist"):
        KeySource(file=project / "nothing.key").keyring()
    monkeypatch.delenv("DALIO_TEST_KEY", raising=False)
    with pytest.raises(KeyUnavailable, match="environment variable DALIO_TEST_KEY"):
        KeySource(env="DALIO_TEST_KEY").keyring()
    key.write_text(text)
    monkeypatch.setenv("DALIO_TEST_KEY", text.replace("\n", ";"))
    assert KeySource(env="DALIO_TEST_KEY").keyring().keys == KeySource(file=key).keyring().keys


@pytest.mark.parametrize("section, message", [
    ({"key_file": "a.key", "key_env": "K"}, "both set"),
    ({"encrypt": True}, "backup.encrypt is true but no key is configured"),
    ({"key_env": "3abc"}, "must name an environment variable"),
    ({"key_env": "MY-KEY"}, "must name an environment variable"),
    ({"key_file": ""}, "backup.key_file must be a non-empty string"),
    ({"key_file": "a.key", "encrypt": "yes"}, "backup.encrypt must be true or false"),
])
def test_bad_key_settings_are_refused_by_name(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        backup_options(section, tmp_path)


def test_the_key_file_resolves_against_the_config_folder(tmp_path):
    sealing = backup_options({"key_file": "keys/b.key", "encrypt": True}, tmp_path)["sealing"]
    assert sealing.keys.file == tmp_path / "keys" / "b.key" and sealing.encrypt
    assert backup_options({}, tmp_path)["sealing"] is None


def test_a_signed_mirror_copy_verifies_and_a_changed_byte_is_refused(project, state_file):
    key = project / "backup.key"
    init_key_file(key)
    bm = signed_manager(project, key)
    name = bm.backup_state_file(state_file).name
    mirror = bm.mirrors[next(iter(bm.mirrors))]
    assert mirror.read(name) == state_file.read_bytes()
    sidecar = (project / "mirror" / (name + ".sha256")).read_text()
    assert sidecar.startswith((project / "backups" / (name + ".sha256")).read_text())
    assert "# dalio-mac-1 key=" in sidecar, "the mirror's sidecar carries the MAC"
    assert "# dalio-mac-1" not in (project / "backups" / (name + ".sha256")).read_text()
    copy = project / "mirror" / name
    copy.write_bytes(copy.read_bytes().replace(b"timestamp", b"timestamq"))
    with pytest.raises(IntegrityError, match="not authenticated") as info:
        mirror.read(name)
    assert "changed after it was signed" in str(info.value)
    record = json.loads((project / "backups" / ".refused-copies.json").read_text())
    assert name in record[str(project / "mirror")]


def test_a_refusal_record_clears_once_the_object_is_gone(project, state_file):
    key = project / "backup.key"
    init_key_file(key)
    bm = signed_manager(project, key)
    name = bm.backup_state_file(state_file).name
    mirror = bm.mirrors[next(iter(bm.mirrors))]
    (project / "mirror" / (name + ".sha256")).write_text(
        (project / "backups" / (name + ".sha256")).read_text())  # the MAC line stripped
    with pytest.raises(IntegrityError, match="carries no signature"):
        mirror.read(name)
    problems = status_problems(BackupManager(project / "backups").status())
    assert [p.kind for p in problems] == ["unauthenticated-copy"], "status reports it"
    assert problems[0].subject == f"{project / 'mirror'}/{name}"
    for part in (name, name + ".sha256"):
        (project / "mirror" / part).unlink()
    mirror.list_names()
    assert not (project / "backups" / ".refused-copies.json").exists()


def test_the_same_copy_sent_again_by_another_writer_is_no_conflict(project, state_file):
    """A backup put back into backups/ on a new machine may be owed to the mirror again:
    the mirror holds it already, sealed by the first writer."""
    key = project / "backup.key"
    init_key_file(key)
    bm = signed_manager(project, key, encrypt=True)
    name = bm.backup_state_file(state_file).name
    other = signed_manager(project, key, encrypt=True)
    other._writer = "0123456789ab"
    target = other.mirrors[next(iter(other.mirrors))]
    target.write(name, state_file.read_bytes())
    target.write(name + ".sha256", (project / "backups" / (name + ".sha256")).read_bytes())
    with pytest.raises(UploadConflict):
        target.write(name, rebalance_doc(n="other bytes"))


def test_status_states_once_that_unsigned_copies_are_not_authenticated(project, state_file):
    plain = BackupManager(project / "backups", mirror_dirs=[project / "mirror"])
    plain.backup_state_file(state_file)
    facts = plain.status()
    assert facts["copies_signed"] is False and not status_problems(facts), "a fact only"
    key = project / "backup.key"
    init_key_file(key)
    assert signed_manager(project, key).status()["copies_signed"] is True
    assert BackupManager(project / "backups").status()["copies_signed"] is None


def test_encryption_without_cryptography_says_what_to_install(project, state_file):
    key = project / "backup.key"
    init_key_file(key)
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from pathlib import Path\n"
        "import pytest\n"
        "from backup_manager import BackupManager, MissingDependency\n"
        "from backup_manager.keys import KeySource\n"
        "from backup_manager.seal import Sealing\n"
        "bm = BackupManager('backups', mirror_dirs=['mirror'], sealing=Sealing(\n"
        "    KeySource(file=Path('backup.key')), encrypt=True))\n"
        "bm.backup_state_file('state/last_rebalance.json')\n"
        "with pytest.raises(MissingDependency) as info:\n"
        "    mirror = bm.mirrors[next(iter(bm.mirrors))]\n"
        "    mirror.write('x_2026-01-01_00-00-00.000000Z.json', b'{}')\n"
        "print(info.value)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pip install 'daliolite[keys]'" in proc.stdout


@pytest.mark.parametrize("whose", ["mine", "another"])
def test_a_claim_cut_in_two_in_a_signed_mirror_is_never_signed_after_the_fact(project, whose):
    """A point without its sidecar in a mirror of signed copies (a claim killed between
    the two, or one planted by whoever can write there) is never signed here: nothing
    can prove who wrote it. One naming this writer (whose run was killed before any
    order) has its number passed over; one naming another writer holds it, and the
    claim is refused with what to do."""
    from datetime import UTC, datetime

    from backup_manager import UnfinishedClaim, WriterConflict
    from backup_manager.points import Point, encode_point, point_name

    key = project / "backup.key"
    init_key_file(key)
    bm = signed_manager(project, key)
    with bm.changes("run", "day 0"):
        pass
    first = bm.history().newest()
    writer = bm.writer if whose == "mine" else "0123456789ab"
    orphan = Point(2, datetime.now(UTC), writer, "orders", "intent: 0 order(s)",
                   (first.sequence, first.digest), {}, {"orders": []})
    (project / "mirror" / point_name(2)).write_bytes(encode_point(orphan))
    if whose == "mine":
        point, _ = bm.claim_point("orders", "intent", details={"orders": []})
        assert point.sequence == 3 and point.follows == (first.sequence, first.digest)
        assert bm.history().newest().sequence == 3
    else:
        with pytest.raises(WriterConflict, match="delete .*point-0000000002.json") as refused:
            bm.claim_point("orders", "intent", details={"orders": []})
        assert not isinstance(refused.value, UnfinishedClaim)
        assert "signature is missing" in str(refused.value)
        assert not (project / "backups" / point_name(2)).exists()
    assert not (project / "mirror" / (point_name(2) + ".sha256")).exists()
