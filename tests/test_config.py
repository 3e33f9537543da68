"""Configuration bounds: numbers a person could mistype are refused at once, with an
error that names the key, instead of failing later (an overflow in the prune after a
backup, a lock wait of a week) or silently sharing one backup name between files."""

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
