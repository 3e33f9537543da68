"""The recovery rules, each asked of a plan: the live files as they stand (LiveFile), whose
history this is, whether live state is older than the newest point, the account it
belongs to, the host's records, and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from .atomic import read_state_file
from .content import content_time, validate_content
from .errors import InvalidStateError, StoreUnreachable
from .formats import CLOCK_SKEW, parse_backup_name, sha256_hex, state_key
from .history import lease_ends
from .install import verified_holder
from .manager import BackupManager
from .points import PointKind
from .refusal import HostFacts, Refusal, RefusalKind, Refusals, writer_commands
from .restore import Candidate, Search, fetch_entry
from .writer import known_writer_id

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .history import History
    from .points import Point


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
        self.other_writer = False
        """Another writer's history, or a fork: the writer refusal's own commands (adopt,
        take over) settle every live file, so no file is judged a rollback or catch-up."""

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


def check_writers(manager: BackupManager, plan: RecoveryPlan, facts: HostFacts,
                   refusals: Refusals) -> None:
    """One writer per history: a history that forked, or whose newest point another
    machine wrote while this one's live state differs from it, is not this machine's to
    go on with until it adopts that history or takes it over on purpose."""
    adopt, take_over = writer_commands(facts)
    fork = plan.history.fork()
    if fork is not None:
        where = ", ".join(f"{loc}: {digest[:12]}" for loc, digest in fork.digests.items())
        plan.other_writer = True
        refusals.add(RefusalKind.FORK, "site", f"restore point {fork.sequence}: {fork.why} "
                     f"({where}); two machines (or a cloned disk) wrote it", take_over)
        return
    newest = plan.newest
    me = known_writer_id(manager.backup_dir)
    if newest.writer == me:
        return
    if newest.kind == PointKind.ORDERS and facts.clock() < lease_ends(plan.history, newest):
        # Another machine's intent that nothing follows may be in flight: settling it
        # here would race that machine's own orders. Past its lease it is abandoned.
        expires = lease_ends(plan.history, newest)
        plan.other_writer = True
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
        plan.other_writer = True
        refusals.add(RefusalKind.WRITER, "site",
                     f"writer {newest.writer} committed restore point {newest.sequence} "
                     f"({newest.time:%Y-%m-%d %H:%M} UTC); this machine (writer {me or 'new'}) "
                     f"holds other state in " + ", ".join(p.name for p in differs),
                     adopt, take_over)


def older_than_newest(manager: BackupManager, plan: RecoveryPlan, path: Path, lf: LiveFile,
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


def check_identity(plan: RecoveryPlan, facts: HostFacts, refusals: Refusals) -> None:
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


def check_records(plan: RecoveryPlan, facts: HostFacts, refusals: Refusals) -> None:
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


def check_clock(plan: RecoveryPlan, facts: HostFacts, refusals: Refusals) -> None:
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


def _day(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d}"


_SECOND = timedelta(seconds=1)
