"""Retention policy: pure functions from a list of backups to keep/remove decisions.

Nothing here touches the disk, so every rule is tested with tables of cases.
Ages come from the clock reading recorded when each backup was made (else the time
in its name), never from mtime, and are measured from the newest backup, so a bot
idle for months keeps its history and a clock glitch voids none.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from operator import itemgetter

GRACE_PERIOD = timedelta(hours=1)
MAX_DAYS = 36_500  # a hundred years: "keep forever" without overflowing date arithmetic
_by_time = itemgetter(1, 0)


class RetentionPolicy(namedtuple("RetentionPolicy", "keep_last keep_daily retention_days")):
    """keep_last newest, the newest of each of keep_daily days, within retention_days."""

    __slots__ = ()

    def __new__(cls, keep_last: int = 10, keep_daily: int = 30,
                retention_days: int = 30) -> RetentionPolicy:
        for key, value in (("keep_last", keep_last), ("keep_daily", keep_daily),
                           ("retention_days", retention_days)):
            if isinstance(value, bool) or not isinstance(value, int) or not \
                    0 <= value <= MAX_DAYS:
                raise ValueError(f"{key} must be a whole number >= 0 and <= {MAX_DAYS:,}, "
                                 f"got {value!r}")
        return super().__new__(cls, keep_last, keep_daily, retention_days)


class Decision(namedtuple("Decision", "name when keep reasons")):
    """What prune will do with one file (name, time in its name or None), and why:
    `reasons`, a tuple of one or more, each a rule that applies, in words."""

    __slots__ = ()


def plan_retention(
    records: Iterable[tuple[str, datetime]],
    policy: RetentionPolicy,
    protect: Mapping[str, str] | None = None,
    now: datetime | None = None,
    what: str = "backup",
    made: Mapping[str, datetime] | None = None,
    in_order: bool = False,
) -> list[Decision]:
    """Decide keep/remove for the complete backups of one state file (or the restore
    points, `what` names which for the reasons), newest first.

    `records` are (name, aware time in its name) pairs, planned in creation order:
    by that time (name order, promise 9), or as given, newest first, with `in_order`
    (restore points: by sequence). `protect` maps names that must stay whatever the
    rules say to the reason (the newest valid backup, a pending upload); when None,
    the newest record is protected as the newest backup.

    Ages and days come from the clock reading when each was made (`made`, where
    recorded; else the time in its name), never later than that of the one made after
    it: after a clock glitch, names stay pinned after the glitched one but each backup
    ages by when it was made. retention_days counts back from the newest reading, or
    from `now` when that is earlier. A jump ahead of more than
    retention_days between neighbours (a clock glitch, or a bot idle that long)
    deletes nothing: the records before it are planned as they were before it, and
    those after it on their own.
    """
    ordered = list(records) if in_order else sorted(records, key=_by_time, reverse=True)
    if not ordered:
        return []
    if protect is None:
        protect = {ordered[0][0]: "newest backup"}
    readings = _readings(ordered, made or {})
    window = timedelta(days=policy.retention_days)
    jump = next((i for i in range(1, len(ordered)) if readings[i - 1] - readings[i] > window),
                len(ordered))
    return _plan_run(ordered[:jump], readings[:jump], policy, protect, what, now) + \
        _plan_run(ordered[jump:], readings[jump:], policy, protect, what, now)


def _readings(ordered: list[tuple[str, datetime]], made: Mapping[str, datetime]
              ) -> list[datetime]:
    """Each record's clock reading, newest first, each no later than the one before it
    (made after it)."""
    readings, ceiling = [], None
    for name, when in ordered:
        reading = made.get(name, when)
        if ceiling is not None and reading > ceiling:
            reading = ceiling
        readings.append(reading)
        ceiling = reading
    return readings


def _plan_run(ordered: list[tuple[str, datetime]], readings: list[datetime],
              policy: RetentionPolicy, protect: Mapping[str, str], what: str,
              now: datetime | None) -> list[Decision]:
    """The rules over records made without a jump between them, newest first;
    retention_days counts back from the newest, or from `now` when that is earlier."""
    if not ordered:
        return []
    newest = readings[0] if now is None else min(readings[0], now)
    try:
        cutoff = newest - timedelta(days=policy.retention_days)
    except OverflowError:  # a legacy name from year 1: nothing is older
        cutoff = datetime.min.replace(tzinfo=UTC)
    keep_last, keep_daily, utc = policy.keep_last, policy.keep_daily, UTC
    days, day = 0, None
    plan = []
    for rank, ((name, when), reading) in enumerate(zip(ordered, readings, strict=True),
                                                   start=1):
        previous = day
        day = (reading if reading.tzinfo is utc else reading.astimezone(utc)).date()
        newest_of_day = day != previous  # readings never rise going back: days are adjacent
        days += newest_of_day
        reasons = []
        if rank <= keep_last:
            reasons.append(f"keep_last: {rank} of the {keep_last} newest")
        if newest_of_day and days <= keep_daily and reading >= cutoff:
            reasons.append(f"keep_daily: newest of {day}")
        if name in protect:
            reasons.append(protect[name])
        if reasons:
            plan.append(Decision(name, when, True, tuple(reasons)))
        else:
            plan.append(Decision(name, when, False, _why_removed(
                policy, day, newest_of_day, reading < cutoff, what)))
    return plan


def _why_removed(policy: RetentionPolicy, day: object, newest_of_day: bool, too_old: bool,
                 what: str) -> tuple[str, str]:
    if too_old:
        why = (f"older than retention_days={policy.retention_days} before the newest {what} "
               f"(or now, if earlier)")
    elif not newest_of_day:
        why = f"a newer {what} of {day} is kept"
    else:
        why = f"{day} is beyond the {policy.keep_daily} most recent days with {what}s"
    return why, f"not among the {policy.keep_last} newest"


def plan_cleanup(
    leftovers: Iterable[tuple[str, str, datetime | None, datetime]],
    now: datetime,
    grace: timedelta = GRACE_PERIOD,
) -> list[Decision]:
    """Decide on incomplete backups, orphan sidecars and temp files.

    Each leftover is (name, kind, time in its name or None, mtime). It goes only
    when both times are older than `grace`, so a writer still at work is never
    disturbed.
    """
    limit = now - grace
    plan = []
    for name, kind, named, mtime in leftovers:
        stale = mtime < limit and (named is None or named < limit)
        reason = f"{kind}, older than the {_hours(grace)} grace period" if stale else \
            f"{kind}, younger than the {_hours(grace)} grace period: a writer may be at work"
        plan.append(Decision(name, named, not stale, (reason,)))
    return plan


def _hours(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:g} h"
