"""Configuration: bad constructor arguments and bad config values are refused at once,
with an error that names the key. Numbers a person could mistype are bounded, so they
fail here instead of later (an overflow in the prune after a backup, a lock wait of a
week), and two state files never silently share one backup name."""

from __future__ import annotations

import re

import pytest

from backup_manager import BackupManager, ConfigError

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
