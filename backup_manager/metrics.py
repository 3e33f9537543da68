"""Metrics: `status` facts in the Prometheus text exposition format (version 0.0.4),
for node_exporter's textfile collector (`status --format prometheus`).

Standard library only (prometheus_client is not needed to write this format).
Every series is a gauge: times are unix seconds (`_timestamp_seconds`), ages
seconds (`_age_seconds`), sizes bytes (`_bytes`); nothing here is a counter, so
no name ends in `_total`. A series with no value to give (no valid backup yet, a
target that never took a copy) is left out rather than given a made-up one.
"""

from __future__ import annotations

from datetime import datetime

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from .manager import BackupManager

PREFIX = "dalio_backup_"


def backup_bytes(manager: BackupManager, facts: Mapping[str, Any]) -> dict[str, int]:
    """Bytes of each state file's backups in backups/ (sidecars not counted)."""
    return {s["state_file"]: sum(b.size or 0 for b in manager.list_backups(s["state_file"]))
            for s in facts["state_files"]}


def exposition(facts: Mapping[str, Any], problems: Iterable[tuple[str, str]],
               sizes: Mapping[str, int] | None = None, now: float | None = None) -> str:
    """The exposition text of `facts` (BackupManager.status(), plus what the host
    recorded) and `problems` ((kind, subject) of each of status_problems); `sizes` from
    backup_bytes(); `now` (unix seconds) stamps when the facts were gathered."""
    problems = list(dict.fromkeys(problems))  # one series per kind and subject
    out = _Writer()
    out.gauge("status_ok", "1 when status finds nothing that needs a person, else 0",
              [({}, 0 if problems else 1)])
    # Labels that never carry counts, ages or times: an alert on a series stays one
    # alert while the problem lasts (status --json gives the words).
    out.gauge("problem", "1 for each kind of problem status reports, by subject (a state "
              "file, a copy target, or site)",
              [({"kind": kind, "subject": subject}, 1) for kind, subject in problems])
    if now is not None:
        out.gauge("status_timestamp_seconds", "When these facts were gathered (unix time)",
                  [({}, now)])
    out.gauge("disk_bytes", "Bytes of every file in the backups folder",
              [({"backup_dir": facts["backup_dir"]}, facts["disk_bytes"])])

    rows = facts["state_files"]
    per_file = _per(out, rows, "state_file")

    per_file("newest_valid_timestamp_seconds",
             "Time in the name of the newest valid backup (unix time); absent: none",
             lambda s: _unix(s["newest_valid_time"]))
    per_file("newest_valid_age_seconds", "Age of the newest valid backup; absent: none",
             lambda s: s["newest_valid_age_seconds"])
    per_file("backups", "Backups in the backups folder, complete or not",
             lambda s: s["backups"])
    per_file("complete_backups", "Backups with their sidecar (committed)",
             lambda s: s["complete"])
    per_file("incomplete_backups", "Backups without a sidecar (in progress or interrupted)",
             lambda s: s["backups"] - s["complete"])
    per_file("future_stamped_backups", "Backups stamped ahead of the clock",
             lambda s: len(s["stamped_in_future"]))
    if sizes is not None:
        per_file("bytes", "Bytes of its backups in the backups folder (sidecars not counted)",
                 lambda s: sizes.get(s["state_file"]))
    out.gauge("live_state", "1 for how each live state file stands against its backups "
              "(backed up, not backed up, missing, ...)",
              [({"state_file": s["state_file"], "live": s["live"]}, 1)
               for s in rows if s["live"] is not None])

    per_target = _per(out, facts["targets"], "target")

    per_target("copies_pending", "Copies owed to a mirror or the cloud", lambda t: t["pending"])
    per_target("copy_conflicts", "Copies the target refused: it holds other bytes",
               lambda t: t["conflicts"])
    per_target("oldest_pending_copy_age_seconds", "Age of the oldest pending copy; 0: none",
               lambda t: t["oldest_pending_age_seconds"] or 0)
    per_target("copy_last_success_timestamp_seconds",
               "When the target last took a copy (unix time); absent: never",
               lambda t: _unix(t["last_success"]))
    return out.text()


def _unix(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, text: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        name = PREFIX + name
        self.lines.append(f"# HELP {name} {escape_help(text)}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            shown = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{shown}}} {number(value)}" if shown
                              else f"{name} {number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def number(value: float) -> str:
    """A sample value: integers without a fraction, floats as repr (exact round trip)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _per(out: Any, rows: list[dict], label: str) -> Any:
    """A gauge writer with one sample per row, labelled by the row's `label` field;
    rows whose value is None are left out."""
    def gauge(name: str, text: str, value: Any) -> None:
        out.gauge(name, text, [({label: row[label]}, v) for row in rows
                               if (v := value(row)) is not None])
    return gauge
