"""Where DalioLite runs: the jobs a platform's scheduler starts for one checkout, and the
secrets file they read.

    python dalio_lite.py --schedule cron|launchd|systemd [--system] [--config PATH]
    python dalio_schedule.py run daily|health|weekly --config PATH   (what launchd starts)
    python dalio_schedule.py alert UNIT --config PATH                (systemd's OnFailure=)

`--schedule` installs nothing: it prints the crontab lines, or the files to save, on
stdout, and on stderr where each goes and how a failure reaches a person. The only
thing it makes is the logs folder the jobs write to.

The secrets file (`.env` beside config.yaml) holds KEY=value lines, is readable by its
owner only (0600), and is read the same way by DalioLite at start-up, by the launchd
jobs, and by systemd (`EnvironmentFile=`): so it takes only what all of them read alike.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import NamedTuple

from backup_manager import ConfigError

ENV_FILE = ".env"
PLATFORMS = ("cron", "launchd", "systemd")
LOG_TAIL = 20  # lines of a failed job's log that reach a person
# DalioLite imports this module at every start, for the secrets file: so Checkout and Job
# are NamedTuples, not frozen dataclasses, patterns compile on first use, and what only
# some commands need is imported where it is used. Import 2.2 ms -> 0.6 ms of an 85 ms
# no-trade run (python -X importtime).

# --- the secrets file -----------------------------------------------------------------

_ASSIGNMENT = r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)"
# systemd reads a backslash as an escape and may expand $VAR; a shell reads both and
# quotes too: a value with any of them would differ between the readers.
_READ_DIFFERENTLY = r"[\\$`\"']|\s#"


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a secrets file; {} when there is none. ConfigError names the
    file and the line for a file others may read, or a line the readers would differ on."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the secrets file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the secrets file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(f"the secrets file {path} can be read or changed by other users "
                          f"(mode {stat.S_IMODE(info.st_mode):04o}); it holds keys: make it "
                          f"yours alone with: chmod 600 {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secrets file {path}: {exc}") from None
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        found.update([_env_line(line, f"{path}, line {number}")])
    return found


def _env_line(line: str, where: str) -> tuple[str, str]:
    match = re.fullmatch(_ASSIGNMENT, line)
    if not match:
        hint = " (no 'export': systemd reads this file too)" if line.lstrip().startswith(
            "export ") else ""
        raise ConfigError(f"{where}: expected KEY=value{hint}")
    value = match[2].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    if re.search(_READ_DIFFERENTLY, value):
        raise ConfigError(f"{where}: the value of {match[1]} holds a quote, a backslash, a $, "
                          f"a ` or a ' #', which systemd and a shell read differently")
    return match[1], value


def load_env_file(path: Path) -> list[str]:
    """Put the secrets file's variables into the environment, never over one already set
    there; return the names it set. Nothing is set when the file is refused."""
    values = read_env_file(path)
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    return added


# --- the jobs ---------------------------------------------------------------------------


class Checkout(NamedTuple):
    """One installation as its jobs see it: every path absolute."""

    folder: Path   # holds dalio_lite.py and dalio_schedule.py
    python: str    # the interpreter that runs the jobs
    config: Path
    cloud: bool    # backup.cloud_enabled: the weekly check reads the bucket too

    @property
    def logs(self) -> Path:
        return self.config.parent / "logs"

    @property
    def env_file(self) -> Path:
        return self.config.parent / ENV_FILE

    @classmethod
    def here(cls, config: str | Path) -> Checkout:
        from dalio_lite import load_config

        config = Path(config).resolve()
        checkout = cls(Path(__file__).resolve().parent, os.path.abspath(sys.executable),
                       config, bool(load_config(config).backup["cloud_enabled"]))
        for path in (checkout.folder, checkout.python, checkout.config):
            if re.search(r"[\x00-\x1f\x7f%$\"'\\`]", str(path)):
                raise ConfigError(f"{path} holds a character (% $ quote backslash or a control "
                                  "character) that a crontab or a unit file reads differently: "
                                  "move the checkout or its config to a plainer path")
        return checkout


class Job(NamedTuple):
    name: str       # daily, health, weekly: the unit and label names end with it
    title: str
    log: str        # its file in logs/
    commands: tuple[tuple[str, ...], ...]  # run in turn; the first failure ends the job
    weekdays: tuple[int, ...]  # 0 is Sunday; () every day
    hour: int | None  # None: every hour
    minute: int
    when: str       # the same, said to a person


def jobs(checkout: Checkout) -> list[Job]:
    """The daily check, the hourly health check, the weekly full check and rehearsal."""
    py, config = checkout.python, str(checkout.config)
    module = (py, "-m", "backup_manager", "--config", config)
    cloud = ("--cloud",) if checkout.cloud else ()
    return [
        Job("daily", "daily check", "dalio.log",
            ((py, str(checkout.folder / "dalio_lite.py"), "--config", config),),
            (1, 2, 3, 4, 5), 15, 45, "weekdays at 15:45"),
        Job("health", "health check", "health.log",
            ((*module, "status", "--max-age-hours", "26"),), (), None, 0, "every hour"),
        Job("weekly", "weekly check", "weekly.log",
            ((*module, "verify", *cloud), (*module, "drill", *cloud)),
            (0,), 3, 30, "Sundays at 03:30"),
    ]


def job_named(name: str, checkout: Checkout) -> Job:
    """A job by its name, or by its systemd unit's (daliolite-daily.service)."""
    name = re.sub(r"^daliolite-|\.service$", "", name)
    for job in jobs(checkout):
        if job.name == name:
            return job
    raise ConfigError(f"no job {name!r}: the jobs are daily, health, weekly")


def _said(job: Job) -> str:
    return " && ".join(" ".join(c) for c in job.commands)


# --- cron ---------------------------------------------------------------------------------


def crontab(checkout: Checkout) -> str:
    """Lines for `crontab -e`. cron mails what a job prints, and each prints only when it
    fails: the last lines of its log."""
    from shlex import quote as q

    lines = ["MAILTO=you@example.com"]
    for job in jobs(checkout):
        log = q(str(checkout.logs / job.log))
        run = " && ".join(f"{' '.join(map(q, c))} >> {log} 2>&1" for c in job.commands)
        days = ",".join(map(str, job.weekdays)).replace("1,2,3,4,5", "1-5") or "*"
        hour = "*" if job.hour is None else str(job.hour)
        lines += [f"# {job.title}, {job.when}; log in {job.log}",
                  f"{job.minute} {hour} * * {days}  cd {q(str(checkout.folder))} && mkdir -p "
                  f"{q(str(checkout.logs))} && {run} || tail -n {LOG_TAIL} {log}"]
    return "\n".join(lines) + "\n"


# --- launchd (macOS) ----------------------------------------------------------------------


def launchd_plists(checkout: Checkout, home: Path) -> list[tuple[Path, bytes]]:
    """One LaunchAgent per job. launchd has no way to run a second command on failure, so
    each starts this module's `run`, which runs the job and tells a person if it fails."""
    import plistlib

    found = []
    for job in jobs(checkout):
        log = str(checkout.logs / job.log)
        at = {"Minute": job.minute} | ({} if job.hour is None else {"Hour": job.hour})
        when = [at | {"Weekday": day} for day in job.weekdays] or [at]
        plist = {
            "Label": f"com.daliolite.{job.name}",
            "ProgramArguments": [checkout.python, str(checkout.folder / "dalio_schedule.py"),
                                 "run", job.name, "--config", str(checkout.config)],
            "WorkingDirectory": str(checkout.folder),
            "StartCalendarInterval": when,
            "StandardOutPath": log,
            "StandardErrorPath": log,
        }
        found.append((home / "Library" / "LaunchAgents" / f"com.daliolite.{job.name}.plist",
                      plistlib.dumps(plist, sort_keys=False)))
    return found


# --- systemd ---------------------------------------------------------------------------------

SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def systemd_units(checkout: Checkout, home: Path, user: str | None) -> list[tuple[Path, str]]:
    """A service and a timer per job, and the service a failure starts. User units, or
    system units that run as `user` when one is given."""
    folder = Path("/etc/systemd/system") if user else home / ".config" / "systemd" / "user"
    run_as = [("User", user)] if user else []
    units = []
    for job in jobs(checkout):
        log = f"append:{checkout.logs / job.log}"
        units.append((f"daliolite-{job.name}.service", _unit(
            ("Unit", [("Description", f"DalioLite {job.title}"),
                      ("OnFailure", "daliolite-failure@%n.service")]),
            ("Service", [("Type", "oneshot"), *run_as,
                         ("WorkingDirectory", str(checkout.folder)),
                         ("EnvironmentFile", f"-{checkout.env_file}"),
                         *[("ExecStart", _systemd_words(c)) for c in job.commands],
                         ("StandardOutput", log), ("StandardError", log)]))))
        days = ",".join(SYSTEMD_DAYS[d] for d in job.weekdays).replace(
            "Mon,Tue,Wed,Thu,Fri", "Mon..Fri")
        hour = "*" if job.hour is None else f"{job.hour:02d}"
        units.append((f"daliolite-{job.name}.timer", _unit(
            ("Unit", [("Description", f"DalioLite {job.title}, {job.when}")]),
            ("Timer", [("OnCalendar", f"{days} *-*-* {hour}:{job.minute:02d}:00".lstrip()),
                       ("Persistent", "true")]),
            ("Install", [("WantedBy", "timers.target")]))))
    units.append(("daliolite-failure@.service", _unit(
        ("Unit", [("Description", "Tell a person that %i failed")]),
        ("Service", [("Type", "oneshot"), *run_as,
                     ("WorkingDirectory", str(checkout.folder)),
                     ("Environment", "MAILTO=you@example.com"),
                     ("ExecStart", _systemd_words((
                         checkout.python, str(checkout.folder / "dalio_schedule.py"), "alert",
                         "%i", "--config", str(checkout.config))))]))))
    return [(folder / name, text) for name, text in units]


def _unit(*sections: tuple[str, list[tuple[str, str]]]) -> str:
    return "\n".join(f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in keys)
                     for name, keys in sections)


def _systemd_words(command: tuple[str, ...]) -> str:
    return " ".join(f'"{w}"' if re.search(r"\s", w) else w for w in command)


# --- what a scheduler starts ------------------------------------------------------------------


def run_job(checkout: Checkout, job: Job) -> int:
    """Run a job as launchd starts it: with the secrets file's variables, each command in
    turn from the checkout; a failure is told to a person."""
    import subprocess

    try:
        load_env_file(checkout.env_file)
    except ConfigError as exc:
        alert(checkout, job, str(exc))
        return 1
    for command in job.commands:
        status = subprocess.run(command, cwd=checkout.folder, stdin=subprocess.DEVNULL).returncode
        if status:
            alert(checkout, job, f"exit {status}: {' '.join(command)}")
            return status
    return 0


def alert(checkout: Checkout, job: Job, what: str) -> None:
    """Tell a person that `job` failed: a line in logs/failures.log and on stderr (the
    job's log under launchd, the journal under systemd); a notification where macOS's
    osascript is; a mail with the log's last lines where MAILTO and sendmail are."""
    import shutil
    from datetime import UTC, datetime

    log = checkout.logs / job.log
    line = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} DalioLite {job.title} failed ({what}); " \
           f"its log: {log}"
    print(line, file=sys.stderr, flush=True)
    try:
        with open(checkout.logs / "failures.log", "a", encoding="utf-8") as failures:
            failures.write(line + "\n")
    except OSError as exc:
        print(f"cannot write {checkout.logs / 'failures.log'}: {exc.strerror}", file=sys.stderr)
    osascript = shutil.which("osascript")
    if osascript:
        text = f"{job.title} failed: see {log}".replace("\\", "\\\\").replace('"', '\\"')
        _tell([osascript, "-e", f'display notification "{text}" with title "DalioLite"'])
    sendmail = shutil.which("sendmail", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/lib")
    mailto = os.environ.get("MAILTO", "").strip()
    if mailto and sendmail:
        _tell([sendmail, "-oi", "-t"], f"To: {mailto}\nSubject: DalioLite {job.title} failed\n"
                                       f"\n{line}\n\nThe last lines of its log:\n{_tail(log)}")


def _tell(command: list[str], text: str | None = None) -> None:
    import subprocess

    try:
        subprocess.run(command, input=text, text=True, timeout=60, check=True,
                       stdout=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"could not tell a person ({command[0]}: {exc})", file=sys.stderr, flush=True)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read it: {exc.strerror})"
    return "\n".join(lines[-LOG_TAIL:]) + "\n"


# --- the command line ------------------------------------------------------------------------


def print_schedule(platform: str, config: str | Path, *, system: bool = False) -> int:
    """`dalio_lite.py --schedule PLATFORM`: the jobs on stdout, what to do on stderr."""
    try:
        checkout = Checkout.here(config)
        checkout.logs.mkdir(mode=0o700, exist_ok=True)
    except (ConfigError, OSError) as exc:
        print(f"dalio_lite.py --schedule: {exc}", file=sys.stderr)
        return 1
    home = Path.home()
    if platform == "cron":
        sys.stdout.write(crontab(checkout))
        files: list[tuple[Path, str]] = []
    elif platform == "launchd":
        files = [(p, data.decode()) for p, data in launchd_plists(checkout, home)]
    else:
        user = _user_name() if system else None
        files = systemd_units(checkout, home, user)
    for path, text in files:
        sys.stdout.write(f"==> {path} <==\n{text}\n")
    sys.stdout.flush()
    print(_instructions(platform, checkout, [p for p, _ in files], system), file=sys.stderr)
    return 0


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _instructions(platform: str, checkout: Checkout, paths: list[Path], system: bool) -> str:
    said = [f"DalioLite's jobs for {platform}, for the checkout in {checkout.folder} "
            "(nothing was installed):"]
    said += [f"  {job.title:<13} {job.when:<18} {_said(job)}  (log: {checkout.logs / job.log})"
             for job in jobs(checkout)]
    said.append(f"Secrets: {_env_file_state(checkout.env_file)}.")
    said.append("The daily check reads it at start; the health check needs no secret; the "
                "weekly check's AWS credentials come " + (
                    "from boto3's usual places (aws configure), not from it: cron starts "
                    "python -m backup_manager itself" if platform == "cron" else
                    "from it too" if platform == "launchd" else
                    "from it too (EnvironmentFile=)") + ".")
    timers = " ".join(f"daliolite-{job.name}.timer" for job in jobs(checkout))
    if platform == "cron":
        said += ["Add the lines above with `crontab -e`, as the user who owns the checkout, "
                 "and put your address in MAILTO:",
                 "a job prints only when it fails (the last lines of its log), and cron mails "
                 "what it prints. A run missed while the machine is off does not happen later."]
    elif platform == "launchd":
        said += ["Save each file above under its path, then load it:"]
        said += [f"  launchctl bootstrap gui/$(id -u) {path}" for path in paths]
        said += [f"A failed job writes a line to {checkout.logs / 'failures.log'} and to its log, "
                 "and posts a notification.",
                 "A run missed while the Mac sleeps happens when it wakes; one missed while it "
                 "is off or you are logged out does not."]
    else:
        ctl = "sudo systemctl" if system else "systemctl --user"
        said += ["Save each file above under its path, then:",
                 f"  {ctl} daemon-reload && {ctl} enable --now {timers}"]
        if not system:
            said.append("  loginctl enable-linger $USER   # user timers run while you are "
                        "logged out, and from boot")
        said += ["A failed job starts daliolite-failure@.service (OnFailure=): a line in the "
                 f"journal and in {checkout.logs / 'failures.log'}, and a mail to MAILTO (set "
                 "in that unit) with the log's last lines, through sendmail.",
                 "A run missed while the machine is off happens at boot (Persistent=true)."]
    return "\n".join(said)


def _env_file_state(path: Path) -> str:
    try:
        names = sorted(read_env_file(path))
    except ConfigError as exc:
        return f"{exc}; DalioLite refuses it until then"
    if not path.exists():
        return (f"{path} (not there yet: KEY=value lines, chmod 600, for ALPACA_API_KEY, "
                "ALPACA_SECRET_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY ...)")
    return f"{path}, which sets {', '.join(names) or 'nothing'}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="dalio_schedule.py", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("run", "alert"))
    parser.add_argument("job", help="daily, health or weekly (alert: or its systemd unit)")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args(argv)
    try:
        checkout = Checkout.here(args.config)
        job = job_named(args.job, checkout)
    except ConfigError as exc:
        print(f"dalio_schedule.py: {exc}", file=sys.stderr)
        return 2
    if args.action == "alert":
        alert(checkout, job, "systemd started its OnFailure= unit")
        return 0
    return run_job(checkout, job)


if __name__ == "__main__":
    sys.exit(main())
