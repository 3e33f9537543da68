"""The start-up guard: every recovery rule, decided before anything is installed.

    from backup_manager import BackupManager, recover
    report = recover(BackupManager.from_config("config.yaml"))

`plan_recovery` lists the restore points of every store, reads the live state
files, and decides in memory; `apply_recovery` then installs, catches up and
commits. The host gives facts (HostFacts: its records, how to run it), never
procedures, and gets a report or a Refusal.

With restore points, the newest one is the truth:
- a live file holding the newest point's bytes is kept;
- a lost (missing or invalid) file gets the newest point's entry, fetched and
  verified from any store; a store that cannot be seen, or bytes that no store
  holds, make that a refusal (unless `from_reachable`, `accept_fresh`);
- a valid live file that is older than the newest point (its bytes are an older
  point's entry or an older backup's, or its content records an earlier moment)
  is a rollback: refused until the host acknowledges it (`accept_rollback`), and
  the acknowledged run commits a point of kind rollback;
- any other valid live file is newer (a kill between a backup and its commit, a
  hand edit): it is caught up into a point of kind catch-up.
Without points (a backups/ folder from before them), each lost file gets its
newest valid backup, and the host's evidence decides between a first run and a
refusal; the run then commits the first point (kind upgrade).
Every start also refuses a state whose content records a moment ahead of the
clock, and an installed file older than what the host's records know of.
A refusal changes nothing but the record `status` shows (backups/.recovery.json).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from . import log
from .atomic import read_state_file, unlink_quietly, write_temp
from .catalog import backups_of
from .content import content_time, validate_content
from .errors import (
    BackupError,
    InvalidStateError,
    StateUnrecoverableError,
    StoreUnreachable,
)
from .formats import CLOCK_SKEW, SIDECAR_SUFFIX, parse_backup_name, sha256_hex, state_key
from .history import INTENT_LEASE
from .install import install, verified_holder
from .manager import BackupManager
from .points import PointKind, point_name
from .restore import Candidate, Search, fetch_entry, find_in_points, find_newest_valid
from .writer import known_writer_id

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .history import History
    from .points import Point

class RefusalKind(StrEnum):
    """Why the host must not trade."""

    LOST = "lost"                  # state existed and nothing valid is left
    DAMAGED = "damaged"            # the newest point's bytes are held by no store
    UNSEEN = "unseen"              # a store that may hold newer state cannot be seen
    ROLLBACK = "rollback"          # live state older than the newest point, not acknowledged
    CLOCK = "clock"                # state records a moment ahead of the clock
    RECORDS = "records"            # the host's records know of newer state
    UNREADABLE = "unreadable"      # a live state file cannot be read
    BACKUPS = "backups folder"     # backups/ cannot be used to install what is lost
    IDENTITY = "identity"          # the history belongs to another broker account
    WRITER = "writer"              # another machine moved the history on
    FORK = "fork"                  # two histories where there must be one
    FENCE = "fence"                # a store could not be checked for a newer writer
    INTENT = "intent"              # an earlier run's orders cannot be settled


class Refusal(StateUnrecoverableError):
    """The host must not trade: `kind`, a one-sentence `headline`, `reasons` (one
    (state file, why) each) and `commands` that can fix it, in order."""

    def __init__(self, kind: RefusalKind, headline: str, reasons: list[tuple[str, str]],
                 commands: list[str]):
        self.kind, self.headline = kind, headline
        self.reasons, self.commands = list(reasons), list(commands)
        super().__init__(self.text())

    def text(self) -> str:
        lines = [f"refusing to trade: {self.headline}"]
        lines += [f"  {subject}: {why}" for subject, why in self.reasons]
        if self.commands:
            lines.append("To fix, one of:")
            lines += [f"  {n}. {command}" for n, command in enumerate(self.commands, 1)]
        lines.append("Details: the status command, and the log above.")
        return "\n".join(lines)

    def as_record(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "headline": self.headline,
                "reasons": [list(r) for r in self.reasons], "commands": self.commands}


class HostFacts:
    """What the host knows, for the rules to use.

    `records` maps a state file's name to (a moment, why): the host's own records
    say that file existed and recorded at least that moment (None: existed, moment
    unknown). `evidence(path)` is asked about a lost file when no restore point
    knows it. `identity` says whom the state belongs to now (for DalioLite, its
    broker and account): every point records it, and a history recorded under
    another one is refused until the host switches on purpose (`describe` words an
    identity for people). `commands` are the
    host's command lines, by what they do: "run" (its daily check), "accept_fresh",
    "accept_rollback", "accept_identity"; `backup_command` is how to run this
    package's command line.
    """

    def __init__(self, *, records: Mapping[str, tuple[datetime | None, str]] | None = None,
                 evidence: Callable[[Path], str | None] | None = None,
                 identity: Mapping[str, Any] | None = None,
                 describe: Callable[[Any], str] | None = None,
                 commands: Mapping[str, str] | None = None,
                 backup_command: str = "python -m backup_manager",
                 clock: Callable[[], datetime] | None = None):
        self.identity = dict(identity) if identity is not None else None
        self.describe = describe or _identity_text
        self.records = dict(records or {})
        self.evidence = evidence or (lambda path: None)
        self.commands = dict(commands or {})
        self.backup_command = backup_command
        self.clock = clock or (lambda: datetime.now(UTC))

    def command(self, what: str, fallback: str) -> str:
        return self.commands.get(what, fallback)


class LiveFile:
    """A state file as it stands: status "valid", "missing", "invalid" or "unreadable"."""

    def __init__(self, path: Path):
        self.path, self.data, self.detail = path, None, ""
        try:
            self.data = read_state_file(path)[0]
        except FileNotFoundError:
            self.status = "missing"
            return
        except OSError as exc:
            if exc.errno == 22 and not path.is_dir():  # EINVAL: a FIFO, a device
                self.status, self.detail = "invalid", "not a regular file"
                return
            self.status, self.detail = "unreadable", exc.strerror or str(exc)
            return
        try:
            validate_content(path.name, self.data)
            self.status = "valid"
        except InvalidStateError as exc:
            self.status, self.detail = "invalid", str(exc)

    @property
    def digest(self) -> str | None:
        return sha256_hex(self.data) if self.status == "valid" else None

    @property
    def lost(self) -> bool:
        return self.status in ("missing", "invalid")


class RecoveryPlan:
    """What recovery decided, before anything is changed."""

    def __init__(self, live: dict[Path, LiveFile], history: History | None):
        self.live = live
        self.history = history
        self.newest: Point | None = history.newest() if history is not None else None
        self.installs: dict[Path, Candidate] = {}
        self.catch_up: list[Path] = []
        self.rolled_back: list[Path] = []
        self.first_run: list[Path] = []
        self.fresh: list[Path] = []
        self.kept: list[Path] = []
        self.unseen: dict[str, str] = dict(history.unseen) if history is not None else {}
        self.refusal: Refusal | None = None
        self.backups_problem: str | None = None
        self.taking_over = False

    @property
    def commit_kind(self) -> PointKind | None:
        if self.taking_over:
            return PointKind.TAKE_OVER
        if self.rolled_back:
            return PointKind.ROLLBACK
        if self.fresh:
            return PointKind.FRESH_START
        if self.newest is None and (self.installs or any(
                f.status == "valid" for f in self.live.values())):
            return PointKind.UPGRADE
        if self.catch_up:
            return PointKind.CATCH_UP
        return None


class RecoveryReport:
    """What recover() found and did, for the host to act on and record.

    `backups_problem` is None when backups/ can be created, written and locked;
    otherwise why not. `caught_up` is True when every live state file is held by a
    committed point. `point` is the number of the point committed (None: none was
    needed); `unseen` maps stores that could not be seen to why.
    """

    def __init__(self, plan: RecoveryPlan, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.backups_problem = plan.backups_problem
        self.kept = list(plan.kept)
        self.restored: dict[Path, str] = {p: c.backup.name for p, c in plan.installs.items()}
        self.planned: dict[str, bytes | None] = {p.name: c.data for p, c in plan.installs.items()}
        """By file name, the bytes recovery installs (or, in a dry run, would install)."""
        self.first_run = list(plan.first_run)
        self.fresh: dict[Path, list[str]] = {p: [] for p in plan.fresh}
        self.backed_up: dict[Path, str] = {}
        self.caught_up_files = list(plan.catch_up)
        self.rolled_back = list(plan.rolled_back)
        self.unseen = dict(plan.unseen)
        self.newest_point = plan.newest.sequence if plan.newest else None
        self.identity = plan.newest.identity if plan.newest else None
        self.history = plan.history
        """Whom the history belonged to at its newest point (None: it never said)."""
        self.point: int | None = None
        self.queued: list[tuple[str, str]] = []
        self.errors: list[str] = []

    @property
    def caught_up(self) -> bool:
        return self.backups_problem is None and not self.errors

    def __repr__(self) -> str:
        return (f"RecoveryReport(restored={len(self.restored)}, first_run={len(self.first_run)}, "
                f"caught_up={len(self.caught_up_files)}, point={self.point}, "
                f"errors={len(self.errors)})")


def recover(manager: BackupManager, state_files: Iterable[str | Path] | None = None, *,
            facts: HostFacts | None = None, accept_fresh: bool = False,
            accept_rollback: bool = False, accept_identity: bool = False,
            accept_takeover: bool = False, require_fence: bool = False,
            from_reachable: bool = False, dry_run: bool = False,
            evidence: Mapping[str | Path, str] | Callable[[Path], str | None] | None = None,
            command: str | None = None, fresh_command: str | None = None
            ) -> RecoveryReport:
    """Make every state file (default: the configured ones) valid, or refuse.

    Decides first (plan_recovery), then installs, catches up and commits
    (apply_recovery); a dry run only decides, and logs what it would do. Raises
    Refusal (a StateUnrecoverableError) when the host must not trade. `evidence`
    and `command`/`fresh_command` are the older way to give HostFacts' evidence
    and commands."""
    facts = facts or HostFacts()
    if evidence is not None:
        facts.evidence = _evidence_function(evidence)
    if command is not None:
        facts.backup_command = command
    if fresh_command is not None:
        facts.commands.setdefault("accept_fresh", fresh_command)
    paths = [Path(p) for p in (manager.state_files if state_files is None else state_files)]
    require_fence = require_fence or manager.require_fence
    plan = plan_recovery(manager, paths, facts, accept_fresh=accept_fresh,
                         accept_rollback=accept_rollback, accept_identity=accept_identity,
                         accept_takeover=accept_takeover, require_fence=require_fence,
                         from_reachable=from_reachable, dry_run=dry_run)
    return apply_recovery(manager, plan, dry_run=dry_run, facts=facts)


def _evidence_function(evidence: Mapping[str | Path, str] | Callable[[Path], str | None]
                       ) -> Callable[[Path], str | None]:
    if callable(evidence):
        return evidence
    hints = {Path(p).name: why for p, why in evidence.items()}
    return lambda path: hints.get(path.name)


# --- deciding -------------------------------------------------------------------------


class _Refusals:
    """The reasons to refuse found so far, the first kind found, and the commands."""

    def __init__(self) -> None:
        self.kind: RefusalKind | None = None
        self.reasons: list[tuple[str, str]] = []
        self.commands: list[str] = []

    def add(self, kind: RefusalKind, subject: str, why: str, *commands: str) -> None:
        self.kind = self.kind or kind
        self.reasons.append((subject, why))
        self.commands += [c for c in commands if c not in self.commands]


HEADLINES = {
    RefusalKind.LOST: "state that existed cannot be recovered",
    RefusalKind.DAMAGED: "the newest restore point's state is held by no store",
    RefusalKind.UNSEEN: "a store that may hold newer state cannot be seen",
    RefusalKind.ROLLBACK: "live state is older than the newest restore point",
    RefusalKind.CLOCK: "the state records a moment ahead of this machine's clock",
    RefusalKind.RECORDS: "the only state left is older than the host's own records",
    RefusalKind.UNREADABLE: "a state file cannot be read",
    RefusalKind.BACKUPS: "the backups folder cannot be used to recover lost state",
    RefusalKind.IDENTITY: "this history belongs to another account than the one configured",
    RefusalKind.WRITER: "another machine has moved this history on",
    RefusalKind.FORK: "the history has forked: two machines wrote the same point",
    RefusalKind.FENCE: "a store could not be checked for a newer writer "
                       "(backup.require_fence)",
    RefusalKind.INTENT: "an earlier run's orders cannot be settled",
}


def plan_recovery(manager: BackupManager, paths: list[Path], facts: HostFacts, *,
                  accept_fresh: bool = False, accept_rollback: bool = False,
                  accept_identity: bool = False, accept_takeover: bool = False,
                  require_fence: bool = False, from_reachable: bool = False,
                  dry_run: bool = False) -> RecoveryPlan:
    """Decide, changing nothing: what to install, catch up, commit, or why to refuse."""
    live = {path: LiveFile(path) for path in paths}
    # backups/ is made (if it can be) before it is listed: on a new machine it is not
    # there yet, and its absence is no store that cannot be seen.
    problem = None if dry_run else _backups_problem(manager)
    history = manager.history()
    plan = RecoveryPlan(live, history)
    plan.backups_problem = problem
    refusals = _Refusals()
    sources = list(manager.sources())
    search = Search()
    for location, store in sources:
        if location in history.unseen:
            search.cannot_ask(location, store, f"cannot list: {history.unseen[location]}")
    for path, lf in live.items():
        if lf.status == "unreadable":
            refusals.add(RefusalKind.UNREADABLE, str(path), f"cannot be read ({lf.detail})",
                         f"ls -l {path}  # fix what stops it being read, then run again")
    lost = [p for p, lf in live.items() if lf.lost]
    plan.taking_over = accept_takeover
    if require_fence and history.unseen:
        refusals.add(RefusalKind.FENCE, "site", _unseen_text(search) + "; a newer writer "
                     "there would go unseen", f"{facts.backup_command} status")
    if plan.newest is not None and not accept_takeover:
        _check_writers(manager, plan, facts, refusals)
    if plan.newest is None:
        _plan_without_points(manager, plan, lost, facts, refusals, sources, search,
                             accept_fresh, from_reachable)
    else:
        _plan_with_points(manager, plan, facts, refusals, sources, search, accept_fresh,
                          accept_rollback, from_reachable)
    if not accept_identity:
        _check_identity(plan, facts, refusals)
    _check_records(plan, facts, refusals)
    _check_clock(plan, facts, refusals)
    for path in plan.installs if plan.backups_problem else ():
        # A missing file needs backups/ only to be read; one that is there (invalid) must
        # be kept under corrupt/ before it is replaced (promise 4), which needs writing.
        if plan.live[path].data is not None:
            refusals.add(RefusalKind.BACKUPS, str(path), f"is {plan.live[path].status} and "
                         f"would have to be kept under {manager.backup_dir}/corrupt/ before it "
                         f"is replaced, but the backups folder cannot be written: "
                         f"{plan.backups_problem}",
                         f"ls -ld {manager.backup_dir}  # make it writable, then run again")
    plan.unseen.update(search.unreachable_ids)
    if refusals.reasons:
        plan.refusal = Refusal(refusals.kind, HEADLINES[refusals.kind], refusals.reasons,
                               refusals.commands + [f"{facts.backup_command} status"
                                                    "  # what every store holds"])
    return plan


def _check_writers(manager: BackupManager, plan: RecoveryPlan, facts: HostFacts,
                   refusals: _Refusals) -> None:
    """One writer per history: a history that forked, or whose newest point another
    machine wrote while this one's live state differs from it, is not this machine's to
    go on with until it adopts that history or takes it over on purpose."""
    take_over = facts.command("accept_takeover", "(the host's take-over command)") + \
        "  # keep this machine's state: it becomes the newest point"
    adopt = f"{facts.backup_command} restore --all --yes  # adopt the newest point's state"
    fork = plan.history.fork()
    if fork is not None:
        where = ", ".join(f"{loc}: {digest[:12]}" for loc, digest in fork.digests.items())
        refusals.add(RefusalKind.FORK, "site", f"restore point {fork.sequence}: {fork.why} "
                     f"({where}); two machines (or a cloned disk) wrote it", take_over)
        return
    newest = plan.newest
    me = known_writer_id(manager.backup_dir)
    if newest.writer == me:
        return
    if newest.kind == PointKind.ORDERS and facts.clock() < newest.time + INTENT_LEASE:
        # Another machine's intent that nothing follows may be in flight: settling it
        # here would race that machine's own orders. Past its lease it is abandoned.
        expires = newest.time + INTENT_LEASE
        refusals.add(RefusalKind.WRITER, "site",
                     f"writer {newest.writer} committed restore point {newest.sequence} "
                     f"({newest.time:%Y-%m-%d %H:%M:%S} UTC) to place "
                     f"{len(newest.details.get('orders', ()))} order(s) and has not recorded "
                     "what they did; that machine may be placing them now",
                     facts.command("run", "(the host's daily run)") +
                     f"  # after {expires:%Y-%m-%d %H:%M:%S} UTC: an intent that old is "
                     "abandoned, and this machine settles it",
                     facts.command("accept_takeover", "(the host's take-over command)") +
                     "  # that machine is gone: this one settles its orders now")
        return
    differs = [p for p, lf in plan.live.items() if lf.status == "valid" and
               (newest.entry(p.name) is None or newest.entry(p.name).sha256 != lf.digest)]
    if differs:
        refusals.add(RefusalKind.WRITER, "site",
                     f"writer {newest.writer} committed restore point {newest.sequence} "
                     f"({newest.time:%Y-%m-%d %H:%M} UTC); this machine (writer {me or 'new'}) "
                     f"holds other state in " + ", ".join(p.name for p in differs),
                     adopt, take_over)


def _plan_with_points(manager: BackupManager, plan: RecoveryPlan, facts: HostFacts,
                      refusals: _Refusals, sources: list, search: Search, accept_fresh: bool,
                      accept_rollback: bool, from_reachable: bool) -> None:
    newest = plan.newest
    for path, lf in plan.live.items():
        entry = newest.entry(path.name)
        if lf.status == "valid":
            if entry is not None and lf.digest == entry.sha256 or plan.taking_over:
                plan.kept.append(path)  # a take-over keeps this machine's state, whole
                continue
            older = _older_than_newest(manager, plan, path, lf, sources, search)
            if older is None:
                refusals.add(RefusalKind.DAMAGED, str(path),
                             f"holds bytes no restore point holds, and the newest point's "
                             f"backup {entry.backup} cannot be read to compare them",
                             f"{facts.backup_command} verify")
            elif older and accept_rollback:
                plan.rolled_back.append(path)
            elif older:
                refusals.add(RefusalKind.ROLLBACK, str(path), older, *_rollback_commands(
                    facts, path))
            else:
                plan.catch_up.append(path)
            continue
        if lf.status != "missing" and lf.status != "invalid":
            continue
        if entry is None:
            # No point records the file: only the host's own records can say it existed.
            why = [f"is invalid ({lf.detail})"] if lf.status == "invalid" else []
            hint = facts.evidence(path)
            if hint:
                why.append(hint)
            if not why:
                plan.first_run.append(path)
            elif accept_fresh:
                plan.fresh.append(path)
            else:
                refusals.add(RefusalKind.LOST, str(path), "; ".join(why) + "; no restore point "
                             "records it", *_fresh_commands(facts))
            continue
        if search.unreachable and not from_reachable:
            refusals.add(RefusalKind.UNSEEN, str(path), "must be installed from restore point "
                         f"{newest.sequence}, but " + _unseen_text(search),
                         f"{facts.backup_command} restore --all --from-reachable --yes"
                         "  # install from the stores that answer, on purpose")
            continue
        chosen = fetch_entry(sources, state_key(path), entry, search)
        if chosen is None and search.unreachable and not from_reachable:
            refusals.add(RefusalKind.UNSEEN, str(path), f"{entry.backup} could not be "
                         "fetched: " + _unseen_text(search),
                         f"{facts.backup_command} restore --all --from-reachable --yes")
        elif chosen is None and accept_fresh:
            plan.fresh.append(path)
        elif chosen is None:
            older = find_in_points(plan.history, sources, state_key(path), Search())
            rollback = [f"{facts.backup_command} restore {path} --yes  # restore point "
                        f"{older[1].sequence}'s, the newest that verifies: a rollback, "
                        "acknowledged at the next run"] if older else []
            refusals.add(RefusalKind.DAMAGED, str(path), f"is {lf.status}; restore point "
                         f"{newest.sequence} names {entry.backup}, and no store holds those "
                         "bytes intact", f"{facts.backup_command} verify", *rollback,
                         *_fresh_commands(facts))
        else:
            plan.installs[path] = chosen


def _plan_without_points(manager: BackupManager, plan: RecoveryPlan, lost: list[Path],
                         facts: HostFacts, refusals: _Refusals, sources: list,
                         search: Search, accept_fresh: bool, from_reachable: bool) -> None:
    history = plan.history
    for path, lf in plan.live.items():
        if lf.status == "valid":
            plan.kept.append(path)
    for path in lost:
        lf = plan.live[path]
        chosen = find_newest_valid(sources, state_key(path), None, search.unreachable_ids,
                                   search)
        if search.unreachable and not from_reachable:
            refusals.add(RefusalKind.UNSEEN, str(path), "is " + lf.status + "; "
                         + _unseen_text(search),
                         f"{facts.backup_command} restore {path} --from-reachable --yes"
                         "  # install from the stores that answer, on purpose")
            continue
        if chosen is not None:
            plan.installs[path] = chosen
            continue
        reasons = []
        if lf.status == "invalid":
            reasons.append(f"exists but is invalid ({lf.detail})")
        if search.found:
            reasons.append(f"{search.found} backup(s) exist but none is valid")
        if history is not None and history.damaged:
            reasons.append("restore point(s) " + ", ".join(map(str, sorted(history.damaged)))
                           + " exist but none can be read")
        hint = facts.evidence(path)
        if hint:
            reasons.append(hint)
        if not reasons:
            log.info("no %s and no backups of it: first run for this file", path.name)
            plan.first_run.append(path)
        elif accept_fresh:
            plan.fresh.append(path)
        else:
            refusals.add(RefusalKind.LOST, str(path), "; ".join(reasons),
                         f"{facts.backup_command} verify",
                         *_fresh_commands(facts))


def _older_than_newest(manager: BackupManager, plan: RecoveryPlan, path: Path, lf: LiveFile,
                       sources: list, search: Search) -> str | None | bool:
    """Why the valid live file is older than the newest point (text), False when it is
    not (newer state: a catch-up), None when it cannot be told (the newest point's
    bytes cannot be read to compare the moments they record)."""
    newest, name = plan.newest, path.name
    entry = newest.entry(name)
    if entry is None:
        return False  # the history knows no such file yet: it is new
    why = []
    when = content_time(name, lf.data)
    if when is not None:
        chosen = fetch_entry(sources, state_key(path), entry, search)
        newest_when = content_time(name, chosen.data) if chosen is not None else None
        if newest_when is not None and when < newest_when:
            why.append(f"records {_day(when)}, {(newest_when - when).days} day(s) before the "
                       f"{_day(newest_when)} of the newest restore point ({newest.sequence})")
        unknown = chosen is None  # the moments cannot be compared
    else:
        unknown = False
    for point in plan.history:
        older = point.entry(name)
        if point.sequence < newest.sequence and older is not None and \
                older.sha256 == lf.digest:
            why.append(f"holds the bytes of restore point {point.sequence} "
                       f"({point.time:%Y-%m-%d %H:%M} UTC), not those of the newest, "
                       f"{newest.sequence} ({newest.time:%Y-%m-%d %H:%M} UTC)")
            break
    if not why:
        try:
            holder = verified_holder(manager.store, state_key(path), lf.data)
        except StoreUnreachable:
            holder = None
        if holder is not None and _created_before(path, holder, entry.backup):
            why.append(f"holds the bytes of backup {holder}, older than {entry.backup}, "
                       f"which the newest restore point ({newest.sequence}) names")
    if not why and unknown:
        return None
    return "; ".join(why) or False


def _created_before(path: Path, a: str, b: str) -> bool:
    """Backup `a` of the state file at `path` was made before backup `b` (name order is
    creation order; legacy names come before every new-style one)."""
    key = state_key(path)
    first, second = parse_backup_name(a, *key), parse_backup_name(b, *key)
    if first is None or second is None:
        return False
    return (not first.legacy, first.stamp) < (not second.legacy, second.stamp)


def _check_identity(plan: RecoveryPlan, facts: HostFacts, refusals: _Refusals) -> None:
    """A history recorded under another identity (another broker account) is not this
    host's to trade on: its last rebalance, its positions are the other account's."""
    recorded = plan.newest.identity if plan.newest is not None else None
    if recorded is None or facts.identity is None or recorded == facts.identity:
        return
    refusals.add(RefusalKind.IDENTITY, "site",
                 f"this history belongs to {facts.describe(recorded)} (restore point "
                 f"{plan.newest.sequence}), but the configuration now points at "
                 f"{facts.describe(facts.identity)} (point it back there, or switch)",
                 facts.command("accept_identity", "(the host's switch command)")
                 + "  # switch on purpose: the old history is kept")


def _identity_text(identity: Any) -> str:
    if isinstance(identity, Mapping):
        return ", ".join(f"{k} {v}" for k, v in sorted(identity.items()) if v is not None)
    return str(identity)


def _check_records(plan: RecoveryPlan, facts: HostFacts, refusals: _Refusals) -> None:
    """An installed file older than what the host's records know of would make the host
    act on stale state: refuse."""
    for path, chosen in plan.installs.items():
        record = facts.records.get(path.name)
        if record is None or record[0] is None:
            continue
        when = content_time(path.name, chosen.data)
        if when is not None and when < record[0] - _SECOND:
            refusals.add(RefusalKind.RECORDS, str(path),
                         f"the newest valid copy ({chosen.backup.name}) records "
                         f"{when.isoformat()}, but {record[1]}: the newer copies were lost "
                         "or damaged", f"{facts.backup_command} verify",
                         f"{facts.backup_command} restore {path} --yes  # if the older "
                         "moment is right after all: a rollback, acknowledged at the next run")


def _check_clock(plan: RecoveryPlan, facts: HostFacts, refusals: _Refusals) -> None:
    now = facts.clock()
    for path, lf in plan.live.items():
        data = plan.installs[path].data if path in plan.installs else lf.data
        if data is None or lf.status == "unreadable" or (lf.lost and path not in plan.installs):
            continue
        when = content_time(path.name, data)
        if when is not None and when > now + CLOCK_SKEW:
            refusals.add(RefusalKind.CLOCK, str(path),
                         f"records {when.isoformat()}, ahead of the clock ({now.isoformat()}):"
                         " either this machine's clock is behind, or the file is wrong",
                         "timedatectl status  # if the clock is wrong: fix it (NTP)",
                         f"{facts.backup_command} restore {path} --timestamp PREFIX --yes"
                         "  # if the file is wrong: an older backup")


def _rollback_commands(facts: HostFacts, path: Path) -> list[str]:
    return [f"{facts.backup_command} restore {path} --yes  # back to the newest point",
            facts.command("accept_rollback", "(the host's --accept-rollback)")
            + "  # keep the older state on purpose"]


def _fresh_commands(facts: HostFacts) -> list[str]:
    fresh = facts.commands.get("accept_fresh", "recover(..., accept_fresh=True)")
    return [f"{fresh}  # start over on purpose; damaged backups move to backups/corrupt/"]


def _unseen_text(search: Search) -> str:
    return "; ".join(f"{where} cannot be seen ({why})"
                     for where, why in search.unreachable.items())


def _day(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d}"


_SECOND = timedelta(seconds=1)


# --- doing ----------------------------------------------------------------------------


def apply_recovery(manager: BackupManager, plan: RecoveryPlan, *, dry_run: bool = False,
                   facts: HostFacts | None = None) -> RecoveryReport:
    """Carry out a plan: refuse (recording why), or install, start over, catch up and
    commit, then queue the copies targets lack. A dry run changes nothing and logs
    what it would do."""
    facts = facts or HostFacts()
    report = RecoveryReport(plan, dry_run)
    if plan.refusal is not None:
        if not dry_run:
            _record(manager, plan, plan.refusal)
        raise plan.refusal
    if dry_run:
        _log_dry_run(plan)
        return report
    for path, chosen in plan.installs.items():
        point_from = plan.history.read_from(plan.newest.sequence) if plan.newest else None
        install(manager.folder, path, chosen, dry_run=False, skipped=[], point=plan.newest,
                point_from=point_from)
        log.warning("recovered %s from backup %s (%s)", path, chosen.backup.name,
                    chosen.store.label)
    for path in plan.fresh:
        report.fresh[path] = manager.quarantine(path)
        log.warning("accept_fresh: starting %s over", path)
    kind = plan.commit_kind
    if kind is not None and plan.backups_problem is None:
        details = {"rolled_back_from": plan.newest.sequence} if plan.rolled_back else {}
        if kind == PointKind.TAKE_OVER:
            _set_forks_aside(manager, plan)
        why = {PointKind.TAKE_OVER: "taken over on purpose by this machine",
               PointKind.ROLLBACK: "rollback acknowledged: " + ", ".join(
                   p.name for p in plan.rolled_back),
               PointKind.FRESH_START: "started over on purpose: " + ", ".join(
                   p.name for p in plan.fresh),
               PointKind.UPGRADE: "the first restore point of this history",
               PointKind.CATCH_UP: "live state no point held: " + ", ".join(
                   p.name for p in plan.catch_up)}[kind]
        if facts.identity is not None and (plan.newest is None or
                                           plan.newest.identity is None):
            details["identity"] = facts.identity
        try:
            before = set(manager.store.list_names())
            if kind == PointKind.TAKE_OVER:
                details["took_over_from"] = {"sequence": plan.newest.sequence,
                                             "writer": plan.newest.writer}
            point = manager.commit_point(
                kind, why, details=details, fresh=[p.name for p in plan.fresh],
                state_files=list(plan.live), force=kind == PointKind.TAKE_OVER,
                follows=plan.newest if kind == PointKind.TAKE_OVER else None)
            report.point = point.sequence if point else None
            for path in plan.live:
                entry = point.entry(path.name) if point else None
                if entry is not None and entry.backup not in before:
                    report.backed_up[path] = entry.backup
        except (BackupError, OSError) as exc:
            report.errors.append(f"cannot commit a restore point: {exc}")
            log.error("cannot commit a restore point of %s: %s", kind, exc)
    if plan.backups_problem is None:
        _queue_missing_copies(manager, list(plan.live), plan.history, report)
    _record(manager, plan, None)
    return report


def _set_forks_aside(manager: BackupManager, plan: RecoveryPlan) -> None:
    """A take-over after a fork: this folder's copies of points that the other stores
    hold otherwise move to backups/forks/ (kept, never read), so every store agrees on
    the chain the take-over point follows."""
    fork = plan.history.fork()
    if fork is None:
        return
    local = fork.digests.get("local")
    others = {d for loc, d in fork.digests.items() if loc not in ("local", "follows")}
    if local is None or local in others or not others:
        return
    moved = manager.folder.set_aside("forks", [point_name(fork.sequence)])
    log.warning("take-over: this folder's own restore point %d moved to %s", fork.sequence,
                ", ".join(moved))
    plan.history = manager.history()
    plan.newest = plan.history.newest()


def _log_dry_run(plan: RecoveryPlan) -> None:
    for path, chosen in plan.installs.items():
        log.warning("dry run: would recover %s from backup %s (%s)", path,
                    chosen.backup.name, chosen.store.label)
    for path in plan.fresh:
        log.warning("dry run: would start %s over", path)
    if plan.commit_kind is not None:
        log.warning("dry run: would commit a restore point of kind %s", plan.commit_kind)


def _record(manager: BackupManager, plan: RecoveryPlan, refusal: Refusal | None) -> None:
    """What `status` shows of this start-up: its refusal, and stores it could not see."""
    doc = None if refusal is None and not plan.unseen else {
        "time": datetime.now(UTC).isoformat(),
        "refused": refusal.as_record() if refusal else None,
        "unseen": plan.unseen,
        "newest_point": plan.newest.sequence if plan.newest else None}
    try:
        manager.folder.record_recovery(doc)
    except OSError as exc:
        log.error("cannot record the outcome of recovery in %s: %s", manager.backup_dir, exc)


def _backups_problem(manager: BackupManager) -> str | None:
    """None when backups/ can be created, written and locked; else why not."""
    try:
        with manager.folder.locked():
            unlink_quietly(write_temp(manager.backup_dir, ".probe", b"", durable=False))
    except (BackupError, OSError) as exc:
        log.error("backups folder %s cannot be used: %s", manager.backup_dir, exc)
        return str(exc)
    return None


def _queue_missing_copies(manager: BackupManager, paths: list[Path], history: History,
                          report: RecoveryReport) -> None:
    """Owe each copy target the newest backup of each state file and the newest point
    it lacks (one listing per target per run: the one the history made)."""
    try:
        newest = [b.name for b in (next(backups_of(manager.store, state_key(p)).complete(),
                                        None) for p in paths) if b is not None]
        from .commit import newest_local_point
        point, _ = newest_local_point(manager.folder, manager.store.list_names())
    except StoreUnreachable as exc:
        report.errors.append(str(exc))
        return
    if point is not None:
        newest.append(point.name)
    manager.copier.claim()
    owed = {(c.target, c.name) for c in manager.outbox.pending()}
    for target_id, target in manager.copier.targets.items():
        if target_id not in history.names:
            log.warning("cannot list %s to catch up copies: %s", target.label,
                        history.unseen.get(target_id, "not listed"))
            continue
        present = set(history.names[target_id])
        for name in newest:
            missing = name not in present or name + SIDECAR_SUFFIX not in present
            if missing and (target_id, name) not in owed:
                manager.outbox.add(target_id, name)
                report.queued.append((target_id, name))
    if report.queued:
        log.warning("copies missing from their targets queued: %s",
                    ", ".join(f"{name} -> {t}" for t, name in report.queued))
        manager.copier.send_owed()
