"""Orders are placed once (promise 15): a rebalance interrupted at any instant is
finished or refused, never repeated. Real DalioLite processes with the real alpaca-py
client against the fake Alpaca server on 127.0.0.1 (tests/fake_alpaca.py), killed with
SIGKILL at every durable step from its intent on (each fsync, rename, replace and link)
and by the server itself, when an order arrives and right after it accepted one; then
plain runs while the orders fill wholly, partly, or expire. The same sweep on the paper
broker with `paper_fills: next_run`. And a machine lost mid-rebalance, rebuilt from an
S3 copy that never received its intent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from backup_manager import BackupManager
from backup_manager.points import PointKind
from tests.fake_alpaca import KEYS_ENV, FakeAlpaca, parse_stamp, stamp
from tests.helpers import ROOT

pytest.importorskip("alpaca.trading.client")

TIMEOUT = 120
STEPS = ("fsync", "rename", "replace", "link")
SYMBOLS = ["DBC", "GLD", "TLT", "VTI"]
FILLS = ("wholly", "partly", "expire")

# Loaded into the bot as sitecustomize: counts durable steps in call order, logs each
# with what it touches (DALIO_STEP_LOG), and SIGKILLs the process right before step
# DALIO_KILL_AT.
STEP_HOOK = f'''
import os, signal
_at = int(os.environ.get("DALIO_KILL_AT", "0"))
_log = os.environ.get("DALIO_STEP_LOG")
_done = [0]


def _target(name, args):
    if name != "fsync":
        return str(args[-1])
    try:
        return os.readlink(f"/proc/self/fd/{{args[0]}}")
    except OSError:
        return "?"


def _stepping(name, real):
    def step(*args, **kwargs):
        _done[0] += 1
        if _log:
            with open(_log, "a") as out:
                out.write(f"{{_done[0]}} {{name}} {{_target(name, args)}}\\n")
        if _done[0] == _at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step


if _at or _log:
    for _name in {STEPS!r}:
        setattr(os, _name, _stepping(_name, getattr(os, _name)))
'''


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hook")
    (folder / "sitecustomize.py").write_text(STEP_HOOK)
    return folder


def make_home(tmp_path, name, **broker):
    home = tmp_path / name
    home.mkdir()
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["broker"].update(broker)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    return home


def command(home, *args, days=0, minutes=0):
    """The bot's command line; `days` or `minutes` from now by its clock (faketime)."""
    line = [sys.executable, str(ROOT / "dalio_lite.py"), "--config", str(home / "config.yaml"),
            *args]
    if days or minutes:
        if shutil.which("faketime") is None:
            pytest.skip("faketime is not installed (apt-get install faketime); CI installs it")
        shift = f"{days:+d}d" if days else f"{minutes:+d}m"
        line = ["faketime", "-f", shift, *line]
    return line


def environment(hook=None, **extra):
    path = f"{hook}{os.pathsep}{ROOT}" if hook else str(ROOT)
    return {**os.environ, **KEYS_ENV, "PYTHONPATH": path, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            **{k: str(v) for k, v in extra.items()}}


def run(home, *args, days=0, minutes=0, hook=None, **extra):
    return subprocess.run(command(home, *args, days=days, minutes=minutes), cwd=home.parent,
                          text=True,
                          capture_output=True, env=environment(hook, **extra),
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def orders_in(proc):
    return [line for line in proc.stderr.splitlines() if "order:" in line]


def steps_of_a_run(tmp_path, hook, **broker):
    """The durable steps of a first rebalance, numbered as the hook counts them:
    (the number of the intent's first step, the number of the last step)."""
    census = tmp_path / "census"
    census.mkdir()
    server = FakeAlpaca() if broker.get("kind") == "alpaca" else None
    try:
        if server is not None:
            broker["base_url"] = server.url
        home = make_home(census, "bot", **broker)
        log = census / "steps.log"
        done = run(home, hook=hook, DALIO_STEP_LOG=log)
        assert done.returncode == 0, done.stderr
    finally:
        if server is not None:
            server.stop()
    lines = [line.split(" ", 2) for line in log.read_text().splitlines()]
    intent = next(int(n) for n, _, target in lines if "point-0000000001" in target)
    return intent, int(lines[-1][0])


def rebalances_on_record(home):
    history = BackupManager.from_config(home / "config.yaml").history()
    return [p for p in history if p.kind == PointKind.RUN and
            p.reason.startswith("daily check: rebalanced")]


def recorded_rebalance(home):
    doc = json.loads((home / "state" / "last_rebalance.json").read_text())
    return datetime.fromisoformat(doc["timestamp"])


def submitted(order):
    return parse_stamp(order["submitted_at"])


def check_placed_once(home, orders, runs):
    """One order per symbol in all, the rebalance on record once, dated by its first
    order, and no run trading again before min_days_between."""
    symbols = sorted(o["symbol"] for o in orders)
    assert symbols == SYMBOLS, f"an order placed twice or never: {symbols}\n" + \
        "\n=====\n".join(p.stderr for p in runs)
    assert len(rebalances_on_record(home)) == 1, [p.reason for p in rebalances_on_record(home)]
    first = min(submitted(o) for o in orders)
    when = recorded_rebalance(home)
    assert abs(when - first) < timedelta(seconds=5), (when, first)


# --- the Alpaca broker ---------------------------------------------------------------


def alpaca_scenarios(tmp_path, hook):
    intent, last = steps_of_a_run(tmp_path, hook, kind="alpaca")
    kills = [("step", k) for k in range(intent, last + 1)]
    kills += [(how, n) for n in range(1, 5) for how in ("arriving", "accepted")]
    return kills


def kill_run(home, server, hook, how, n):
    """Start a run and have it killed: before durable step n, or by the server when its
    nth order arrives or right after the server accepted it."""
    extra = {"DALIO_KILL_AT": n} if how == "step" else {}
    bot = subprocess.Popen(command(home), cwd=home.parent, env=environment(hook, **extra),
                           stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if how == "arriving":
        server.kill_before_order(bot.pid, n)
    elif how == "accepted":
        server.kill_after_order(bot.pid, n)
    _, err = bot.communicate(timeout=TIMEOUT)
    return bot.returncode, err


def settle_orders(server, fills):
    if fills == "wholly":
        server.fill()
    elif fills == "partly":
        server.fill(portion=0.5)
    else:
        server.expire()


@pytest.mark.timeout(600)  # 34 kills, each then two runs: about two minutes alone
def test_alpaca_kill_sweep_orders_once(tmp_path, hook, report):
    scenarios = alpaca_scenarios(tmp_path, hook)
    killed = 0
    for number, (how, n) in enumerate(scenarios):
        fills = FILLS[number % len(FILLS)]
        server = FakeAlpaca()
        try:
            home = make_home(tmp_path, f"{how}-{n}", kind="alpaca", base_url=server.url)
            code, err = kill_run(home, server, hook, how, n)
            killed += code == -9
            assert code == -9, f"{how} {n}: not killed ({code}): {err}"
            early = number % 2 == 1  # the market moved before the next run, or after it
            if early:
                settle_orders(server, fills)
            again = run(home)
            assert again.returncode == 0, f"{how} {n}: {again.stderr}"
            if not early:
                settle_orders(server, fills)
            later = run(home, days=1)
            assert later.returncode == 0, f"{how} {n}: {later.stderr}"
            assert orders_in(later) == [], f"{how} {n}: traded within min_days_between"
            check_placed_once(home, server.submitted(), [again, later])
        finally:
            server.stop()
    report(f"{killed} SIGKILLs ({len(scenarios) - 8} durable steps from the intent on, "
           "4 orders arriving, 4 accepted unanswered); the orders filled wholly, partly or "
           "expired before the next run or after it: each symbol ordered once, one "
           "rebalance on record")


def test_alpaca_run_killed_after_every_order_then_the_market_opens(tmp_path, hook):
    """The issue's own story: killed right after the broker took the last order. The
    next run orders nothing, the rebalance is dated by the first order, and thirty days
    later (drift again) the bot trades again: the record blocks no more than it must."""
    server = FakeAlpaca()
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
        code, _ = kill_run(home, server, hook, "accepted", 4)
        assert code == -9
        again = run(home)
        assert again.returncode == 0, again.stderr
        assert orders_in(again) == []
        assert "4 order(s) placed, 0 rejected, 0 never placed" in again.stderr
        check_placed_once(home, server.submitted(), [again])
        server.fill()
        server.prices["VTI"] *= 1.6  # drift
        month = run(home, days=31)
        assert month.returncode == 0, month.stderr
        assert orders_in(month), "a due rebalance is not blocked by the settled intent"
    finally:
        server.stop()


def test_alpaca_rejected_order_is_recorded_and_not_retried(tmp_path, hook):
    """An order the broker rejects (buying power, a halted symbol) is recorded as
    rejected and not retried within that rebalance."""
    server = FakeAlpaca()
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
        server.fail("POST /v2/orders", 403, after=1, accept=False)  # the 2nd is refused
        first = run(home)
        assert first.returncode == 4, first.stderr  # a broker failure mid-rebalance
        assert len(server.submitted()) == 1
        again = run(home)
        assert again.returncode == 0, again.stderr
        symbols = sorted(o["symbol"] for o in server.submitted())
        assert len(symbols) == len(set(symbols)), f"a symbol ordered twice: {symbols}"
    finally:
        server.stop()


def test_broker_unreachable_with_an_intent_open_refuses_naming_it(tmp_path, hook):
    server = FakeAlpaca()
    home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
    try:
        code, _ = kill_run(home, server, hook, "accepted", 2)
        assert code == -9
    finally:
        server.stop()  # connecting is refused from now on
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    assert orders_in(refused) == []
    assert "refusing to trade: an earlier run's orders cannot be settled" in refused.stderr
    assert "restore point 1" in refused.stderr
    status = subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                             str(home / "config.yaml"), "status"], cwd=home, text=True,
                            capture_output=True, env=environment(), timeout=TIMEOUT)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "the intent of" in status.stdout and "daliolite-" in status.stdout, status.stdout
    assert "the host refuses to trade" in status.stdout


# --- the paper broker, orders filled at the next run --------------------------------------


@pytest.mark.timeout(600)  # about 60 kills, each then two runs
def test_paper_kill_sweep_orders_once(tmp_path, hook, report):
    intent, last = steps_of_a_run(tmp_path, hook, paper_fills="next_run")
    killed = 0
    for n in range(intent, last + 1):
        home = make_home(tmp_path, f"step-{n}", paper_fills="next_run")
        dead = run(home, hook=hook, DALIO_KILL_AT=n)
        killed += dead.returncode == -9
        assert dead.returncode == -9, f"step {n}: not killed: {dead.stderr}"
        again = run(home)
        assert again.returncode == 0, f"step {n}: {again.stderr}"
        later = run(home, days=1)
        assert later.returncode == 0, f"step {n}: {later.stderr}"
        assert orders_in(later) == [], f"step {n}: traded within min_days_between"
        account = json.loads((home / "state" / "paper_account.json").read_text())
        orders = account["orders"]
        assert all(o["status"] == "filled" for o in orders), f"step {n}: {orders}"
        check_placed_once(home, orders, [dead, again, later])
    report(f"{killed} SIGKILLs at every durable step from the intent on (paper broker, "
           "fills at the next run): each symbol ordered once, one rebalance on record")


# --- a machine lost mid-rebalance ------------------------------------------------------------


def test_a_machine_lost_mid_rebalance_rebuilt_from_s3_that_never_got_the_intent(
        tmp_path, hook, moto_server):
    """Machine A rebalanced a month ago and its history is in the bucket. Today its S3
    copy stops answering before A claims its intent (the claim is made where it can be),
    A places its orders and dies. B is built from the bucket: it finds DalioLite's orders
    at the broker that no point records, puts the rebalance on record as a point of kind
    reconciled dated by the first of them, and orders nothing."""
    import boto3

    from tests.helpers import FaultProxy

    bucket = f"lost-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    server = FakeAlpaca()
    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1]))
    try:
        a = make_home(tmp_path, "a", kind="alpaca", base_url=server.url)
        set_cloud(a, proxy.url, bucket)
        month_ago = run(a, days=-31)
        assert month_ago.returncode == 0, month_ago.stderr
        server.fill()
        server.prices["VTI"] *= 1.6  # drift: today's run rebalances
        proxy.close()  # the cloud goes away for A
        code, err = kill_run(a, server, hook, "accepted", 4)
        assert code == -9, err
        assert "intent committed" in err and "not claimed in" in err, err
        today = server.submitted()[4:]
        assert len(today) == 4
        b = make_home(tmp_path, "b", kind="alpaca", base_url=server.url)
        set_cloud(b, moto_server, bucket)
        rebuilt = run(b)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert orders_in(rebuilt) == [], "B ordered what A already had"
        history = list(BackupManager.from_config(b / "config.yaml").history())
        reconciled = [p for p in history if p.kind == PointKind.RECONCILED]
        assert len(reconciled) == 1, [p.kind for p in history]
        found = {o["client_order_id"] for o in reconciled[0].details["orders"]}
        assert found == {o["client_order_id"] for o in today}
        first_order = min(submitted(o) for o in today)
        assert abs(recorded_rebalance(b) - first_order) < timedelta(seconds=5)
        server.fill()
        next_day = run(b, days=1)
        assert next_day.returncode == 0, next_day.stderr
        assert orders_in(next_day) == [], "traded within min_days_between of A's rebalance"
    finally:
        server.stop()


def backdate(server, days):
    """The orders the server holds, stamped `days` earlier: placed by a run `days` ago by
    its clock (faketime moves the bot's clock, not the server's)."""
    for order in server.orders:
        for key in ("created_at", "updated_at", "submitted_at"):
            order[key] = stamp(parse_stamp(order[key]) - timedelta(days=days))


def reconciled_points(home):
    history = BackupManager.from_config(home / "config.yaml").history()
    return [p for p in history if p.kind == PointKind.RECONCILED]


def test_a_machine_rebuilt_from_nothing_does_not_trade_within_min_days_between(tmp_path):
    """A rebalance a month ago and one today; then the machine is lost with no copy at
    all (state/ and backups/ gone) and set up again from its config. The broker's orders
    of the last min_days_between are the only record: the next day's run records today's
    rebalance from them (dated by its first order, its four orders only) and trades
    nothing, though prices moved."""
    server = FakeAlpaca()
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
        assert run(home, days=-31).returncode == 0
        backdate(server, days=31)
        server.fill()
        server.prices["VTI"] *= 1.6
        today = run(home)
        assert today.returncode == 0 and orders_in(today), today.stderr
        todays = server.submitted()[4:]
        server.fill()
        shutil.rmtree(home / "state")
        shutil.rmtree(home / "backups")
        server.prices["GLD"] *= 1.5
        next_day = run(home, days=1)
        assert next_day.returncode == 0, next_day.stderr
        assert orders_in(next_day) == [], "traded again the day after a rebalance"
        first = min(submitted(o) for o in todays)
        assert abs(recorded_rebalance(home) - first) < timedelta(seconds=5)
        (point,) = reconciled_points(home)
        assert sorted(o["client_order_id"] for o in point.details["orders"]) == sorted(
            o["client_order_id"] for o in todays)
    finally:
        server.stop()


def test_backups_lost_after_a_rebalance_on_record_reconcile_nothing(tmp_path):
    """backups/ is lost after a plain rebalance whose last_rebalance.json survives: the
    broker's orders are that rebalance's, on record already; nothing is reconciled and
    the next day's run says nothing of orders no point records."""
    server = FakeAlpaca()
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
        assert run(home).returncode == 0
        on_record = recorded_rebalance(home)
        shutil.rmtree(home / "backups")
        next_day = run(home, days=1)
        assert next_day.returncode == 0, next_day.stderr
        assert "that no restore point records" not in next_day.stderr
        assert reconciled_points(home) == []
        assert recorded_rebalance(home) == on_record
    finally:
        server.stop()


def set_cloud(home, endpoint, bucket):
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"].update(cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=endpoint,
                         s3_region="us-east-1")
    config.write_text(yaml.safe_dump(doc))


def test_a_dry_run_tells_what_settling_would_do_and_list_shows_how_intents_ended(
        tmp_path, hook):
    server = FakeAlpaca()
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
        code, _ = kill_run(home, server, hook, "accepted", 2)
        assert code == -9
        before = sorted(p.name for p in (home / "backups").iterdir())
        dry = run(home, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry run: would be settling restore point(s) 1: 2 order(s) placed, 0 " \
               "rejected, 2 never placed" in dry.stderr
        assert orders_in(dry) == [] and len(server.submitted()) == 2
        assert sorted(p.name for p in (home / "backups").iterdir()) == before
        listed = points_listing(home)
        assert "NOT SETTLED" in listed[1], listed
        assert run(home).returncode == 0
        listed = points_listing(home)
        assert "2 placed, 0 rejected, 2 never placed (settled by 3)" in listed[1], listed
        assert listed[2].split()[3] == "orders", "the follow-up intent"
        assert "2 placed, 0 rejected, 0 never placed (settled by 3)" in listed[2], listed
        assert len(server.submitted()) == 4
    finally:
        server.stop()


def points_listing(home):
    """`list --points` as a person reads it: each point's line by its number."""
    shown = subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                            str(home / "config.yaml"), "list", "--points"], cwd=home,
                           text=True, capture_output=True, env=environment(), timeout=TIMEOUT)
    assert shown.returncode == 0, shown.stderr
    return {int(line.split()[0]): line for line in shown.stdout.splitlines()
            if line.split() and line.split()[0].isdigit()}


# --- the intent's lease ------------------------------------------------------------------


def libfaketime():
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")) + \
        sorted(Path("/usr/lib").glob("faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (apt-get install faketime); CI installs it")
    return found[0]


def test_a_run_stopped_past_its_lease_places_no_more_of_its_orders(tmp_path):
    """The bot is stopped for twenty minutes after its second order (a VM paused, a
    laptop lid): by then another machine may have taken its intent as abandoned. It
    places none of the rest; the next run settles what was placed and orders the rest
    once."""
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    server = FakeAlpaca()
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)

        def pause(order):
            if len(server.submitted()) == 2:
                clock.write_text("+20m\n")

        server.on_accept = pause
        paused = run(home, LD_PRELOAD=libfaketime(), FAKETIME_TIMESTAMP_FILE=clock,
                     FAKETIME_NO_CACHE=1)
        assert paused.returncode == 4, paused.stderr
        assert "older than its lease" in paused.stderr
        assert len(server.submitted()) == 2
        server.on_accept = None
        again = run(home)
        assert again.returncode == 0, again.stderr
        check_placed_once(home, server.submitted(), [paused, again])
    finally:
        server.stop()


def test_a_container_restarted_mid_rebalance_settles_after_the_lease(
        tmp_path, hook, moto_server):
    """A platform kills the bot right after its second order and starts it again on a
    fresh disk (a new writer id, its history from the bucket). Within the intent's lease
    the new instance cannot tell a dead instance from one still placing orders (an
    overlapping redeploy): it refuses and writes nothing. Past the lease it settles the
    intent with the broker and orders only what is missing."""
    import boto3

    bucket = f"restart-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    server = FakeAlpaca()
    try:
        old = make_home(tmp_path, "old", kind="alpaca", base_url=server.url)
        set_cloud(old, moto_server, bucket)
        code, err = kill_run(old, server, hook, "accepted", 2)
        assert code == -9, err
        new = make_home(tmp_path, "new", kind="alpaca", base_url=server.url)
        set_cloud(new, moto_server, bucket)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        soon = run(new)
        assert soon.returncode == 3, soon.stderr
        assert "that machine may be placing them now" in soon.stderr
        assert orders_in(soon) == [] and len(server.submitted()) == 2
        assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == keys
        later = run(new, minutes=20)
        assert later.returncode == 0, later.stderr
        assert "2 order(s) placed, 0 rejected, 2 never placed" in later.stderr
        check_placed_once(new, server.submitted(), [soon, later])
    finally:
        server.stop()
