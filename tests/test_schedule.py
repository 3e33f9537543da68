"""`dalio_lite.py --schedule launchd|systemd|cron` on a fresh copy of the checkout (in a
folder whose name has a space): what it prints parses as each platform parses it, and
each job, run the way that platform runs it (no shell, a bare environment plus the
secrets file, the working directory set, output to the log files), completes; a failure
reaches a person. Also the secrets file (.env) itself. cron's lines are run through a
real shell by tests/test_readme.py, which holds README's crontab block to the output."""

from __future__ import annotations

import os
import plistlib
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from backup_manager import BackupManager, ConfigError
from dalio_schedule import load_env_file, read_env_file
from tests.fake_alpaca import API_KEY, KEYS_ENV, SECRET_KEY
from tests.helpers import fresh_checkout, rebalance_doc

STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")
LAUNCHD_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}  # what launchd gives an agent
SYSTEMD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}


@pytest.fixture
def checkout(tmp_path):
    return fresh_checkout(tmp_path / "dalio lite")


@pytest.fixture
def user_home(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def schedule(checkout, user_home, platform, *flags):
    """`.venv/bin/python dalio_lite.py --schedule PLATFORM`, run in the checkout."""
    return subprocess.run([str(checkout / ".venv" / "bin" / "python"), "dalio_lite.py",
                           "--schedule", platform, *flags], cwd=checkout, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HOME": str(user_home)})


def printed_files(stdout):
    """The files `--schedule` prints, each after a line `==> PATH <==`."""
    parts = re.split(r"^==> (.+) <==\n", stdout, flags=re.M)
    assert parts[0] == ""
    return {Path(path): text.removesuffix("\n") for path, text in zip(parts[1::2], parts[2::2],
                                                                      strict=True)}


def write_env(checkout, mode=0o600, **variables):
    path = checkout / ".env"
    path.write_text("# DalioLite's secrets\n" + "".join(f"{k}={v}\n" for k, v in variables.items()))
    path.chmod(mode)
    return path


def on_alpaca(checkout, server):
    config = checkout / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["broker"].update(kind="alpaca", base_url=server.url)
    doc["backup"]["state_files"].remove("state/paper_account.json")  # as config.yaml says
    config.write_text(yaml.safe_dump(doc))


def all_backed_up(checkout):
    bm = BackupManager.from_config(checkout / "config.yaml")
    for name in STATE_FILES:
        assert bm.list_backups(name)[0].path.read_bytes() == \
            (checkout / "state" / name).read_bytes()


def recording(tool, folder):
    """A stand-in for a tool DalioLite asks to tell a person (macOS's osascript, an MTA's
    sendmail): it records its arguments and what it read."""
    folder.mkdir(exist_ok=True)
    script = folder / tool
    record = folder / f"{tool}.calls"
    script.write_text(f"#!/bin/sh\n{{ printf '%s\\n' \"$@\"; cat; echo ---; }} >> "
                      f"{shlex.quote(str(record))}\n")
    script.chmod(0o755)
    return record


# --- launchd -----------------------------------------------------------------------------


def launchd_jobs(checkout, user_home):
    proc = schedule(checkout, user_home, "launchd")
    assert proc.returncode == 0, proc.stderr
    return {path: plistlib.loads(text.encode()) for path, text in
            printed_files(proc.stdout).items()}


def as_launchd_runs(plist, home, path=None):
    """Start a LaunchAgent's ProgramArguments as launchd does: no shell, launchd's bare
    environment, WorkingDirectory, stdout and stderr appended to their paths."""
    with open(plist["StandardOutPath"], "ab") as out, open(plist["StandardErrorPath"],
                                                              "ab") as err:
        return subprocess.run(plist["ProgramArguments"], cwd=plist["WorkingDirectory"],
                              env={**LAUNCHD_ENV, "HOME": str(home),
                                   **({"PATH": f"{path}:{LAUNCHD_ENV['PATH']}"} if path else {})},
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=120).returncode


def by_label(plists):
    return {p["Label"]: p for p in plists.values()}


def test_launchd_agents_parse_and_run_as_launchd_runs_them(checkout, user_home):
    plists = launchd_jobs(checkout, user_home)
    agents = user_home / "Library" / "LaunchAgents"
    assert set(plists) == {agents / f"com.daliolite.{n}.plist" for n in ("daily", "health",
                                                                          "weekly")}
    assert not agents.exists(), "it installs nothing"
    jobs = by_label(plists)
    assert jobs["com.daliolite.daily"]["StartCalendarInterval"] == [
        {"Minute": 45, "Hour": 15, "Weekday": day} for day in (1, 2, 3, 4, 5)]
    assert jobs["com.daliolite.health"]["StartCalendarInterval"] == [{"Minute": 0}]
    assert jobs["com.daliolite.weekly"]["StartCalendarInterval"] == [
        {"Minute": 30, "Hour": 3, "Weekday": 0}]
    logs = checkout / "logs"
    for plist in plists.values():
        assert plist["WorkingDirectory"] == str(checkout)
        assert Path(plist["StandardOutPath"]).parent == logs
        assert plist["StandardOutPath"] == plist["StandardErrorPath"]
        assert all(Path(a).is_absolute() for a in plist["ProgramArguments"][:2])

    assert as_launchd_runs(jobs["com.daliolite.daily"], user_home) == 0
    daily_log = (logs / "dalio.log").read_text()
    assert "decision: rebalanced" in daily_log and "INFO dalio_lite: done: rebalanced" in daily_log
    all_backed_up(checkout)
    assert as_launchd_runs(jobs["com.daliolite.health"], user_home) == 0
    assert (logs / "health.log").read_text().endswith("status: OK\n")
    assert as_launchd_runs(jobs["com.daliolite.weekly"], user_home) == 0
    weekly = (logs / "weekly.log").read_text()
    assert "file(s): all ok\n" in weekly and "every state file can be recovered" in weekly
    assert not (logs / "failures.log").exists()


def test_launchd_daily_check_takes_the_alpaca_keys_from_the_secrets_file(checkout, user_home,
                                                                         alpaca_server):
    on_alpaca(checkout, alpaca_server)
    write_env(checkout, **KEYS_ENV)
    proc = schedule(checkout, user_home, "launchd")
    assert API_KEY not in proc.stdout + proc.stderr and SECRET_KEY not in proc.stdout
    assert f"Secrets: {checkout / '.env'}, which sets ALPACA_API_KEY, ALPACA_SECRET_KEY." \
        in proc.stderr
    daily = by_label({p: plistlib.loads(t.encode()) for p, t in
                      printed_files(proc.stdout).items()})["com.daliolite.daily"]
    assert as_launchd_runs(daily, user_home) == 0, (checkout / "logs" / "dalio.log").read_text()
    assert len(alpaca_server.orders) == 4, "the keys reached the broker: it took the orders"
    assert "decision: rebalanced" in (checkout / "logs" / "dalio.log").read_text()


def test_launchd_weekly_check_takes_aws_keys_from_the_secrets_file(checkout, user_home,
                                                                   bucket):
    """Under launchd every job reads .env, python -m backup_manager too: with the keys
    there alone, the weekly check reads the bucket; without them it cannot."""
    endpoint, name = bucket
    config = checkout / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"].update(cloud_enabled=True, s3_bucket=name, s3_region="us-east-1",
                         s3_endpoint_url=endpoint)
    config.write_text(yaml.safe_dump(doc))
    jobs = by_label(launchd_jobs(checkout, user_home))
    assert jobs["com.daliolite.weekly"]["ProgramArguments"][-3:] == [
        "weekly", "--config", str(config)]
    env_file = write_env(checkout, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="t")
    assert as_launchd_runs(jobs["com.daliolite.daily"], user_home) == 0
    weekly = checkout / "logs" / "weekly.log"
    env_file.rename(checkout / "elsewhere")
    assert as_launchd_runs(jobs["com.daliolite.weekly"], user_home) == 1
    assert "no AWS credentials found" in weekly.read_text(), "no keys without .env"
    assert "weekly check failed (exit 1: " in (checkout / "logs" / "failures.log").read_text()
    (checkout / "elsewhere").rename(env_file)
    assert as_launchd_runs(jobs["com.daliolite.weekly"], user_home) == 0, weekly.read_text()
    assert weekly.read_text().endswith("drill: every state file can be recovered\n")
    assert re.search(r" s3 +\d+ ms +ok\n", weekly.read_text()), "restored from the bucket"


def refusing(checkout):
    """Make the daily check refuse (exit 3): a last rebalance ahead of the clock."""
    (checkout / "state").mkdir()
    ahead = rebalance_doc(datetime(2099, 1, 1, tzinfo=UTC))
    (checkout / "state" / "last_rebalance.json").write_bytes(ahead)
    return ahead


def test_a_failed_launchd_job_writes_a_line_and_posts_a_notification(checkout, user_home,
                                                                     tmp_path):
    jobs = by_label(launchd_jobs(checkout, user_home))
    ahead = refusing(checkout)
    notified = recording("osascript", tmp_path / "bin")
    assert as_launchd_runs(jobs["com.daliolite.daily"], user_home, path=tmp_path / "bin") == 3
    log = checkout / "logs" / "dalio.log"
    assert "refusing to trade: the state records a moment ahead" in log.read_text()
    (line,) = (checkout / "logs" / "failures.log").read_text().splitlines()
    assert re.fullmatch(
        rf"\S+Z DalioLite daily check failed \(exit 3: {re.escape(sys.executable)} .*\); "
        rf"its log: {re.escape(str(log))}", line)
    assert line in log.read_text(), "the line is in the job's log too"
    assert notified.read_text().splitlines()[:2] == [
        "-e", f'display notification "daily check failed: see {log}" with title "DalioLite"']
    assert (checkout / "state" / "last_rebalance.json").read_bytes() == ahead


def test_a_launchd_job_refuses_a_secrets_file_others_can_read(checkout, user_home, tmp_path):
    jobs = by_label(launchd_jobs(checkout, user_home))
    write_env(checkout, mode=0o644, ALPACA_API_KEY="k")
    notified = recording("osascript", tmp_path / "bin")
    assert as_launchd_runs(jobs["com.daliolite.health"], user_home, path=tmp_path / "bin") == 1
    said = (checkout / "logs" / "health.log").read_text()
    assert f"can be read or changed by other users (mode 0644); it holds keys: make it yours " \
           f"alone with: chmod 600 {checkout / '.env'}" in said
    assert "status:" not in said, "the check itself never ran"
    assert "health check failed" in notified.read_text()


# --- systemd -----------------------------------------------------------------------------


def systemd_units(checkout, user_home, *flags):
    proc = schedule(checkout, user_home, "systemd", *flags)
    assert proc.returncode == 0, proc.stderr
    return printed_files(proc.stdout)


def keys(text):
    """A unit file as (section, key, value) triples, in order."""
    found, section = [], None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.append((section, key, value))
    return found


def values(text, key):
    return [v for _, k, v in keys(text) if k == key]


def verified(folder, names, *flags, env=None):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); CI installs it")
    return subprocess.run(["systemd-analyze", *flags, "verify", *names], cwd=folder,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("system", [False, True], ids=["user units", "system units"])
def test_systemd_analyze_accepts_the_units(checkout, user_home, tmp_path, system):
    units = systemd_units(checkout, user_home, *(["--system"] if system else []))
    folder = Path("/etc/systemd/system") if system else user_home / ".config/systemd/user"
    names = [f"daliolite-{job}.{kind}" for job in ("daily", "health", "weekly")
             for kind in ("service", "timer")] + ["daliolite-failure@.service"]
    assert set(units) == {folder / name for name in names}
    assert not (user_home / ".config").exists(), "it installs nothing"
    written = tmp_path / "units"
    written.mkdir()
    for path, text in units.items():
        (written / path.name).write_text(text)
    runtime = tmp_path / "runtime"  # a user manager needs one, as a login session has
    runtime.mkdir(mode=0o700)
    instance = "daliolite-failure@daliolite-daily.service.service"
    proc = verified(written, [*names, instance], *([] if system else ["--user"]),
                    env={"XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", str(runtime))})
    assert (proc.returncode, proc.stderr) == (0, "")
    user = [v for text in units.values() for v in values(text, "User")]
    assert user == ([pwd.getpwuid(os.getuid()).pw_name] * 4 if system else [])


def test_systemd_analyze_reports_a_misspelled_key(checkout, user_home, tmp_path):
    """What the test above relies on: verify says so on stderr when a key is wrong."""
    units = systemd_units(checkout, user_home, "--system")
    (tmp_path / "daliolite-daily.timer").write_text(
        units[Path("/etc/systemd/system/daliolite-daily.timer")].replace("Persistent=",
                                                                          "Persistant="))
    proc = verified(tmp_path, ["daliolite-daily.timer"])
    assert "Unknown key 'Persistant'" in proc.stderr


def test_systemd_timers_and_services_say_what_the_issue_asks(checkout, user_home):
    units = {p.name: t for p, t in systemd_units(checkout, user_home).items()}
    for job, calendar in (("daily", "Mon..Fri *-*-* 15:45:00"), ("health", "*-*-* *:00:00"),
                          ("weekly", "Sun *-*-* 03:30:00")):
        timer, service = units[f"daliolite-{job}.timer"], units[f"daliolite-{job}.service"]
        assert values(timer, "OnCalendar") == [calendar]
        assert values(timer, "Persistent") == ["true"], "a day missed while off runs at boot"
        assert values(timer, "WantedBy") == ["timers.target"]
        assert values(service, "OnFailure") == ["daliolite-failure@%n.service"]
        assert values(service, "EnvironmentFile") == [f"-{checkout / '.env'}"]
        assert values(service, "Type") == ["oneshot"]


def as_systemd_runs(unit, home, instance=None, path=None):
    """Run a service's ExecStart lines as systemd does: in turn until one fails, no shell,
    its environment (EnvironmentFile=, Environment=), WorkingDirectory, the outputs it
    names (append:), %i its instance."""
    env = {**SYSTEMD_ENV, "HOME": str(home)}
    for name in values(unit, "EnvironmentFile"):
        file = Path(name.removeprefix("-"))
        if file.exists() or not name.startswith("-"):
            env |= dict(line.split("=", 1) for line in file.read_text().splitlines()
                        if "=" in line and not line.startswith("#"))
    env |= dict(v.split("=", 1) for v in values(unit, "Environment"))
    if path:
        env["PATH"] = f"{path}:{env['PATH']}"
    outputs = {key: open(value.removeprefix("append:"), "ab")  # noqa: SIM115
               for key in ("StandardOutput", "StandardError") for value in values(unit, key)}
    try:
        for line in values(unit, "ExecStart"):
            argv = [w.replace("%i", instance or "") for w in shlex.split(line)]
            status = subprocess.run(argv, cwd=values(unit, "WorkingDirectory")[0], env=env,
                                    stdin=subprocess.DEVNULL,
                                    stdout=outputs.get("StandardOutput", subprocess.PIPE),
                                    stderr=outputs.get("StandardError", subprocess.PIPE),
                                    timeout=120).returncode
            if status:
                return status
        return 0
    finally:
        for file in outputs.values():
            file.close()


def test_systemd_services_run_as_systemd_runs_them(checkout, user_home, alpaca_server):
    on_alpaca(checkout, alpaca_server)
    write_env(checkout, **KEYS_ENV)
    units = {p.name: t for p, t in systemd_units(checkout, user_home).items()}
    assert not any(API_KEY in t or SECRET_KEY in t for t in units.values()), \
        "secrets never go into a unit"
    logs = checkout / "logs"
    assert as_systemd_runs(units["daliolite-daily.service"], user_home) == 0
    assert len(alpaca_server.orders) == 4
    assert "INFO dalio_lite: done: rebalanced" in (logs / "dalio.log").read_text()
    assert as_systemd_runs(units["daliolite-health.service"], user_home) == 0
    assert (logs / "health.log").read_text().endswith("status: OK\n")
    assert as_systemd_runs(units["daliolite-weekly.service"], user_home) == 0
    assert (logs / "weekly.log").read_text().endswith(
        "drill: every state file can be recovered\n")


def test_a_failed_systemd_job_mails_its_log_through_on_failure(checkout, user_home, tmp_path):
    units = {p.name: t for p, t in systemd_units(checkout, user_home).items()}
    refusing(checkout)
    assert as_systemd_runs(units["daliolite-daily.service"], user_home) == 3
    mailed = recording("sendmail", tmp_path / "bin")
    failure = units["daliolite-failure@.service"]
    assert as_systemd_runs(failure, user_home, "daliolite-daily.service", tmp_path / "bin") == 0
    args, _, mail = mailed.read_text().partition("To: ")
    assert args.split() == ["-oi", "-t"]
    header, _, body = mail.partition("\n\n")
    assert header == "you@example.com\nSubject: DalioLite daily check failed"
    log = checkout / "logs" / "dalio.log"
    assert f"DalioLite daily check failed (systemd started its OnFailure= unit); its log: " \
           f"{log}" in body
    assert "refusing to trade" in body.split("The last lines of its log:\n")[1]
    assert "daily check failed" in (checkout / "logs" / "failures.log").read_text()


# --- the secrets file ---------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("A=1\n", {"A": "1"}),
    ("# comment\n; comment\n\n  B = two words \n", {"B": "two words"}),
    ("C=\"quoted\"\nD='single'\nE=\n", {"C": "quoted", "D": "single", "E": ""}),
    ("F=a/b+c=d\n", {"F": "a/b+c=d"}),  # an AWS secret key's characters
])
def test_the_secrets_file_reads_as_systemd_reads_it(tmp_path, text, expected):
    path = tmp_path / ".env"
    path.write_text(text)
    path.chmod(0o600)
    assert read_env_file(path) == expected


@pytest.mark.parametrize("line, problem", [
    ("export A=1", "line 2: expected KEY=value (no 'export': systemd reads this file too)"),
    ("1A=1", "line 2: expected KEY=value"),
    ("JUST_A_NAME", "line 2: expected KEY=value"),
    ("A=x$y", "line 2: the value of A holds a quote, a backslash, a $"),
    ("A=x\\y", "line 2: the value of A holds"),
    ("A=\"x\"y\"", "line 2: the value of A holds"),
    ("A=x #note", "line 2: the value of A holds"),
])
def test_the_secrets_file_refuses_what_its_readers_read_differently(tmp_path, line, problem):
    path = tmp_path / ".env"
    path.write_text(f"OK=1\n{line}\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        read_env_file(path)
    assert f"{path}, {problem}" in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o700])
def test_the_secrets_file_is_yours_alone(tmp_path, mode):
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    path.chmod(mode)
    if mode == 0o700:
        assert read_env_file(path) == {"A": "1"}
        return
    with pytest.raises(ConfigError, match=rf"\(mode {mode:04o}\).*chmod 600 {path}$"):
        read_env_file(path)


def test_no_secrets_file_is_nothing_and_a_folder_is_an_error(tmp_path):
    assert read_env_file(tmp_path / ".env") == {}
    (tmp_path / ".env").mkdir()
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_env_file(tmp_path / ".env")


def test_loading_never_overrides_the_environment(tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_text("DALIO_T_SET=from file\nDALIO_T_NEW=new\n")
    path.chmod(0o600)
    monkeypatch.setenv("DALIO_T_SET", "from the environment")
    monkeypatch.delenv("DALIO_T_NEW", raising=False)
    assert load_env_file(path) == ["DALIO_T_NEW"]
    assert os.environ["DALIO_T_SET"] == "from the environment"
    assert os.environ["DALIO_T_NEW"] == "new"
    monkeypatch.delenv("DALIO_T_NEW")
    path.write_text("DALIO_T_NEW=new\nBAD LINE\n")
    with pytest.raises(ConfigError):
        load_env_file(path)
    assert "DALIO_T_NEW" not in os.environ, "a refused file sets nothing"


def dalio(checkout, env):
    """The daily check started the cron way: the host alone, a small environment."""
    return subprocess.run([sys.executable, str(checkout / "dalio_lite.py"), "--config",
                           str(checkout / "config.yaml")], cwd=checkout.parent,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(checkout), **env})


def test_the_host_reads_the_secrets_file_beside_its_config(checkout, alpaca_server):
    on_alpaca(checkout, alpaca_server)
    write_env(checkout, **KEYS_ENV)
    proc = dalio(checkout, {})
    assert proc.returncode == 0, proc.stderr
    assert len(alpaca_server.orders) == 4
    assert API_KEY not in proc.stderr and SECRET_KEY not in proc.stderr


def test_the_environment_wins_over_the_secrets_file(checkout, alpaca_server):
    on_alpaca(checkout, alpaca_server)
    write_env(checkout, ALPACA_API_KEY="stale-key", ALPACA_SECRET_KEY=SECRET_KEY)
    proc = dalio(checkout, KEYS_ENV)
    assert proc.returncode == 0, proc.stderr
    assert len(alpaca_server.orders) == 4
    refused = dalio(checkout, {})  # the stale key alone: the broker refuses it
    assert refused.returncode == 4 and "HTTP 401" in refused.stderr


def test_the_host_refuses_a_secrets_file_others_can_read(checkout):
    env_file = write_env(checkout, mode=0o640, ALPACA_API_KEY="k")
    proc = dalio(checkout, {})
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"the secrets file {env_file} can be read or changed by other users (mode 0640); it "
        f"holds keys: make it yours alone with: chmod 600 {env_file}")
    assert not (checkout / "state").exists() and not (checkout / "backups").exists()


# --- the command ---------------------------------------------------------------------------


def test_a_path_a_crontab_or_unit_reads_differently_is_refused(tmp_path, user_home):
    checkout = fresh_checkout(tmp_path / "100%")
    for platform in ("cron", "launchd", "systemd"):
        proc = schedule(checkout, user_home, platform)
        assert proc.returncode == 1 and proc.stdout == ""
        assert f"{checkout} holds a character (% $ quote backslash or a control character)" \
            in proc.stderr
    assert not (checkout / "logs").exists()


def test_system_goes_with_systemd_only(checkout, user_home):
    proc = schedule(checkout, user_home, "cron", "--system")
    assert proc.returncode == 2 and "--system goes with --schedule systemd" in proc.stderr


def test_the_weekly_check_reads_the_bucket_when_the_config_sends_backups_there(checkout,
                                                                               user_home):
    config = checkout / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"].update(cloud_enabled=True, s3_bucket="b")
    config.write_text(yaml.safe_dump(doc))
    units = {p.name: t for p, t in systemd_units(checkout, user_home).items()}
    assert [line.split()[-2:] for line in values(units["daliolite-weekly.service"],
                                                  "ExecStart")] == [["verify", "--cloud"],
                                                                    ["drill", "--cloud"]]


@pytest.mark.parametrize("platform", ["cron", "launchd", "systemd"])
def test_schedule_makes_the_logs_folder_and_nothing_else(checkout, user_home, platform):
    before = set(os.listdir(checkout))
    assert schedule(checkout, user_home, platform).returncode == 0
    assert set(os.listdir(checkout)) - before == {"logs"}, "no state, no backups, no lock"
    assert (checkout / "logs").stat().st_mode & 0o777 == 0o700
    assert os.listdir(user_home) == [], "nothing installed"
    assert schedule(checkout, user_home, platform).returncode == 0, "run again: the same"
