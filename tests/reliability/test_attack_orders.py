"""Attacks on promises 13 (one writer per history) and 15 (orders are placed once):
pairs of ordinary events, through real DalioLite processes with the real alpaca-py
client against the fake Alpaca server (tests/fake_alpaca.py) and S3 on a moto server
over HTTP (through a proxy where a request must be caught on its way). Each test here
is a break found from the outside, and fails until the code keeps the promise."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml

from tests.fake_alpaca import FakeAlpaca, parse_stamp
from tests.helpers import refusal_of
from tests.reliability.test_orders_once import (
    STEP_HOOK,
    SYMBOLS,
    command,
    environment,
    kill_run,
    make_home,
    orders_in,
    recorded_rebalance,
    run,
    set_cloud,
)

pytest.importorskip("alpaca.trading.client")

TIMEOUT = 120


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    """The step hook of test_orders_once (kill_run needs it on the bot's path)."""
    folder = tmp_path_factory.mktemp("hook")
    (folder / "sitecustomize.py").write_text(STEP_HOOK)
    return folder


def cli(home, *args):
    return subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                           str(home / "config.yaml"), *map(str, args)], cwd=home,
                          capture_output=True, text=True, env=environment(),
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def with_key(home, **backup):
    """backup.key_file set (and `key init` run): the copies off the machine are signed."""
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"].update(key_file="backup.key", **backup)
    config.write_text(yaml.safe_dump(doc))
    made = cli(home, "key", "init")
    assert made.returncode == 0, made.stderr


def patient(home):
    """The bot waits a minute for each broker answer (while the test holds one back)."""
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["broker"]["read_timeout_seconds"] = 60
    config.write_text(yaml.safe_dump(doc))


def month_of_history(home, server):
    """A rebalance a month ago, filled; prices have moved since (drift: today is due)."""
    month_ago = run(home, days=-31)
    assert month_ago.returncode == 0, month_ago.stderr
    server.fill()
    server.prices["VTI"] *= 1.6


def today(server, before):
    """The symbols of the orders the server took after its first `before`, sorted."""
    return sorted(o["symbol"] for o in server.submitted()[before:])


def while_ordering(server, nth, action):
    """Run `action()` (another process, to its end) when the server has taken the `nth`
    order from now, before the bot that sent it hears the answer. Returns a list that
    then holds what `action` returned."""
    start = len(server.submitted())
    done = []

    def meanwhile(order):
        if len(server.submitted()) == start + nth and not done:
            done.append(action())

    server.on_accept = meanwhile
    return done


def told(**runs):
    """What each run said of its orders and its decision, for a failure message."""
    return "\n".join(f"--- {who} (exit {p.returncode}) ---\n" + "\n".join(
        line for line in p.stderr.splitlines() if any(
            word in line for word in ("order:", "decision:", "settling", "refusing",
                                      "intent", "ERROR", "CRITICAL")))
        for who, p in runs.items())


class HaltedSymbol(FakeAlpaca):
    """The fake Alpaca account, with one symbol halted: every order in it is refused with
    403, as Alpaca refuses an asset that is not tradable, until the halt is lifted."""

    def __init__(self, halted: str):
        super().__init__()
        self.halted = halted
        self.refused: list[dict] = []

    def place(self, body):
        if body.get("symbol") == self.halted:
            self.refused.append(body)
            return 403, {"code": 40310000, "message": f"asset {self.halted} is not tradable"}
        return super().place(body)


# --- one writer per history (promise 13) ---------------------------------------------


def test_a_clone_does_not_settle_the_intent_its_twin_is_placing(tmp_path, server, bucket):
    """A disk image of the bot (its backups/.writer with it) runs on a second machine at
    the same hour as the first, a few seconds later: the first is between its orders.
    The clone reads the first one's intent from the bucket as its own writer's and, its
    writer id being the same, skips the lease that stops another machine: it settles the
    intent, finds two orders of four, and places the other two, which the first then
    places as well. A clone must be caught before it orders (an intent it never wrote
    locally, less than 15 minutes old), not after, as a fork."""
    endpoint, name = bucket
    a = make_home(tmp_path, "a", kind="alpaca", base_url=server.url)
    set_cloud(a, endpoint, name)
    patient(a)
    month_of_history(a, server)
    clone = tmp_path / "clone"
    shutil.copytree(a, clone)
    before = len(server.submitted())
    clone_run = while_ordering(server, 2, lambda: run(clone))
    first = run(a)
    assert clone_run, "the clone never ran"
    assert today(server, before) == SYMBOLS, told(clone=clone_run[0], first=first)


def test_a_clone_that_runs_a_day_after_its_twin_is_caught_as_another_writer(
        tmp_path, bucket):
    """A disk image of the bot (its backups/.writer with it) is started on a second
    machine, and the two run on alternate days against one bucket. The clone finds its
    twin's newer point under its own writer id: it refuses, rightly, but as a rollback
    ("live state is older than the newest restore point"), and offers --accept-rollback,
    which makes the clone a second writer of the history under the same id (its twin
    is then told the same, and so on). Clones must be caught as two machines (a fork,
    or another writer), never offered a rollback."""
    endpoint, name = bucket
    twin = make_home(tmp_path, "twin")
    set_cloud(twin, endpoint, name)
    assert run(twin).returncode == 0
    clone = tmp_path / "clone"
    shutil.copytree(twin, clone)
    assert run(twin, days=1).returncode == 0
    caught = run(clone, days=2)
    assert caught.returncode == 3, caught.stderr
    headline, _, commands = refusal_of(caught.stderr)
    assert headline in ("the history has forked: two machines wrote the same point",
                        "another machine has moved this history on"), caught.stderr
    assert not any(c.endswith("--accept-rollback") for c in commands), commands


def test_a_machine_behind_another_writer_is_offered_only_commands_that_work(
        tmp_path, bucket):
    """A machine comes back after another took the history over (a VM resumed): it
    refuses, rightly ("another machine has moved this history on"), and lists what to
    run. Beside adopting and taking over, the list offers --accept-rollback ("keep the
    older state on purpose"), because its files are also older than the newest point;
    run, that command is refused again with the same refusal (and must be: the machine
    is behind another writer). A refusal offers only commands that lift it."""
    endpoint, name = bucket
    back = make_home(tmp_path, "back")
    set_cloud(back, endpoint, name)
    assert run(back).returncode == 0
    other = make_home(tmp_path, "other")
    set_cloud(other, endpoint, name)
    assert run(other, days=1).returncode == 0  # the other machine moves the history on
    refused = run(back, days=2)
    assert refused.returncode == 3, refused.stderr
    headline, _, commands = refusal_of(refused.stderr)
    assert headline == "another machine has moved this history on", refused.stderr
    offered = [c for c in commands if c.endswith("--accept-rollback")]
    followed = run(back, "--accept-rollback", days=2) if offered else None
    assert not offered, "offers --accept-rollback, which is then refused: " + told(
        followed=followed)


def test_an_intent_seconds_old_on_a_machine_whose_clock_is_slow_is_refused(
        tmp_path, server, bucket):
    """An overlapping redeploy: the old instance, on a host whose clock is twenty minutes
    slow, claims its intent and places its orders; the new instance, on a host with the
    right time, starts while the old one is between its second and third order. The new
    one reads the intent's time from the old one's clock, takes it as twenty minutes old,
    past its lease, and settles it while it is in flight: the same two orders are placed
    by both. An intent seconds old must be refused (exit 3), whatever the other host's
    clock says."""
    endpoint, name = bucket
    slow = make_home(tmp_path, "slow", kind="alpaca", base_url=server.url)
    set_cloud(slow, endpoint, name)
    patient(slow)
    new = make_home(tmp_path, "new", kind="alpaca", base_url=server.url)
    set_cloud(new, endpoint, name)
    newer = while_ordering(server, 2, lambda: run(new))
    old = run(slow, minutes=-20)
    assert newer, "the new instance never ran"
    assert sorted(o["symbol"] for o in server.submitted()) == SYMBOLS, told(
        new=newer[0], old=old)
    assert newer[0].returncode == 3, newer[0].stderr
    assert "that machine may be placing them now" in newer[0].stderr


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_claim_killed_between_its_point_and_its_sidecar_does_not_block_for_ever(
        tmp_path, server, bucket, s3_proxy, signed):
    """(Also with a key configured: a signed store reads no point without its signed
    sidecar, so the claim cut in two cannot even be read there.)
    A month after its last rebalance the bot is killed (a redeploy's SIGKILL) after its
    claim's point reached the bucket and before its sidecar did: the bucket holds point
    3 without a sidecar, which no listing counts, and nothing was ordered. Every later
    run on a rebalance day claims number 3 again, finds the key taken with other bytes,
    and refuses (exit 3) with "another writer committed it first": there is no other
    writer, and the client never deletes a remote object, so the bot never trades
    again."""
    _, name = bucket
    home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
    set_cloud(home, s3_proxy.url, name)
    if signed:
        with_key(home)
    month_of_history(home, server)
    before = len(server.submitted())
    bot = subprocess.Popen(command(home), cwd=home.parent, env=environment(),
                           stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    s3_proxy.kill(bot.pid, "PUT", "/point-0000000003.json.sha256")
    _, err = bot.communicate(timeout=TIMEOUT)
    assert bot.returncode == -9, err
    assert len(server.submitted()) == before, "killed before its first order"
    runs = {}
    for attempt in ("next", "the one after"):
        runs[attempt] = run(home)
        if runs[attempt].returncode == 0:
            break
    assert runs[attempt].returncode == 0, told(**runs)
    assert today(server, before) == SYMBOLS


def test_a_run_that_loses_the_claim_says_what_to_run(tmp_path, server, bucket, s3_proxy):
    """An overlapping redeploy: the new instance (a fresh disk, its state from the
    bucket) and the old one decide at the same moment; the old one claims number 3
    first, and the new one's claim gets the bucket's 412: it places nothing (exit 3),
    as it should. What it says is not a refusal like the others ("refusing to trade:",
    the reasons, numbered commands): one line, and `status` then offers `python -m
    backup_manager restore --all --yes`, without this installation's interpreter or
    --config, unlike every other command printed (run from anywhere but the project
    folder, it restores another folder or fails)."""
    endpoint, name = bucket
    old = make_home(tmp_path, "old", kind="alpaca", base_url=server.url)
    set_cloud(old, endpoint, name)
    month_of_history(old, server)
    new = make_home(tmp_path, "new", kind="alpaca", base_url=server.url)
    set_cloud(new, s3_proxy.url, name)
    config = yaml.safe_load((new / "config.yaml").read_text())
    config["backup"]["s3_read_timeout_seconds"] = 60  # while the old one claims first
    (new / "config.yaml").write_text(yaml.safe_dump(config))
    before = len(server.submitted())
    first = []
    s3_proxy.meanwhile(lambda: first.append(run(old)), "PUT", "/point-0000000003.json")
    lost = run(new)
    assert first and first[0].returncode == 0, first and first[0].stderr
    assert lost.returncode == 3 and today(server, before) == SYMBOLS, told(lost=lost)
    assert "refusing to trade: " in lost.stderr, told(lost=lost)
    status = subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                             str(new / "config.yaml"), "status"], cwd=tmp_path, text=True,
                            capture_output=True, env=environment(), timeout=TIMEOUT)
    fixes = [line.split(". ", 1)[1] for line in status.stdout.splitlines()
             if re.match(r"\s+\d+\. ", line)]
    assert fixes and all(str(new / "config.yaml") in fix for fix in fixes), status.stdout


# --- orders are placed once (promise 15) ---------------------------------------------


def test_a_paused_machine_whose_clock_stood_still_places_no_more_orders(
        tmp_path, server, bucket):
    """The bot's VM is paused for twenty minutes between its second and third order, and
    its clock stands still meanwhile (a guest clock resumed before NTP steps it). During
    the pause the platform starts the bot again on another machine from the bucket: past
    the lease, it settles the intent as abandoned and places the two missing orders. The
    paused bot resumes, its clock says a second went by, and it places its last two
    orders as well. A run must not go on placing an intent's orders once the history
    has moved past it (another writer claimed the next number)."""
    endpoint, name = bucket
    paused = make_home(tmp_path, "paused", kind="alpaca", base_url=server.url)
    set_cloud(paused, endpoint, name)
    patient(paused)
    later = make_home(tmp_path, "later", kind="alpaca", base_url=server.url)
    set_cloud(later, endpoint, name)
    restarted = while_ordering(server, 2, lambda: run(later, minutes=20))
    first = run(paused)
    assert restarted, "the second machine never ran"
    assert restarted[0].returncode == 0, restarted[0].stderr  # past the lease: it settles
    assert sorted(o["symbol"] for o in server.submitted()) == SYMBOLS, told(
        restarted=restarted[0], paused=first)
    assert first.returncode == 4, first.stderr


def test_a_rebalance_killed_then_backups_lost_is_reconciled_from_the_broker(
        tmp_path, server, hook):
    """The bot is killed right after the broker took its last order (the OOM killer), and
    its backups/ folder is lost before the next day's run (deleted by hand to free
    space, a volume not mounted): the intent went with it. The broker still holds the
    four orders under DalioLite's prefix, and no point records them: they are evidence
    of a rebalance and must be recorded (a point of kind reconciled, last_rebalance.json
    dated by the first of them). The next day's run finds no restore point at all,
    skips the broker's evidence, takes the month-old rebalance as the last and, prices
    having moved overnight, rebalances again within min_days_between."""
    home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
    month_ago = run(home, days=-31)
    assert month_ago.returncode == 0, month_ago.stderr
    server.fill()
    server.prices["VTI"] *= 1.6
    code, err = kill_run(home, server, hook, "accepted", 4)
    assert code == -9, err
    today_orders = server.submitted()[4:]
    shutil.rmtree(home / "backups")
    server.fill()
    server.prices["GLD"] *= 1.5  # overnight: drift again
    next_day = run(home, days=1)
    assert next_day.returncode == 0, next_day.stderr
    assert orders_in(next_day) == [], "traded again the day after a rebalance: " + told(
        next_day=next_day)
    first = min(o["submitted_at"] for o in today_orders)
    assert abs(recorded_rebalance(home) - parse_stamp(first)) < timedelta(seconds=5)


def test_a_symbol_the_broker_refuses_does_not_stop_the_rest_of_the_rebalance(tmp_path):
    """GLD is halted: the broker refuses its order (403) after it took DBC's, and the run
    stops there (exit 4), TLT and VTI not placed. alpaca.md: a rejected order "is
    recorded as rejected and not retried in that rebalance". The next run finds GLD's
    order nowhere at the broker, takes it for never placed, orders GLD first again,
    is refused again, and stops again: every run from then on exits 4 and the rebalance
    is never finished (TLT and VTI are never ordered) until the halt is lifted."""
    server = HaltedSymbol("GLD")
    try:
        home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
        first = run(home)
        assert first.returncode == 4, first.stderr
        assert [o["symbol"] for o in server.submitted()] == ["DBC"]
        again = run(home)
        assert sorted(o["symbol"] for o in server.submitted()) == ["DBC", "TLT", "VTI"], \
            told(first=first, again=again)
        assert len(server.refused) == 1, "GLD ordered again within the same rebalance"
    finally:
        server.stop()
