"""Retention policy tables: plan_retention and plan_cleanup are pure functions."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from backup_manager.formats import format_backup_name, parse_backup_name
from backup_manager.retention import RetentionPolicy, plan_cleanup, plan_retention

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def series(days=(), hours=(), minutes=()):
    """Records at T0 + each offset; names are the real backup names."""
    offsets = [timedelta(days=d) for d in days] + [timedelta(hours=h) for h in hours] + \
        [timedelta(minutes=m) for m in minutes]
    return [(format_backup_name("s", ".json", T0 + o), T0 + o) for o in offsets]


def kept(plan):
    return {d.name for d in plan if d.keep}


def names_at(days=(), minutes=()):
    return {n for n, _ in series(days=days, minutes=minutes)}


RETENTION_CASES = [
    # (id, records, policy, protect, expected kept names)
    ("empty", [], RetentionPolicy(), None, set()),
    ("fewer than keep_last", series(days=[0, 1, 2]), RetentionPolicy(), None,
     names_at(days=[0, 1, 2])),
    ("burst within one day keeps keep_last newest",
     series(minutes=range(25)), RetentionPolicy(keep_last=10, keep_daily=30), None,
     names_at(minutes=range(15, 25))),
    ("burst, keep_last=0: only the newest of the day",
     series(minutes=range(25)), RetentionPolicy(keep_last=0, keep_daily=30), None,
     names_at(minutes=[24])),
    ("one a day for 90 days: keep_daily bounds to 30 days",
     series(days=range(90)), RetentionPolicy(), None, names_at(days=range(60, 90))),
    ("retention_days bound is inclusive",
     series(days=range(90)), RetentionPolicy(keep_last=1, keep_daily=60, retention_days=30),
     None, names_at(days=range(59, 90))),
    ("keep_daily counts days that have backups, not calendar days",
     series(days=[0, 10, 20, 25, 29]), RetentionPolicy(keep_last=0, keep_daily=3), None,
     names_at(days=[20, 25, 29])),
    ("several a day: the newest of each day is the one kept",
     series(days=[0, 1]) + series(hours=[3, 27]), RetentionPolicy(keep_last=0, keep_daily=5),
     None, {n for n, _ in series(hours=[3, 27])}),
    ("idle bot: ages measured from the newest backup, not now; a pause longer than "
     "retention_days deletes nothing before it",
     series(days=[-400, -399, -398, -215, -214, -213, -212, -211, -210, -209, -208, -207,
                  -206, -205, -204, -203, -202, -201, -200]),
     RetentionPolicy(), None,
     names_at(days=[-400, -399, -398, *range(-215, -199)])),
    ("idle bot, short pauses: retention_days counts across them",
     series(days=[-240, -239, -238, -215, -214, -200]),
     RetentionPolicy(keep_last=1, keep_daily=30, retention_days=30), None,
     names_at(days=[-215, -214, -200])),
    ("nothing kept by rules: the newest is still kept",
     series(days=range(5)), RetentionPolicy(keep_last=0, keep_daily=0), None,
     names_at(days=[4])),
    ("protected names stay whatever the rules say",
     series(days=range(50)), RetentionPolicy(keep_last=1, keep_daily=0),
     {format_backup_name("s", ".json", T0 + timedelta(days=49)): "newest valid backup",
      format_backup_name("s", ".json", T0 + timedelta(days=3)): "waiting for upload"},
     names_at(days=[3, 49])),
    ("the newest valid is protected when the newest is damaged",
     series(days=range(12)), RetentionPolicy(keep_last=0, keep_daily=0),
     {format_backup_name("s", ".json", T0 + timedelta(days=7)): "newest valid backup"},
     names_at(days=[7])),
]


@pytest.mark.parametrize("records,policy,protect,expected",
                         [c[1:] for c in RETENTION_CASES], ids=[c[0] for c in RETENTION_CASES])
def test_plan_retention(records, policy, protect, expected):
    plan = plan_retention(records, policy, protect)
    assert kept(plan) == expected
    assert len(plan) == len(records)
    assert all(d.reasons and all(d.reasons) for d in plan), "every decision names its reasons"


def test_plan_is_newest_first_and_independent_of_input_order():
    records = series(days=range(40))
    forward = plan_retention(records, RetentionPolicy())
    backward = plan_retention(list(reversed(records)), RetentionPolicy())
    assert forward == backward
    assert [d.when for d in forward] == sorted((w for _, w in records), reverse=True)


@pytest.mark.parametrize("policy,reason_part", [
    (RetentionPolicy(keep_last=2, keep_daily=0), "keep_last: 1 of the 2 newest"),
    (RetentionPolicy(keep_last=0, keep_daily=2), "keep_daily: newest of 2026-03-04"),
])
def test_reasons_name_the_rule(policy, reason_part):
    plan = plan_retention(series(days=range(4)), policy)
    assert reason_part in plan[0].reasons
    removed = [d for d in plan if not d.keep]
    assert removed and all(d.reasons[-1] == f"not among the {policy.keep_last} newest"
                           for d in removed)


def test_idle_bot_keeps_at_least_keep_last_including_newest():
    records = series(days=[-200 - 3 * i for i in range(40)])
    plan = plan_retention(records, RetentionPolicy(keep_last=10, keep_daily=30,
                                                   retention_days=30))
    newest = max(records, key=lambda r: r[1])[0]
    assert newest in kept(plan)
    assert len(kept(plan)) >= 10


@pytest.fixture
def new_york(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_legacy_local_time_names_are_ordered_by_instant(new_york):
    # In New York 09:00 is 14:00 UTC and 07:30 is 12:30 UTC: around the 13:00Z backup.
    names = ["s_2026-03-01_09-00-00.json", "s_2026-03-01_13-00-00.000000Z.json",
             "s_2026-03-01_07-30-00.json"]
    parsed = [parse_backup_name(n, "s", ".json") for n in names]
    records = [(p.name, p.when) for p in parsed]
    plan = plan_retention(records, RetentionPolicy(keep_last=1, keep_daily=0))
    assert [d.name for d in plan] == [names[0], names[1], names[2]]
    assert kept(plan) == {names[0]}


def test_legacy_and_new_names_mixed_in_daily_retention(new_york):
    legacy = [f"s_2026-02-{d:02d}_10-00-00.json" for d in range(1, 11)]
    new = [format_backup_name("s", ".json", datetime(2026, 2, d, 20, tzinfo=UTC))
           for d in range(11, 21)]
    records = [(p.name, p.when) for p in (parse_backup_name(n, "s", ".json")
                                          for n in legacy + new)]
    plan = plan_retention(records, RetentionPolicy(keep_last=0, keep_daily=15))
    assert kept(plan) == set(new) | set(legacy[5:])


CLEANUP_CASES = [
    ("fresh incomplete backup stays", timedelta(minutes=5), timedelta(minutes=5), True),
    ("stale by name and mtime goes", timedelta(hours=2), timedelta(hours=2), False),
    ("old name but recent mtime stays", timedelta(days=3), timedelta(minutes=1), True),
    ("recent name but old mtime stays", timedelta(minutes=1), timedelta(days=3), True),
    ("temp file without a name time goes when old", None, timedelta(hours=2), False),
    ("temp file without a name time stays when young", None, timedelta(minutes=59), True),
]


@pytest.mark.parametrize("name_age,mtime_age,keep", [c[1:] for c in CLEANUP_CASES],
                         ids=[c[0] for c in CLEANUP_CASES])
def test_plan_cleanup(name_age, mtime_age, keep):
    now = T0
    named = now - name_age if name_age is not None else None
    (decision,) = plan_cleanup([("x", "incomplete backup", named, now - mtime_age)], now)
    assert decision.keep is keep
    (reason,) = decision.reasons
    assert ("younger" in reason) is keep


@pytest.mark.parametrize("bad", [{"keep_last": -1}, {"keep_daily": 1.5},
                                 {"retention_days": "30"}, {"keep_last": True}])
def test_policy_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RetentionPolicy(**bad)



def at(when):
    return (format_backup_name("s", ".json", when), when)


def test_each_decision_spells_out_its_rule():
    # keep_last=1, keep_daily=2, retention_days=3: newest 03-06 12:00, cutoff 03-03 12:00.
    records = [at(T0 + timedelta(days=5)), at(T0 + timedelta(days=5, hours=-1)),
               at(T0 + timedelta(days=4)), at(T0 + timedelta(days=3)),
               at(T0 + timedelta(days=2)), at(T0 + timedelta(days=1))]
    plan = plan_retention(records, RetentionPolicy(keep_last=1, keep_daily=2, retention_days=3))
    assert [(d.keep, d.reasons) for d in plan] == [
        (True, ("keep_last: 1 of the 1 newest", "keep_daily: newest of 2026-03-06",
                "newest backup")),
        (False, ("a newer backup of 2026-03-06 is kept", "not among the 1 newest")),
        (True, ("keep_daily: newest of 2026-03-05",)),
        (False, ("2026-03-04 is beyond the 2 most recent days with backups",
                 "not among the 1 newest")),
        # exactly retention_days before the newest is inside the window, not older than it
        (False, ("2026-03-03 is beyond the 2 most recent days with backups",
                 "not among the 1 newest")),
        (False, ("older than retention_days=3 before the newest backup (or now, if earlier)",
                 "not among the 1 newest")),
    ]


def test_a_backup_stamped_ahead_of_the_clock_never_voids_real_history():
    # The clock says day 40; one backup claims day 400. retention_days counts back from
    # now, so days 10-40 stay; counted from day 400 they would all be too old.
    records = series(days=[*range(41), 400])
    plan = plan_retention(records, RetentionPolicy(keep_last=0, keep_daily=100,
                                                   retention_days=30),
                          now=T0 + timedelta(days=40))
    assert kept(plan) == names_at(days=[*range(10, 41), 400])


def test_backups_from_year_one_are_planned_without_overflow():
    # A legacy name can say year 1: retention_days before it is no date at all.
    records = [at(datetime(1, 1, 2, tzinfo=UTC)), at(datetime(1, 1, 3, tzinfo=UTC))]
    plan = plan_retention(records, RetentionPolicy(keep_last=0, keep_daily=30))
    assert kept(plan) == {n for n, _ in records}


def test_days_are_utc_days_whatever_zone_the_times_are_in(new_york):
    # 23:00Z and 01:00Z the next day: two UTC days, one day at +02:00 and in New York.
    plus_two = timezone(timedelta(hours=2))
    times = [datetime(2026, 3, 1, 23, tzinfo=UTC), datetime(2026, 3, 2, 1, tzinfo=UTC)]
    records = [(format_backup_name("s", ".json", t), t.astimezone(plus_two)) for t in times]
    plan = plan_retention(records, RetentionPolicy(keep_last=0, keep_daily=5))
    assert kept(plan) == {n for n, _ in records}
    assert [d.reasons for d in plan] == [("keep_daily: newest of 2026-03-02", "newest backup"),
                                         ("keep_daily: newest of 2026-03-01",)]


@pytest.mark.parametrize("grace,hours", [(timedelta(hours=1), "1 h"),
                                         (timedelta(minutes=30), "0.5 h")])
def test_cleanup_reasons_give_the_grace_period_in_hours(grace, hours):
    now = T0
    plan = plan_cleanup([("old", "temp file", None, now - 2 * grace),
                         ("new", "temp file", None, now)], now, grace)
    assert [d.reasons for d in plan] == [
        (f"temp file, older than the {hours} grace period",),
        (f"temp file, younger than the {hours} grace period: a writer may be at work",)]


def test_cleanup_keeps_what_is_exactly_as_old_as_the_grace_period():
    limit = T0 - timedelta(hours=1)
    plan = plan_cleanup([("by mtime", "temp file", None, limit),
                         ("by name", "incomplete backup", limit, limit - timedelta(days=1)),
                         ("stale", "incomplete backup", limit - timedelta(seconds=1),
                          limit - timedelta(seconds=1))], T0)
    assert [(d.name, d.when, d.keep) for d in plan] == [
        ("by mtime", None, True), ("by name", limit, True),
        ("stale", limit - timedelta(seconds=1), False)]


def test_ages_and_days_come_from_when_each_was_made_not_from_a_pinned_name():
    # A glitch a year ahead, then 40 daily backups named just after it (promise 9).
    glitch = T0 + timedelta(days=365)
    names = [format_backup_name("s", ".json", glitch + timedelta(microseconds=i))
             for i in range(41)]
    records = [(name, glitch + timedelta(microseconds=i)) for i, name in enumerate(names)]
    made = {names[0]: glitch, **{names[i]: T0 + timedelta(days=i) for i in range(1, 41)}}
    plan = plan_retention(records, RetentionPolicy(keep_last=0, keep_daily=30,
                                                   retention_days=30), made=made)
    assert kept(plan) == set(names[11:]), "the 30 newest days, by when each was made"


def test_restore_points_in_sequence_order_with_a_glitched_time_keep_their_days():
    # Points are given in sequence order; the first was made under a clock a year ahead.
    names = [f"point-{n:010d}.json" for n in range(41, 0, -1)]
    times = [T0 + timedelta(days=n) for n in range(40, 0, -1)] + [T0 + timedelta(days=400)]
    plan = plan_retention(list(zip(names, times, strict=True)),
                          RetentionPolicy(keep_last=0, keep_daily=30, retention_days=30),
                          in_order=True)
    assert kept(plan) == set(names[:30])
