"""What README.md and docs/ print works as printed: the install and test commands, the
recovery one-liners (and the specification's form fails as README says), every crontab
line on a fresh copy of the checkout through a real shell, the S3 set-up and the loss of
a machine; every link between the files resolves."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
import yaml

from backup_manager import BackupManager
from backup_manager.config import BACKUP_DEFAULTS
from tests.helpers import (
    ROOT,
    fresh_checkout,
    rebalance_doc,
    refused_port,
    remote_keys,
    with_project_python,
)

README = (ROOT / "README.md").read_text()
# Every file a user reads, by its path in the repository: README.md first, then docs/.
PAGES = {"README.md": README} | {
    f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")

# The specification's restore-latest one-liner, exactly as it prints it (spec section
# "Manual Recovery"): double quotes inside a double-quoted shell string.
SPEC_ONE_LINER = '''python -c "
from backup_manager import BackupManager
bm = BackupManager()
success = bm.restore_from_backup('state/last_rebalance.json')
print(f'Restore: {"SUCCESS" if success else "FAILED"}')
"
'''


def marked(kind, name):
    """The code block after `<!-- kind: name -->`, wherever README or docs/ print it."""
    found = [match for text in PAGES.values() for match in re.finditer(
        rf"<!-- {kind}: {name} -->\n( *)```\w+\n(.*?)\n\1```", text, re.S)]
    assert len(found) == 1, f"README and docs/ print the {kind} {name} {len(found)} times"
    return textwrap.dedent(found[0].group(2)) + "\n"


def one_liner(marker):
    return marked("one-liner", marker)


def section(text, heading):
    """From `heading` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    ends = [m.start() for m in re.finditer(r"\n(#+) ", text[start + 1:])
            if len(m.group(1)) <= len(level)]
    return text[start:start + 1 + ends[0]] if ends else text[start:]


def run_in_shell(script, folder):
    """Run `script` as printed, through bash, in a project folder with its .venv."""
    with_project_python(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True,
                          env=env, timeout=60)


# --- Quick start ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python dalio_lite.py",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
])
def test_readme_keeps_its_two_commands(command):
    assert f"```bash\n{command}\n```" in section(README, "## Quick start")
    ci = (ROOT / ".ci" / "run").read_text()
    if "[test]" in command:
        assert "pip install --quiet -e '.[test]'" in ci and "-m pytest" in ci


def test_pip_and_streamlit_are_the_projects():
    """Every pip and streamlit a reader is told to run is the virtual environment's."""
    told = [(page, text[:m.start()].rsplit("\n", 1)[-1], m.group()) for page, text in
            PAGES.items() for m in re.finditer(r"\b(pip|streamlit) (install|run)\b", text)]
    assert told, "README tells how to install extras"
    bare = [t for t in told if not t[1].endswith((".venv/bin/", ".venv/bin/python -m "))]
    assert bare == []


# --- the one-liners -------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["restore-latest", "restore-specific"])
def test_one_liners_use_the_projects_python_and_say_where_to_run(marker):
    assert one_liner(marker).startswith(".venv/bin/python -c '\n")
    text = section(README, "### Manual, from Python (the original one-liners)")
    assert f"<!-- one-liner: {marker} -->" in text
    assert "Run these from the project folder" in text


def test_restore_latest_one_liner(state_file, project):
    original = state_file.read_bytes()
    BackupManager().backup_state_file(state_file)
    state_file.unlink()
    proc = run_in_shell(one_liner("restore-latest"), project)
    assert proc.stdout.strip() == "Restore: SUCCESS", proc.stderr
    assert state_file.read_bytes() == original


def test_restore_specific_one_liner(project):
    name = "last_rebalance_2026-02-17_10-30-00.json"
    wanted = rebalance_doc(n="from the original module")
    (project / "backups").mkdir()
    (project / "backups" / name).write_bytes(wanted)
    (project / "backups" / (name + ".sha256")).write_text(
        f"{hashlib.sha256(wanted).hexdigest()}  {name}\n")
    (project / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n="newer"))
    proc = run_in_shell(one_liner("restore-specific"), project)
    assert proc.stdout.strip() == "Restore: SUCCESS", proc.stderr
    assert (project / "state" / "last_rebalance.json").read_bytes() == wanted


def test_one_liner_reports_failure(project):
    (project / "backups").mkdir()
    proc = run_in_shell(one_liner("restore-latest"), project)
    assert proc.stdout.strip() == "Restore: FAILED"
    assert "no valid backup" in proc.stderr


def test_one_liner_from_another_folder_says_where_it_looked(tmp_path):
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    proc = run_in_shell(one_liner("restore-latest"), elsewhere)
    assert proc.stdout.strip() == "Restore: FAILED"
    assert proc.stderr.strip() == (
        "no valid backup of state/last_rebalance.json (backups: no backups found: looked "
        f"in {elsewhere / 'backups'}, which does not exist)")
    assert "from elsewhere they print `FAILED` and name the folder" in " ".join(
        section(README, "### Manual, from Python (the original one-liners)").split())


def test_the_specs_one_liner_fails_as_readme_says(state_file, project):
    """README: the spec's form restores the file and then dies with NameError, exit 1."""
    said = " ".join(section(README, "### Manual, from Python (the original one-liners)")
                    .split())
    assert '(`"SUCCESS" if success else "FAILED"`)' in said
    assert "restores the file and then fails with `NameError: name 'SUCCESS' is not " \
           "defined` (exit 1)" in said
    assert '"SUCCESS" if success else "FAILED"' in SPEC_ONE_LINER
    original = state_file.read_bytes()
    BackupManager().backup_state_file(state_file)
    state_file.unlink()
    proc = run_in_shell(SPEC_ONE_LINER.replace("python -c", ".venv/bin/python -c"), project)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("NameError: name 'SUCCESS' is not defined")
    assert state_file.read_bytes() == original, "it restored before it failed"


# --- crontab --------------------------------------------------------------------------


def crontab_lines():
    """The command of every crontab line README and docs/ print (```cron blocks)."""
    return [command for text in PAGES.values()
            for block in re.findall(r"```cron\n(.*?)```", text, re.S)
            for command in commands_of(block)]


def commands_of(crontab):
    """The commands of a crontab's lines: no comments, no NAME=value settings."""
    return [line.split(None, 5)[5] for line in crontab.splitlines()
            if line.strip() and not line.startswith("#") and not re.match(r"\w+=", line)]


def scheduled_for_cron(checkout):
    """What `.venv/bin/python dalio_lite.py --schedule cron` prints in `checkout`."""
    proc = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "dalio_lite.py",
                           "--schedule", "cron"], cwd=checkout, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def only(commands, word):
    (command,) = [c for c in commands if word in c]
    return command


def as_installed(command, checkout, textfile=None):
    """The line with the docs' example folders replaced by this test's."""
    command = command.replace("/opt/daliolite", shlex.quote(str(checkout)))
    return command.replace("/var/lib/node_exporter/textfile", str(textfile))


def cron(command, home, **env):
    """Run a crontab command as cron does: /bin/sh -c, cron's small environment."""
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                          timeout=120, cwd=home, env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                                                      "LOGNAME": "dalio", "SHELL": "/bin/sh",
                                                      **env})


def test_every_crontab_line_is_tested():
    commands = crontab_lines()
    assert len(commands) == 4
    for word in ("dalio_lite.py", "--max-age-hours", "--format prometheus", " drill "):
        only(commands, word)
    for command in commands:
        assert "%" not in command, "cron ends a command at an unescaped %"


def test_readmes_crontab_is_what_schedule_cron_prints(tmp_path):
    """README prints `--schedule cron`'s output for a checkout in /opt/daliolite whose
    interpreter is /opt/daliolite/.venv/bin/python."""
    checkout = fresh_checkout(tmp_path / "daliolite")
    printed = scheduled_for_cron(checkout).replace(sys.executable,
                                                   "/opt/daliolite/.venv/bin/python")
    assert marked("schedule", "cron") == printed.replace(str(checkout), "/opt/daliolite")
    assert "`.venv/bin/python dalio_lite.py --schedule cron`" in section(
        README, "### Run it every day")


def test_crontab_lines_work_as_printed_on_a_fresh_checkout(tmp_path):
    commands = crontab_lines()
    checkout = fresh_checkout(tmp_path / "daliolite")
    assert not (checkout / "logs").exists() and not (checkout / "state").exists()
    daily = as_installed(only(commands, "dalio_lite.py"), checkout)
    for run in (1, 2):
        ran = cron(daily, tmp_path)
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", ""), "nothing to mail"
        log = (checkout / "logs" / "dalio.log").read_text()
        assert log.count("INFO dalio_lite: done: ") == run, log
    assert "decision: rebalanced" in log
    bm = BackupManager.from_config(checkout / "config.yaml")
    for name in STATE_FILES:
        newest = bm.list_backups(name)[0]
        assert newest.path.read_bytes() == (checkout / "state" / name).read_bytes()
    health = cron(as_installed(only(commands, "--max-age-hours"), checkout), tmp_path)
    assert (health.returncode, health.stdout) == (0, ""), health
    assert (checkout / "logs" / "health.log").read_text().endswith("status: OK\n")
    weekly = cron(as_installed(only(commands, " drill "), checkout), tmp_path)
    assert (weekly.returncode, weekly.stdout) == (0, ""), weekly
    assert (checkout / "logs" / "weekly.log").read_text().endswith(
        "drill: every state file can be recovered\n")
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    metrics = cron(as_installed(only(commands, "--format prometheus"), checkout, textfile),
                   tmp_path)
    assert metrics.returncode == 0, metrics.stderr
    assert [p.name for p in textfile.iterdir()] == ["dalio_backup.prom"]
    assert "\ndalio_backup_status_ok 1\n" in (textfile / "dalio_backup.prom").read_text()


def test_a_failing_crontab_line_prints_its_log_for_cron_to_mail(tmp_path):
    checkout = fresh_checkout(tmp_path / "daliolite")
    (checkout / "state").mkdir()
    (checkout / "state" / "last_rebalance.json").write_bytes(
        rebalance_doc(datetime(2099, 1, 1, tzinfo=UTC)))  # ahead of the clock: it refuses
    ran = cron(as_installed(only(crontab_lines(), "dalio_lite.py"), checkout), tmp_path)
    assert ran.returncode == 0 and ran.stderr == ""
    mailed = ran.stdout.splitlines()
    assert 0 < len(mailed) <= 20 and mailed == \
        (checkout / "logs" / "dalio.log").read_text().splitlines()[-len(mailed):]
    assert "CRITICAL dalio_lite: refusing to trade: the state records a moment ahead" in \
        ran.stdout
    assert "MAILTO=you@example.com\n" in marked("schedule", "cron")


# --- S3 and the machine that is gone ----------------------------------------------------


def test_s3_set_up_and_machine_loss_as_readme_prints_them(tmp_path, bucket):
    endpoint, name = bucket
    old = fresh_checkout(tmp_path / "old")
    example = yaml.safe_load(marked("config", "s3"))["backup"]
    assert example["cloud_enabled"] is True and set(example) <= set(BACKUP_DEFAULTS)
    doc = yaml.safe_load((old / "config.yaml").read_text())
    # The reader's own bucket; a moto server on 127.0.0.1 stands in for S3.
    doc["backup"].update(example, s3_bucket=name, s3_endpoint_url=endpoint)
    (old / "config.yaml").write_text(yaml.safe_dump(doc))
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    first = cron("cd old && .venv/bin/python dalio_lite.py", tmp_path, **aws)
    assert first.returncode == 0, first.stderr
    for command in marked("commands", "s3-setup").splitlines():
        ran = cron(f"cd old && {command}", tmp_path, **aws)
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
    assert ran.stdout.strip().endswith("drill: every state file can be recovered")
    # README: print the jobs again; the weekly line then reads the bucket.
    assert "print the jobs\n   again (`--schedule`): the weekly check then reads the bucket " \
           "too" in PAGES["docs/recovery.md"]
    weekly = only(commands_of(scheduled_for_cron(old)), " drill ")
    assert " verify --cloud >> " in weekly and " drill --cloud >> " in weekly
    ran = cron(weekly, tmp_path, **aws)
    assert (ran.returncode, ran.stdout) == (0, ""), ran
    uploaded = remote_keys(endpoint, name)
    for file_name in STATE_FILES:
        stem = file_name.removesuffix(".json")
        assert any(k.startswith(f"{example['s3_prefix']}/{stem}_") for k in uploaded)

    new = fresh_checkout(tmp_path / "new")  # the machine is gone: a new one, a new clone
    shutil.copy(old / "config.yaml", new / "config.yaml")
    again = cron("cd new && .venv/bin/python dalio_lite.py", tmp_path, **aws)
    assert again.returncode == 0, again.stderr
    for file_name in ("last_rebalance.json", "paper_account.json"):
        assert (new / "state" / file_name).read_bytes() == \
            (old / "state" / file_name).read_bytes(), "restored, and nothing traded"
    assert "decision: rebalanced" not in again.stderr
    assert BackupManager.from_config(new / "config.yaml").list_backups("last_rebalance.json")


def test_a_container_with_an_ephemeral_disk_as_docs_print_it(tmp_path, bucket):
    """docs/platforms.md: every start on an empty disk restores from the bucket; the
    job's line sends what is owed; a bucket that cannot be listed at start refuses."""
    endpoint, name = bucket
    line = marked("commands", "container").strip()
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

    def container(folder, s3_endpoint):
        disk = fresh_checkout(tmp_path / folder)  # the image, on a fresh disk
        doc = yaml.safe_load((disk / "config.yaml").read_text())
        doc["backup"].update(cloud_enabled=True, s3_bucket=name, s3_region="us-east-1",
                             s3_endpoint_url=s3_endpoint)
        (disk / "config.yaml").write_text(yaml.safe_dump(doc))
        return disk, cron(f"cd {folder} && {line}", tmp_path, **aws)

    first, ran = container("day1", endpoint)
    assert ran.returncode == 0 and "decision: rebalanced" in ran.stderr, ran.stderr
    assert ran.stdout.endswith("copied 0, pending 0\n"), ran.stdout
    second, ran = container("day2", endpoint)  # the first container is gone, and its disk
    assert ran.returncode == 0, ran.stderr
    assert "decision: rebalanced" not in ran.stderr
    for file_name in ("last_rebalance.json", "paper_account.json"):
        assert (second / "state" / file_name).read_bytes() == \
            (first / "state" / file_name).read_bytes()
    unreachable, ran = container("day3", f"http://127.0.0.1:{refused_port()}")
    assert ran.returncode == 3 and "refusing to trade" in ran.stderr, ran.stderr
    assert "order:" not in ran.stderr
    assert not (unreachable / "state" / "last_rebalance.json").exists()


# --- what status reports ----------------------------------------------------------------


def test_readme_explains_every_problem_status_can_print():
    """Each rule of status_problems, made to fire, has its row in "What status reports"."""
    from backup_manager import status_problems
    from backup_manager.problems import ProblemKind

    rows = [line for line in section(README, "### What `status` reports").splitlines()
            if line.startswith("| `")]
    stale = {"path": "state/x.json", "state_file": "x.json", "live": "not backed up",
             "stamped_in_future": ["x_2099-01-01_00-00-00.000000Z.json"], "newest_valid": "n",
             "newest_valid_age_seconds": 7200.0}
    facts = {"backup_dir": "backups", "last_backup_error": "disk full",
             "backups_unwritable": "Read-only file system",
             "state_files": [stale, {**stale, "live": "backed up", "stamped_in_future": [],
                                     "newest_valid": None}],
             "targets": [{"target": "s3://b/p", "pending": 2, "conflicts": 1,
                          "oldest_pending_age_seconds": 7200.0, "last_success": None,
                          "last_error": "x", "protection": {
                              "lock_refused": True,
                              "asked": {"mode": "GOVERNANCE", "days": 30}}}],
             "unconfigured_targets": [{"target": "s3", "pending": 3,
                                       "oldest_pending_age_seconds": 1.0}],
             "refused_copies": [{"store": "s3://b/p", "name": "point-0000000009.json",
                                 "why": "it carries no signature"}]}
    stale["newest_damaged"] = "x_2026-01-01_00-00-00.000000Z.json"
    facts["recovery"] = {"refused": {"headline": "h", "reasons": [["x.json", "lost"]],
                                     "commands": ["c"]}, "unseen": {"s3": "503"}}
    facts["points"] = {"newest_damaged": "checksum mismatch", "name": "point-0000000002.json",
                       "open_intents": [{"sequence": 1, "time": "2026-12-05T15:45:00+00:00",
                                         "writer": "9de7baf44418", "orders": [
                                             {"client_order_id": "daliolite-x", "side": "buy",
                                              "symbol": "VTI", "notional": 100.0}]}]}
    problems = status_problems(facts, max_age_hours=1) + status_problems(
        {**facts, "state_files": []})
    assert {p.kind for p in problems} == set(ProblemKind), "every kind is made to fire"
    explained = set()
    for problem in problems:
        what = problem.what
        matching = [row for row in rows if _row_matches(row, what)]
        assert matching, f"README lacks: {what}"
        explained.update(matching)
    assert explained == set(rows), "every row is a PROBLEM status prints"


def _row_matches(row, problem):
    """A row's first cell, with its placeholders (X, N, TARGET, NAME, ...), matches."""
    pattern = row.split("`")[1]
    pattern = re.escape(pattern).replace(r"\.\.\.", ".*")
    for placeholder in ("state/X", "NAME", "TARGET", "X", "N", r"30\.0h", r"2\.0d"):
        pattern = pattern.replace(placeholder, ".+")
    return re.match(pattern, problem) is not None


# --- README and docs/ hold together -------------------------------------------------------


def anchors(text):
    """The anchors GitHub gives the headings of a Markdown file."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_link_resolves_and_every_reference_is_linked_from_readme():
    for page, text in PAGES.items():
        folder = (ROOT / page).parent
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (folder / path).resolve() if path else ROOT / page
            assert linked.is_file(), f"{page} links to {target}: no such file"
            if anchor:
                assert anchor in anchors(linked.read_text()), f"{page}: no anchor {target}"
    linked_from_readme = set(re.findall(r"\]\((docs/[^)#\s]+)", README))
    assert linked_from_readme == set(PAGES) - {"README.md"}


def test_readme_stays_what_a_user_reads_first():
    assert len(README.splitlines()) <= 270  # about 250: the first things a user reads
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings == ["Quick start", "What is guaranteed", "When something is wrong",
                        "Where to go next"]


def test_one_install_folder_in_every_example():
    folders = {m for text in PAGES.values() for m in re.findall(r"/opt/[\w.-]+", text)}
    assert folders == {"/opt/daliolite"}
