"""Configuration: bad constructor arguments and bad config values are refused at once,
with an error that names the key. Numbers a person could mistype are bounded, so they
fail here instead of later (an overflow in the prune after a backup, a lock wait of a
week), and two state files never silently share one backup name."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from backup_manager import BackupManager, ConfigError, MissingDependency
from backup_manager.config import (
    BACKUP_DEFAULTS,
    backup_options,
    dashboard_remote_restore,
    load_config_file,
    whole_number,
)

RETENTION_KEYS = ["retention_days", "keep_last", "keep_daily"]
TOO_MANY = [36_501, 800_000, 10**12]


@pytest.mark.parametrize("value", TOO_MANY)
@pytest.mark.parametrize("key", RETENTION_KEYS)
def test_retention_above_a_century_is_refused_by_the_constructor(project, key, value):
    with pytest.raises(ConfigError, match=key):
        BackupManager(**{key: value})


@pytest.mark.parametrize("value", TOO_MANY)
@pytest.mark.parametrize("key", RETENTION_KEYS)
def test_retention_above_a_century_is_refused_in_the_config(project, key, value):
    with pytest.raises(ConfigError, match=re.escape(f"backup.{key}")):
        BackupManager.from_config({"backup": {key: value}})


def test_retention_days_800000_is_a_config_error_not_an_overflow_after_a_backup(project,
                                                                             state_file):
    with pytest.raises(ConfigError, match="retention_days"):
        bm = BackupManager(retention_days=800_000, keep_last=1)
        bm.backup_state_file(state_file)
        bm.backup_state_file(state_file)  # today: OverflowError out of the prune


def test_a_century_itself_is_allowed(project, state_file):
    bm = BackupManager(retention_days=36_500, keep_last=36_500, keep_daily=36_500)
    for _ in range(2):
        bm.backup_state_file(state_file)
    assert len(bm.prune()) == 2
    BackupManager.from_config({"backup": {"retention_days": 36_500, "keep_last": 36_500,
                                          "keep_daily": 36_500}})


TIMEOUT_KEYS = ["lock_timeout_seconds", "s3_connect_timeout_seconds",
                "s3_read_timeout_seconds"]
BAD_TIMEOUTS = [0, 3600.5, 86_400, float("inf")]


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_lock_timeout_must_be_above_0_and_at_most_an_hour(project, value):
    with pytest.raises(ConfigError, match="lock_timeout"):
        BackupManager(lock_timeout=value)


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
@pytest.mark.parametrize("key", TIMEOUT_KEYS)
def test_timeouts_in_the_config_must_be_above_0_and_at_most_an_hour(project, key, value):
    with pytest.raises(ConfigError, match=re.escape(f"backup.{key}")):
        BackupManager.from_config({"backup": {key: value}})


@pytest.mark.parametrize("key", TIMEOUT_KEYS)
def test_an_hour_is_allowed(project, key):
    BackupManager.from_config({"backup": {key: 3600}})


def test_two_state_files_with_one_name_are_refused_in_the_config(project):
    with pytest.raises(ConfigError) as info:
        BackupManager.from_config({"backup": {"state_files": ["a/x.json", "b/x.json"]}})
    assert "a/x.json" in str(info.value) and "b/x.json" in str(info.value), str(info.value)


def test_two_state_files_with_one_name_are_refused_by_the_constructor(project):
    with pytest.raises(ConfigError) as info:
        BackupManager(state_files=["a/x.json", "b/x.json"])
    assert "a/x.json" in str(info.value) and "b/x.json" in str(info.value), str(info.value)


@pytest.mark.parametrize("kwargs,key", [
    ({"keep_last": -1}, "keep_last"),
    ({"retention_days": "x"}, "retention_days"),
    ({"cloud_enabled": True}, "s3_bucket"),
    ({"lock_timeout": -2}, "lock_timeout"),
])
def test_bad_arguments_name_the_key(project, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        BackupManager(**kwargs)


@pytest.mark.parametrize("section,message", [
    ({"keep_lats": 3}, "unknown key.*keep_lats.*valid keys: dir"),
    ({"keep_last": -1}, "backup.keep_last"),
    ({"retention_days": "thirty"}, "backup.retention_days"),
    ({"cloud_enabled": True}, "s3_bucket"),
    ({"lock_timeout_seconds": "10"}, "lock_timeout_seconds"),
    ({"s3_sse": "rot13"}, "s3_sse"),
    ({"durable": "yes"}, "backup.durable"),
    ({"state_files": "state/x.json"}, "state_files"),
    ({"s3_max_attempts": 0}, "backup.s3_max_attempts"),
    ({"s3_read_timeout_seconds": "2"}, "backup.s3_read_timeout_seconds"),
    ({"s3_connect_timeout_seconds": 0}, "backup.s3_connect_timeout_seconds"),
])
def test_from_config_rejects_bad_values(project, section, message):
    with pytest.raises(ConfigError, match=message):
        BackupManager.from_config({"backup": section})


BASE = Path("/srv/dalio")


DEFAULT_KEYS = ", ".join(BACKUP_DEFAULTS)


BAD_SECTIONS = [
    ({"dir": ""}, "backup.dir must be a folder path, got ''"),
    ({"dir": 5}, "backup.dir must be a folder path, got 5"),
    ({"s3_prefix": 5}, "backup.s3_prefix must be a string, got 5"),
    ({"s3_region": "  "}, "backup.s3_region must be a non-empty string or null, got '  '"),
    ({"s3_bucket": 5}, "backup.s3_bucket must be a non-empty string or null, got 5"),
    ({"mirror_dirs": "/mnt/nas"}, "backup.mirror_dirs must be a list of paths, got '/mnt/nas'"),
    ({"mirror_dirs": [""]}, "backup.mirror_dirs must be a list of paths, got ['']"),
    ({"state_files": "state/x.json"},
     "backup.state_files must be a list of paths, got 'state/x.json'"),
    ({"state_files": ["a/x.json", "b/x.json"]},
     f"backup.state_files: {BASE}/a/x.json and {BASE}/b/x.json have the same file name "
     "'x.json'; their backups would share names: rename one"),
    ({"cloud_enabled": "yes"}, "backup.cloud_enabled must be true or false, got 'yes'"),
    ({"keep_last": -1}, "backup.keep_last must be a whole number >= 0 and <= 36,500, got -1"),
    ({"s3_max_attempts": 11},
     "backup.s3_max_attempts must be a whole number >= 1 and <= 10, got 11"),
    ({"dashboard_remote_restore": "yes"},
     "backup.dashboard_remote_restore must be true or false, got 'yes'"),
    ({"dashboard_remote_restore": 1},
     "backup.dashboard_remote_restore must be true or false, got 1"),
    ({"colour": 1, "alpha": 2},
     f"unknown key(s) alpha, colour in backup; valid keys: {DEFAULT_KEYS}"),
]


@pytest.mark.parametrize("section,message", BAD_SECTIONS, ids=[str(s) for s, _ in BAD_SECTIONS])
def test_a_bad_backup_value_is_refused_with_a_message_naming_its_key(section, message):
    with pytest.raises(ConfigError) as refused:
        backup_options(section, BASE)
    assert str(refused.value) == message


def test_a_backup_section_that_is_no_mapping_is_refused():
    with pytest.raises(ConfigError) as refused:
        backup_options(["dir"], BASE)
    assert str(refused.value) == "backup must be a mapping of keys, got ['dir']"


def test_an_empty_backup_section_gives_the_defaults():
    options = backup_options(None, BASE)
    assert options["backup_dir"] == BASE / "backups"
    assert (options["s3_prefix"], options["mirror_dirs"], options["state_files"]) == (
        "dalio-lite-backups", [], [])


@pytest.mark.parametrize("section,allowed", [({}, False), (None, False),
                                             ({"dashboard_remote_restore": False}, False),
                                             ({"dashboard_remote_restore": True}, True)])
def test_the_page_restores_beyond_localhost_only_when_the_config_says_so(section, allowed):
    assert dashboard_remote_restore(section) is allowed
    backup_options(section, BASE)


def test_zero_is_a_valid_count_and_ten_attempts_the_most():
    options = backup_options({"keep_last": 0, "keep_daily": 0, "retention_days": 0,
                              "s3_max_attempts": 10}, BASE)
    assert (options["keep_last"], options["keep_daily"], options["retention_days"]) == (0, 0, 0)
    assert options["s3_client_config"]["retries"]["total_max_attempts"] == 10


@pytest.mark.parametrize("prefix,expected", [(None, ""), ("team/dalio", "team/dalio")])
def test_the_s3_prefix_is_kept_and_null_means_none(prefix, expected):
    assert backup_options({"s3_prefix": prefix}, BASE)["s3_prefix"] == expected


def test_mirror_dirs_resolve_against_the_config_folder():
    options = backup_options({"mirror_dirs": ["nas", "/mnt/usb"]}, BASE)
    assert options["mirror_dirs"] == [BASE / "nas", Path("/mnt/usb")]


def test_a_host_checks_its_own_numbers_with_the_same_messages():
    with pytest.raises(ConfigError) as refused:
        whole_number("broker.max_orders", -1)
    assert str(refused.value) == "broker.max_orders must be a whole number >= 0, got -1"
    assert whole_number("broker.max_orders", 0) == 0


def test_a_missing_config_file_is_named(tmp_path):
    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as refused:
        load_config_file(path)
    assert str(refused.value) == f"cannot read config file {path}: No such file or directory"


def test_a_config_file_that_is_no_yaml_mapping_is_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("backup: [unclosed\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))} is not valid YAML: "):
        load_config_file(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as refused:
        load_config_file(path)
    assert str(refused.value) == f"{path}: the top level must be a mapping of sections"


def test_reading_a_config_file_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(MissingDependency) as missing:
        load_config_file(tmp_path / "config.yaml")
    assert str(missing.value) == "reading config.yaml needs PyYAML: pip install PyYAML"
