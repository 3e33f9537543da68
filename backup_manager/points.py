"""Restore points: one small manifest per committed change of state, in one chain.

``point-0000000012.json`` names, for every state file of the history, the backup
that holds its bytes at that moment (name and SHA-256), or null where the file did
not exist. It carries its sequence number (the newest seen + 1, never the clock),
the point it follows (sequence and the SHA-256 of that manifest: a chain), its
writer, when and why it was made. It is written like a backup: atomically,
durably, with a ``.sha256`` sidecar, created exclusively under its number, and
owed to every copy target. Its name holds the number alone, so two writers can
never both create the same number in one store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from .content import parse_iso_timestamp
from .errors import IntegrityError, InvalidStateError, StoreUnreachable
from .formats import SIDECAR_SUFFIX, sha256_hex
from .store import fetch_verified

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .store import Store

POINT_PREFIX = "point-"
POINT_FORMAT = 1
MAX_POINT_BYTES = 256 * 1024
"""A point of DalioLite's three files is under 1 KiB; anything this large is not one."""
_POINT_NAME = r"point-([0-9]{10})\.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_WRITER = re.compile(r"[0-9a-f]{12}")


class PointKind(StrEnum):
    """Why a point was made."""

    RUN = "run"                  # a host run that changed state
    BACKUP = "backup"            # a bare backup_state_file call (the specification's API)
    CATCH_UP = "catch-up"        # live bytes no point held, recorded at start-up
    UPGRADE = "upgrade"          # the first point of a backups/ folder made before points
    ROLLBACK = "rollback"        # older state, installed and acknowledged on purpose
    FRESH_START = "fresh-start"  # state files started over on purpose
    ORDERS = "orders"            # the intent before a run's orders
    RECONCILED = "reconciled"    # orders found at the broker that no point recorded
    TAKE_OVER = "take-over"      # this writer takes the history over on purpose
    SWITCH = "switch"            # the history moves to another identity (broker account)


class Entry(tuple):
    """Where a state file's bytes are at one point: (backup name, SHA-256, made).

    `made` is the clock reading when that backup was made (None: not recorded, a point
    of an older release). It lives here, not in the backup's name or sidecar: the name
    is pinned after the newest stamp when the clock is behind (promise 9), the sidecar
    must stay what `sha256sum -c` reads, and the point that first names a backup is
    committed in the same lock hold as the backup; every later point carries the entry
    on unchanged, so the reading outlives that first point. Retention takes ages and
    days from it, so a backup named after a glitched one ages by when it was made."""

    __slots__ = ()

    def __new__(cls, backup: str, sha256: str, made: datetime | None = None) -> Entry:
        return super().__new__(cls, (backup, sha256, made))

    @property
    def backup(self) -> str:
        return self[0]

    @property
    def sha256(self) -> str:
        return self[1]

    @property
    def made(self) -> datetime | None:
        return self[2]


CARRIED = ("identity",)
"""Details every point carries on from the one it follows unless it changes them: the
host's identity (which broker account the history belongs to)."""


class Point:
    """One restore point, as read from its manifest (`digest` is the manifest's SHA-256).
    `details` holds what the point says besides files: the host's `identity`, what a
    rollback rolled back from, an intent's orders."""

    __slots__ = ("sequence", "time", "writer", "kind", "reason", "follows", "files",
                 "details", "digest")

    def __init__(self, sequence: int, time: datetime, writer: str, kind: str, reason: str,
                 follows: tuple[int, str] | None, files: Mapping[str, Entry | None],
                 details: Mapping[str, Any] | None = None, digest: str = ""):
        self.sequence, self.time, self.writer = sequence, time, writer
        self.kind, self.reason, self.follows = kind, reason, follows
        self.files = dict(files)
        self.details = dict(details or {})
        self.digest = digest

    @property
    def name(self) -> str:
        return point_name(self.sequence)

    def entry(self, file_name: str) -> Entry | None:
        return self.files.get(file_name)

    @property
    def identity(self) -> Any:
        """Whom the history belongs to, as the host said (None: it never said)."""
        return self.details.get("identity")

    def __repr__(self) -> str:
        return f"Point({self.sequence}, {self.kind!r}, {self.time.isoformat()})"


def point_name(sequence: int) -> str:
    return f"{POINT_PREFIX}{sequence:010d}.json"


def point_number(name: str) -> int | None:
    """The sequence number of a point's name; None for any other name."""
    m = re.fullmatch(_POINT_NAME, name)
    return int(m[1]) if m else None


def encode_point(point: Point) -> bytes:
    """The manifest's bytes: sorted JSON, one key a line, readable with standard tools."""
    import json

    doc = {
        "format": POINT_FORMAT,
        "sequence": point.sequence,
        "time": point.time.isoformat(),
        "writer": point.writer,
        "kind": str(point.kind),
        "reason": point.reason,
        "follows": None if point.follows is None else
        {"sequence": point.follows[0], "sha256": point.follows[1]},
        "files": {name: None if entry is None else _entry_doc(entry)
                  for name, entry in sorted(point.files.items())},
        "details": point.details,
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _entry_doc(entry: Entry) -> dict[str, str]:
    doc = {"backup": entry.backup, "sha256": entry.sha256}
    if entry.made is not None:  # optional in format 1: older points have none
        doc["made"] = entry.made.isoformat()
    return doc


def decode_point(data: bytes, name: str) -> Point:
    """The point a manifest holds; InvalidStateError names what is wrong with it."""
    import json

    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != POINT_FORMAT:
            raise ValueError(f"not a restore point of format {POINT_FORMAT}")
        sequence = doc["sequence"]
        if type(sequence) is not int or sequence != point_number(name):
            raise ValueError(f"sequence {sequence!r} does not match the name {name}")
        writer, kind, reason = doc["writer"], doc["kind"], doc["reason"]
        if not isinstance(writer, str) or not _WRITER.fullmatch(writer):
            raise ValueError(f"writer {writer!r} is not a writer id")
        if not isinstance(kind, str) or not isinstance(reason, str):
            raise ValueError("kind and reason must be text")
        details = doc.get("details") or {}
        if not isinstance(details, dict):
            raise ValueError("details must be an object")
        return Point(sequence, parse_iso_timestamp(doc["time"]), writer, kind, reason,
                     _follows(doc["follows"], sequence), _files(doc["files"]), details,
                     sha256_hex(data))
    except (ValueError, KeyError, TypeError, InvalidStateError) as exc:
        raise InvalidStateError(f"{name}: {exc}") from None


def _follows(value: Any, sequence: int) -> tuple[int, str] | None:
    if value is None:
        return None
    number, digest = value["sequence"], value["sha256"]
    if type(number) is not int or not 0 < number < sequence or not isinstance(digest, str) \
            or not _HEX64.fullmatch(digest):
        raise ValueError(f"follows {value!r} is not an earlier point")
    return number, digest


def _files(value: Any) -> dict[str, Entry | None]:
    from .formats import parse_backup_name, state_key

    if not isinstance(value, dict):
        raise ValueError("files must be an object")
    files: dict[str, Entry | None] = {}
    for file_name, entry in value.items():
        key = state_key(file_name)
        if entry is None:
            files[file_name] = None
            continue
        backup, digest = entry["backup"], entry["sha256"]
        if not isinstance(backup, str) or parse_backup_name(backup, *key) is None:
            raise ValueError(f"{backup!r} is not a backup of {file_name}")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ValueError(f"{file_name}: sha256 {digest!r} is not a SHA-256")
        made = entry.get("made")
        files[file_name] = Entry(backup, digest, None if made is None else
                                 parse_iso_timestamp(made))
    return files


def read_point(store: Store, sequence: int) -> Point:
    """The point `sequence` in `store`, checked against its sidecar.

    Raises IntegrityError (missing, incomplete, damaged), InvalidStateError (not a
    point) or StoreUnreachable.
    """
    name = point_name(sequence)
    return decode_point(fetch_verified(store, name, max_bytes=MAX_POINT_BYTES), name)


_TIME_FIELD = re.compile(rb'"time": "([^"]{1,64})"')
# Keys are sorted, so an entry's "made" (when it has one) comes right after its "backup".
_BACKUP_FIELD = re.compile(rb'"backup": "([^"]{1,255})",(?:\s*"made": "([^"]{1,64})",)?')


def glance(data: bytes) -> tuple[datetime | None, dict[str, datetime | None]]:
    """(time, {backup name: when it was made}) of a manifest's bytes, found without
    parsing or checking it: what retention needs, thousands of times cheaper than
    read_point. Times that are not recorded or cannot be read are None."""
    found = _TIME_FIELD.search(data)
    return _time_or_none(found[1] if found else None), {
        backup.decode(errors="replace"): _time_or_none(made)
        for backup, made in _BACKUP_FIELD.findall(data)}


def _time_or_none(text: bytes | None) -> datetime | None:
    try:
        return parse_iso_timestamp(text.decode()) if text else None
    except (InvalidStateError, UnicodeDecodeError):
        return None


def points_in(names: Iterable[str]) -> tuple[set[int], set[int]]:
    """(numbers of complete points, numbers of points without a sidecar) among `names`."""
    # One scan of the joined names (NUL never occurs in a file name): a folder of ten
    # thousand backups costs what a short one does in Python.
    found = re.findall(r"\0" + _POINT_NAME + r"(\.sha256)?(?=\0)", "\0" + "\0".join(names) + "\0")
    numbers = {int(n) for n, side in found if not side}
    sidecars = {int(n) for n, side in found if side}
    return numbers & sidecars, numbers - sidecars


class History:
    """The restore points that a list of stores holds, newest first.

    `unseen` maps each store that could not be listed (its location) to why: it
    may hold newer points; stores in `skip` (location -> why) failed earlier in this
    run and are not asked again. Points are read on demand; a copy that does not verify
    in one store is passed over for the same number in another, and a number with
    no good copy anywhere is recorded in `damaged`.
    """

    def __init__(self, sources: Iterable[tuple[str, Store]],
                 skip: Mapping[str, str] | None = None):
        self.sources = list(sources)
        self.locations: dict[int, list[tuple[str, Store]]] = {}
        self.unseen: dict[str, str] = {}
        self.damaged: dict[int, str] = {}
        self._read: dict[int, Point | None] = {}
        self._read_from: dict[int, tuple[Store, bytes]] = {}
        self._known: dict[tuple[int, str], str] = {}  # (number, location) -> digest read
        self.names: dict[str, list[str]] = {}
        """Each store's whole listing (by location), read once: what a caller needs
        besides the points (copies a target lacks) is found here without asking again."""
        for location, store in self.sources:
            if skip and location in skip:  # it failed earlier in this run: not asked again
                self.unseen[location] = "not asked again: " + skip[location]
                continue
            try:
                self.names[location] = store.list_names("")
            except StoreUnreachable as exc:
                self.unseen[location] = str(exc)
                continue
            complete, _incomplete = points_in(self.names[location])
            for number in complete:
                self.locations.setdefault(number, []).append((location, store))

    @property
    def highest(self) -> int:
        """The highest number any store holds (readable or not); 0 when none."""
        return max(self.locations, default=0)

    def point(self, sequence: int) -> Point | None:
        """Point `sequence` from the first store whose copy verifies; None if none does."""
        if sequence not in self._read:
            self._read[sequence] = self._first_good(sequence)
        return self._read[sequence]

    def _first_good(self, sequence: int) -> Point | None:
        why = []
        for location, store in self.locations.get(sequence, ()):
            try:
                name = point_name(sequence)
                data = fetch_verified(store, name, max_bytes=MAX_POINT_BYTES)
                point = decode_point(data, name)
                self._read_from[sequence] = (store, data)
                self._known[(sequence, location)] = point.digest
                return point
            except (IntegrityError, InvalidStateError) as exc:
                why.append(f"{store.label}: {exc}")
            except StoreUnreachable as exc:
                self.unseen.setdefault(location, str(exc))
                why.append(f"{store.label}: {exc}")
        self.damaged[sequence] = "; ".join(why) or "not found"
        return None

    def __iter__(self) -> Iterator[Point]:
        """Every readable point, newest first."""
        for sequence in sorted(self.locations, reverse=True):
            point = self.point(sequence)
            if point is not None:
                yield point

    def newest(self) -> Point | None:
        return next(iter(self), None)

    def read_from(self, sequence: int) -> tuple[Store, bytes] | None:
        """(the store whose copy of point `sequence` was read, the manifest's bytes)."""
        self.point(sequence)
        return self._read_from.get(sequence)

    def where(self, sequence: int) -> list[str]:
        """The locations holding point `sequence`."""
        return [location for location, _ in self.locations.get(sequence, ())]

    def fork(self) -> Fork | None:
        """Two histories where there must be one (two writers, or a cloned disk that
        kept one writer id), seen at the newest point: stores holding different points
        under its number, or a newest point that does not follow the point it names.
        None when the newest point and its chain agree everywhere it can be read."""
        newest = self.newest()
        if newest is None:
            return None
        digests = self._digests(newest.sequence)
        if len(set(digests.values())) > 1:
            return Fork(newest.sequence, digests, "stores hold different points under it")
        if newest.follows is not None:
            number, digest = newest.follows
            before = self._digests(number)
            if before and digest not in before.values():
                return Fork(newest.sequence, {**before, "follows": digest},
                            f"it follows another point {number} than the one the stores hold")
        return None

    def _digests(self, sequence: int) -> dict[str, str]:
        """The SHA-256 each store's copy of point `sequence` records (its sidecar)."""
        found = {}
        for location, store in self.locations.get(sequence, ()):
            if (sequence, location) in self._known:  # read already: no second request
                found[location] = self._known[(sequence, location)]
                continue
            try:
                sidecar = store.read(point_name(sequence) + SIDECAR_SUFFIX, max_bytes=4096)
            except StoreUnreachable as exc:
                self.unseen.setdefault(location, str(exc))
                continue
            digest = _sidecar_digest(sidecar or b"")
            if digest is not None:
                found[location] = digest
        return found


class Fork(tuple):
    """(the point's number, {location: digest}, why): where one history became two."""

    __slots__ = ()

    def __new__(cls, sequence: int, digests: Mapping[str, str], why: str) -> Fork:
        return super().__new__(cls, (sequence, dict(digests), why))

    @property
    def sequence(self) -> int:
        return self[0]

    @property
    def digests(self) -> dict[str, str]:
        return self[1]

    @property
    def why(self) -> str:
        return self[2]


def _sidecar_digest(data: bytes) -> str | None:
    found = _HEX64.match(data.decode("ascii", errors="replace").lower())
    return found[0] if found else None


# How long an intent keeps its claim: its writer places no order of it later than this
# after committing it (every broker call is bounded; four orders take seconds), and
# another machine settles it only after this (it is taken as abandoned).
INTENT_LEASE = timedelta(minutes=15)


def open_intents(history: History, within: int = 500) -> list[Point]:
    """The intents (points of kind orders) that no later point settles, oldest first,
    among the newest `within` points: a run made them and did not live to commit what
    its orders did."""
    settled: set[int] = set()
    found = []
    for n, point in enumerate(history):
        if n >= within:
            break
        settled.update(point.details.get("settles", ()))
        if point.kind == PointKind.ORDERS and point.sequence not in settled:
            found.append(point)
    return found[::-1]


def recorded_orders(history: History, within: int = 500) -> set[str]:
    """The client order ids the newest `within` points record (intents, reconciliations)."""
    found: set[str] = set()
    for n, point in enumerate(history):
        if n >= within:
            break
        found.update(o.get("client_order_id", "") for o in point.details.get("orders", ())
                     if isinstance(o, dict))
    found.discard("")
    return found
