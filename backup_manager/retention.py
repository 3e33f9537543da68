"""Retention policy: pure functions from a list of backups to keep/remove decisions.

Nothing here touches the disk, so every rule is tested with tables of cases.
Ages come from the time in each backup's name, never from mtime, and are
measured from the newest backup, so a bot idle for months keeps its history.
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
) -> list[Decision]:
    """Decide keep/remove for the complete backups of one state file (or the restore
    points, `what` names which for the reasons), newest first.

    `records` are (name, aware time) pairs. `protect` maps names that must stay
    whatever the rules say to the reason (the newest valid backup, a pending
    upload); when None, the newest record is protected as the newest backup.
    retention_days counts back from the newest backup, or from `now` when the
    newest is stamped ahead of it: a clock glitch never voids real history.
    """
    ordered = sorted(records, key=_by_time, reverse=True)
    if not ordered:
        return []
    if protect is None:
        protect = {ordered[0][0]: "newest backup"}
    newest = ordered[0][1] if now is None else min(ordered[0][1], now)
    try:
        cutoff = newest - timedelta(days=policy.retention_days)
    except OverflowError:  # a legacy name from year 1: nothing is older
        cutoff = datetime.min.replace(tzinfo=UTC)
    keep_last, keep_daily, utc = policy.keep_last, policy.keep_daily, UTC
    days, day = 0, None
    plan = []
    for rank, (name, when) in enumerate(ordered, start=1):
        previous, day = day, (when if when.tzinfo is utc else when.astimezone(utc)).date()
        newest_of_day = day != previous  # newest first, so a day's backups are adjacent
        days += newest_of_day
        reasons = []
        if rank <= keep_last:
            reasons.append(f"keep_last: {rank} of the {keep_last} newest")
        if newest_of_day and days <= keep_daily and when >= cutoff:
            reasons.append(f"keep_daily: newest of {day}")
        if name in protect:
            reasons.append(protect[name])
        if reasons:
            plan.append(Decision(name, when, True, tuple(reasons)))
        else:
            plan.append(Decision(name, when, False, _why_removed(
                policy, day, newest_of_day, when < cutoff, what)))
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
