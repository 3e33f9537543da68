"""`status --format prometheus`: the text exposition format, parsed back with
prometheus_client's own parser, for a healthy folder, no backups, pending copies,
a backup stamped in the future; and the cron path imports none of it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_manager import BackupManager
from backup_manager.formats import format_backup_name
from backup_manager.metrics import exposition
from tests.helpers import ROOT, rebalance_doc

NAME = re.compile(r"^dalio_backup_[a-z_]+$")
UNITS = ("_seconds", "_bytes")


def cli(folder, *args, python=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *python, "-m", "backup_manager", *args], cwd=folder,
                          capture_output=True, text=True, env=env, timeout=120)


def scrape(folder, *options):
    """Run status --format prometheus; (families by name, the --json status document)."""
    proc = cli(folder, *options, "status", "--format", "prometheus")
    assert proc.returncode == 0, proc.stderr  # health is in the metrics, not the exit code
    assert "Traceback" not in proc.stderr
    families = {f.name: f for f in text_string_to_metric_families(proc.stdout)}
    doc = json.loads(cli(folder, *options, "--json", "status").stdout)
    check_conventions(families, proc.stdout)
    assert problems(families) == list(dict.fromkeys(
        (p["kind"], p["subject"]) for p in doc["problems"])), \
        "one series per kind and subject of the problems status reports"
    assert value(families, "dalio_backup_status_ok") == (0 if doc["problems"] else 1)
    return families, doc


def check_conventions(families, text):
    assert families, "something was exported"
    for name, family in families.items():
        assert NAME.match(name), name
        assert family.type == "gauge" and not name.endswith("_total"), \
            "no counters here, so no _total"
        assert family.documentation, f"{name} has HELP"
        assert f"# TYPE {name} gauge" in text
        if "timestamp" in name or "age" in name:
            assert name.endswith("_seconds"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), name


def samples(families, name):
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}


def value(families, name, **labels):
    return samples(families, name)[tuple(sorted(labels.items()))]


def problems(families):
    found = [s for s in families["dalio_backup_problem"].samples]
    assert all(s.value == 1 for s in found)
    assert all(set(s.labels) == {"kind", "subject"} for s in found), \
        "stable labels only: no counts, ages or times that would make an alert flap"
    return [(s.labels["kind"], s.labels["subject"]) for s in found]


def write_config(folder, **backup):
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(status_hook=None, **backup)
    (folder / "config.yaml").write_text(yaml.safe_dump(doc))


def plant(folder, stem, when, data, sidecar=True):
    name = format_backup_name(stem, ".json", when)
    (folder / "backups").mkdir(exist_ok=True)
    (folder / "backups" / name).write_bytes(data)
    if sidecar:
        (folder / "backups" / (name + ".sha256")).write_text(
            f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return name


def test_healthy_folder(project, state_file):
    (project / "mirror").mkdir()
    write_config(project, state_files=["state/last_rebalance.json"], mirror_dirs=["mirror"])
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    families, doc = scrape(project)
    (info,) = BackupManager(project / "backups").list_backups(state_file)
    this = {"state_file": "last_rebalance.json"}
    assert value(families, "dalio_backup_status_ok") == 1 and problems(families) == []
    assert value(families, "dalio_backup_newest_valid_timestamp_seconds", **this) == \
        pytest.approx(info.timestamp.timestamp(), abs=1e-6)
    assert value(families, "dalio_backup_newest_valid_age_seconds", **this) >= 0
    assert value(families, "dalio_backup_status_timestamp_seconds") >= \
        value(families, "dalio_backup_newest_valid_timestamp_seconds", **this)
    for name, expected in (("backups", 1), ("complete_backups", 1), ("incomplete_backups", 0),
                           ("future_stamped_backups", 0), ("bytes", info.size)):
        assert value(families, f"dalio_backup_{name}", **this) == expected, name
    assert value(families, "dalio_backup_disk_bytes",
                 backup_dir=doc["backup_dir"]) == doc["disk_bytes"]
    assert samples(families, "dalio_backup_live_state") == {
        (("live", "backed up"), ("state_file", "last_rebalance.json")): 1}
    (target,) = doc["targets"]
    mirror = {"target": target["target"]}
    assert value(families, "dalio_backup_copies_pending", **mirror) == 0
    assert value(families, "dalio_backup_copy_conflicts", **mirror) == 0
    assert value(families, "dalio_backup_oldest_pending_copy_age_seconds", **mirror) == 0
    assert value(families, "dalio_backup_copy_last_success_timestamp_seconds", **mirror) == \
        pytest.approx(datetime.fromisoformat(target["last_success"]).timestamp(), abs=1e-6)


def test_no_backups(project, state_file):
    families, _ = scrape(project)
    assert problems(families) == [("no-state-files", "site")]
    assert samples(families, "dalio_backup_newest_valid_timestamp_seconds") == {}
    write_config(project, state_files=["state/last_rebalance.json"])
    families, doc = scrape(project)
    this = {"state_file": "last_rebalance.json"}
    assert ("no-valid-backup", "last_rebalance.json") in problems(families)
    assert value(families, "dalio_backup_backups", **this) == 0
    assert value(families, "dalio_backup_bytes", **this) == 0
    assert samples(families, "dalio_backup_newest_valid_timestamp_seconds") == {}, \
        "no made-up time for a backup that does not exist"
    assert samples(families, "dalio_backup_newest_valid_age_seconds") == {}
    assert value(families, "dalio_backup_live_state", live="not backed up", **this) == 1


def test_pending_copies(project, state_file):
    write_config(project, state_files=["state/last_rebalance.json"],
                 mirror_dirs=["unmounted/dalio"])  # its parent is missing: not mounted
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    families, doc = scrape(project)
    (target,) = doc["targets"]
    mirror = {"target": target["target"]}
    assert value(families, "dalio_backup_copies_pending", **mirror) == 2  # the backup, its point
    assert value(families, "dalio_backup_oldest_pending_copy_age_seconds", **mirror) == \
        pytest.approx(target["oldest_pending_age_seconds"], abs=60)
    assert value(families, "dalio_backup_oldest_pending_copy_age_seconds", **mirror) >= 0
    assert samples(families, "dalio_backup_copy_last_success_timestamp_seconds") == {}, \
        "never took a copy: no time"
    assert any(kind == "target-never-took-a-copy" for kind, _ in problems(families))
    assert value(families, "dalio_backup_status_ok") == 0

    (project / "unmounted").mkdir()
    assert cli(project, "sync").returncode == 0
    families, _ = scrape(project)
    assert value(families, "dalio_backup_copies_pending", **mirror) == 0
    assert value(families, "dalio_backup_oldest_pending_copy_age_seconds", **mirror) == 0
    assert value(families, "dalio_backup_copy_last_success_timestamp_seconds", **mirror) > 0
    assert value(families, "dalio_backup_status_ok") == 1


def test_backup_stamped_in_the_future(project, state_file):
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    ahead = datetime.now(UTC) + timedelta(days=3)
    name = plant(project, "last_rebalance", ahead, rebalance_doc(n="ahead"))
    families, doc = scrape(project)
    assert any(p["problem"].startswith(f"{name} is stamped in the future")
               for p in doc["problems"]), "the words are in status --json, not in labels"
    this = {"state_file": "last_rebalance.json"}
    assert value(families, "dalio_backup_future_stamped_backups", **this) == 1
    assert value(families, "dalio_backup_newest_valid_timestamp_seconds", **this) == \
        pytest.approx(ahead.timestamp(), abs=1e-6)
    assert value(families, "dalio_backup_newest_valid_age_seconds", **this) < 0
    assert ("stamped-in-future", "last_rebalance.json") in problems(families)
    assert value(families, "dalio_backup_status_ok") == 0


def test_incomplete_backup_is_counted_apart(project, state_file):
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    plant(project, "last_rebalance", datetime.now(UTC) - timedelta(hours=2),
          rebalance_doc(n="no sidecar"), sidecar=False)
    families, _ = scrape(project)
    this = {"state_file": "last_rebalance.json"}
    assert (value(families, "dalio_backup_backups", **this),
            value(families, "dalio_backup_complete_backups", **this),
            value(families, "dalio_backup_incomplete_backups", **this)) == (2, 1, 1)


def test_label_values_are_escaped(project):
    odd = 'we"ird\\name.json'  # a control character is refused as a state file name
    (project / "state" / odd).write_bytes(b'{"a": 1}')
    assert cli(project, "backup", f"state/{odd}").returncode == 0
    families, _ = scrape(project)
    assert value(families, "dalio_backup_backups", state_file=odd) == 1
    facts = BackupManager(project / "backups").status()
    subjects = ['a "quoted" file', "back\\slash", "two\nlines", "ünïcode"]
    lines = [("no-valid-backup", subject) for subject in subjects]
    text = exposition(facts, lines, None, 1.5)
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert problems(parsed) == lines
    assert value(parsed, "dalio_backup_status_timestamp_seconds") == 1.5
    assert "dalio_backup_bytes" not in parsed, "no sizes given: none exported"


def test_format_option(project, state_file):
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    as_json = cli(project, "status", "--format", "json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["ok"] is True
    both = cli(project, "--json", "status", "--format", "prometheus")
    assert both.returncode == 2 and "choose one" in both.stderr
    assert "dalio_backup" not in cli(project, "status").stdout, "text stays the default"


def test_cron_paths_import_neither_streamlit_nor_prometheus_client(project, state_file):
    heavy = ("streamlit", "prometheus_client", "pandas", "backup_manager.metrics")
    script = ("import sys, backup_manager; "
              f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    for args, wanted in ((["backup", "state/last_rebalance.json"], ()),
                         (["status", "--format", "prometheus"], ("backup_manager.metrics",))):
        proc = cli(project, *args, python=["-X", "importtime"])
        assert proc.returncode == 0, proc.stderr
        loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                  if line.startswith("import time:")}
        assert loaded, "python -X importtime reported the imports"
        assert not {m for m in loaded if m.split(".")[0] in heavy[:3]}, args
        assert {m for m in loaded if m.startswith("backup_manager.metrics")} == set(wanted)
