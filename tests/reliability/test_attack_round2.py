"""Attacks, round two, on promises 13 (one writer per history), 14 (signed off-machine
copies) and 15 (orders are placed once): pairs of ordinary events, through real
DalioLite processes and the command line, with the real alpaca-py client against the
fake Alpaca server (tests/fake_alpaca.py) and S3 on a moto server over HTTP (through a
proxy where a request must be caught on its way). Each test here is a break found from
the outside, and fails until the code keeps the promise."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.reliability.test_attack_orders import (
    TIMEOUT,
    cli,
    month_of_history,
    today,
    told,
    while_ordering,
    with_key,
)
from tests.reliability.test_orders_once import (
    SYMBOLS,
    command,
    environment,
    make_home,
    run,
    set_cloud,
)

pytest.importorskip("alpaca.trading.client")


# --- orders are placed once, with signed copies (promises 14 and 15) -----------------


def test_a_rebalance_with_signed_copies_places_its_orders(tmp_path):
    """backup.key_file set (README "Keys") and a mirror folder: the first daily check
    decides to rebalance, commits its intent, and then dies with a traceback
    (NotImplementedError, exit 1) before its first order, when it checks whether another
    writer moved the history past its intent: the signed store cannot say when a point
    was written. Every later run settles the void intent and dies the same way: with a
    key configured the bot never trades. Promise 14 adds signatures to copies; promise
    15's checks must work with them. (tests/reliability/test_signed_copies.py fails on
    this too, at its first run.)"""
    home = make_home(tmp_path, "bot")
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"]["mirror_dirs"] = [str(tmp_path / "mirror")]
    config.write_text(yaml.safe_dump(doc))
    with_key(home)
    first = run(home)
    assert first.returncode == 0, first.stderr
    assert "decision: rebalanced" in first.stderr


# --- orders are placed once (promise 15) ---------------------------------------------


def test_a_fenced_machine_does_not_go_on_ordering_when_the_bucket_cannot_say(
        tmp_path, server, bucket, s3_proxy):
    """A machine that must never trade without the fence sets backup.require_fence: true
    (docs/configuration.md: "refuse to trade when a store cannot be checked for a newer
    writer"). Its VM is paused for twenty minutes between its second and third order,
    its clock standing still (a guest clock resumed before NTP steps it); meanwhile
    another machine, past the lease, settles the intent from the bucket and places the
    two missing orders. The paused bot resumes and, before its third order, asks the
    bucket whether another writer committed a point after its intent: the bucket
    answers 503 SlowDown (a busy prefix, for a few seconds). The bot takes "cannot be
    asked" for "no", require_fence or not, and places its last two orders as well: two
    orders placed twice (promise 15), exit 0."""
    endpoint, name = bucket
    paused = make_home(tmp_path, "paused", kind="alpaca", base_url=server.url)
    set_cloud(paused, s3_proxy.url, name)
    config = paused / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"]["require_fence"] = True
    config.write_text(yaml.safe_dump(doc))
    later = make_home(tmp_path, "later", kind="alpaca", base_url=server.url)
    set_cloud(later, endpoint, name)

    def restart_elsewhere():
        done = run(later, minutes=20)
        s3_proxy.busy.add("/point-0000000002.json")
        return done

    restarted = while_ordering(server, 2, restart_elsewhere)
    first = run(paused)
    assert restarted, "the second machine never ran"
    assert restarted[0].returncode == 0, restarted[0].stderr  # past the lease: it settles
    assert sorted(o["symbol"] for o in server.submitted()) == SYMBOLS, told(
        restarted=restarted[0], paused=first)


def test_a_rebuilt_machine_whose_first_run_met_a_broker_error_still_finds_the_orders(
        tmp_path, server, bucket, s3_proxy):
    """Machine A rebalanced a month ago, its history in the bucket. Today its S3 copy
    stops answering before A claims its intent (the claim is made where it can be); A
    places its four orders and dies with its disk. Two hours later B is built from the
    bucket; its first run meets a broker hiccup (a 500 on the order listing) and exits
    4, recording that run as a restore point. The next day B's run looks for orders no
    point records only from an hour before that newest point: A's orders are older, so
    they are never found, the month-old rebalance is taken as the last, and B rebalances
    again (prices moved overnight) within min_days_between of A's. Promise 15: orders
    under DalioLite's prefix that no point records are evidence of a rebalance."""
    endpoint, name = bucket
    a = make_home(tmp_path, "a", kind="alpaca", base_url=server.url)
    set_cloud(a, s3_proxy.url, name)
    month_of_history(a, server)
    s3_proxy.close()  # the cloud goes away for A
    before = len(server.submitted())
    lost = run(a)
    assert lost.returncode == 0 and today(server, before) == SYMBOLS, lost.stderr
    shutil.rmtree(a)  # the machine is lost with its disk
    server.fill()
    b = make_home(tmp_path, "b", kind="alpaca", base_url=server.url)
    set_cloud(b, endpoint, name)
    server.fail("GET /v2/orders", 500)
    hiccup = run(b, minutes=120)
    assert hiccup.returncode == 4, hiccup.stderr
    server.prices["GLD"] *= 1.5  # overnight: drift again
    after = len(server.submitted())
    next_day = run(b, days=1)
    assert next_day.returncode == 0, next_day.stderr
    assert today(server, after) == [], "traded again the day after A's rebalance: " + told(
        hiccup=hiccup, next_day=next_day)


def test_a_first_rebalance_killed_between_its_claim_and_its_sidecar_does_not_fork(
        tmp_path, server, bucket, s3_proxy):
    """A new installation with cloud copies: its very first run decides to rebalance,
    and is killed (a redeploy's SIGKILL) after its claim's point 1 reached the bucket and
    before its sidecar did; nothing was ordered. The next run's claim finds the bucket's
    point 1, finishes it and refuses once, as designed, but that refusing run still
    commits its own run point ("daily check: rebalanced", though nothing was placed)
    under number 1 in backups/, and its copy to the bucket conflicts. From then on every
    run refuses with "the history has forked: two machines wrote the same point" and
    offers only --take-over: one machine, one kill. Promise 11: a refusing run leaves no
    point; promise 15: the run after an unfinished claim settles it."""
    _, name = bucket
    home = make_home(tmp_path, "bot", kind="alpaca", base_url=server.url)
    set_cloud(home, s3_proxy.url, name)
    bot = subprocess.Popen(command(home), cwd=home.parent, env=environment(),
                           stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    s3_proxy.kill(bot.pid, "PUT", "/point-0000000001.json.sha256")
    _, err = bot.communicate(timeout=TIMEOUT)
    assert bot.returncode == -9, err
    assert server.submitted() == [], "killed before its first order"
    runs = {}
    for attempt in ("next", "the one after", "the third"):
        runs[attempt] = run(home)
        if runs[attempt].returncode == 0:
            break
    assert runs[attempt].returncode == 0, told(**runs)
    assert today(server, 0) == SYMBOLS


# --- signed copies (promises 13 and 14) ----------------------------------------------


def test_a_planted_unsigned_point_with_the_last_number_does_not_stop_the_history(tmp_path):
    """With a key configured, someone who can write to the mirror folder (a NAS share)
    plants an unsigned point-9999999999.json with a matching sidecar. It is refused and
    reported, as promised, but its number still counts: the next point is numbered
    10000000000, a name no listing reads, so from then on every run logs "cannot commit
    the restore point" and `status` reports a failed backup, for ever (the client never
    deletes the planted object). Promise 14: an object whose MAC does not verify is never
    installed; here it takes the history hostage."""
    import hashlib
    import json

    home = make_home(tmp_path, "bot")
    mirror = tmp_path / "mirror"
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"]["mirror_dirs"] = [str(mirror)]
    doc["rebalancing"]["drift_threshold"] = 0.9  # no trade: only the history is at stake
    config.write_text(yaml.safe_dump(doc))
    with_key(home)
    assert run(home).returncode == 0
    planted = json.loads((mirror / "point-0000000001.json").read_bytes())
    planted["sequence"] = 9_999_999_999
    data = json.dumps(planted).encode()
    (mirror / "point-9999999999.json").write_bytes(data)
    (mirror / "point-9999999999.json.sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  point-9999999999.json\n")
    runs = {}
    for day in ("that day", "the next", "the one after"):
        runs[day] = later = run(home)
        assert later.returncode == 0, told(**runs)
        assert "cannot commit" not in later.stderr, told(**runs)
    status = cli(home, "status")
    assert "a backup failed" not in status.stdout, status.stdout


def test_a_new_machine_with_the_key_file_from_before_a_rotation_does_not_roll_back(
        tmp_path):
    """The operator keeps a copy of backup.key away from the machine (README "Keys"),
    later runs `key rotate` and, a day on, the machine is lost. The new machine is set
    up from config.yaml and the copy kept away, which lacks the new key. The mirror's
    newest points are signed with a key id the key file does not hold: each is refused,
    and the run installs the last point signed with the old key instead, older state
    (here: no rebalance on record), and carries on (exit 0) as if it were the newest.
    Promise 12: installing state older than the newest point is a rollback, deliberate,
    stated and acknowledged; promise 11: a doubt about the history refuses. A point
    signed by a key the machine lacks is such a doubt (the key file is out of date), not
    a planted object to step over."""
    import json
    from datetime import UTC, datetime

    home = make_home(tmp_path, "bot")
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"]["mirror_dirs"] = [str(tmp_path / "mirror")]
    doc["rebalancing"]["drift_threshold"] = 0.9  # no trade: only the history is at stake
    config.write_text(yaml.safe_dump(doc))
    with_key(home)
    assert run(home).returncode == 0
    kept_away = (home / "backup.key").read_bytes()
    rotated = cli(home, "key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    recorded = json.dumps({"timestamp": datetime.now(UTC).isoformat()})
    (home / "state" / "last_rebalance.json").write_text(recorded)  # a rebalance, recorded
    assert run(home).returncode == 0
    new = tmp_path / "new"
    new.mkdir()
    (new / "config.yaml").write_bytes(config.read_bytes())
    (new / "backup.key").write_bytes(kept_away)
    rebuilt = run(new)
    installed = new / "state" / "last_rebalance.json"
    assert rebuilt.returncode == 3 or (
        installed.exists() and installed.read_text() == recorded), rebuilt.stderr


def test_a_machine_back_after_a_take_over_and_a_rotation_sees_it_is_behind(tmp_path):
    """Machine A's VM is paused; the operator builds B from config.yaml, the key file and
    the shared mirror and, since A's disk is out of their hands, runs `key rotate` on B
    before B's first run. B restores A's newest point and moves the history on, signing
    with the new key. A resumes the next day: B's points are signed with a key A's file
    does not hold, so A refuses them as if planted, sees only its own history, does not
    see that it is behind another writer, and carries on (exit 0), writing its own
    points after B's: two writers of one history. Promise 13: a machine whose live state
    is behind another writer's point refuses until the operator adopts that history or
    takes over."""
    mirror = tmp_path / "mirror"

    def machine(name):
        home = make_home(tmp_path, name)
        config = home / "config.yaml"
        doc = yaml.safe_load(config.read_text())
        doc["backup"]["mirror_dirs"] = [str(mirror)]
        doc["backup"]["key_file"] = "backup.key"
        doc["rebalancing"]["drift_threshold"] = 0.9  # no trade: the history is at stake
        config.write_text(yaml.safe_dump(doc))
        return home

    a = machine("a")
    made = cli(a, "key", "init")
    assert made.returncode == 0, made.stderr
    assert run(a).returncode == 0
    b = machine("b")
    (b / "backup.key").write_bytes((a / "backup.key").read_bytes())
    rotated = cli(b, "key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    took_over = run(b, days=1)
    assert took_over.returncode == 0, took_over.stderr
    back = run(a, days=2)
    assert back.returncode == 3, told(took_over=took_over, back=back)
