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
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

from .content import parse_iso_timestamp
from .errors import InvalidStateError
from .formats import sha256_hex
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




def sidecar_digest_of(data: bytes) -> str | None:
    """The digest a point's sidecar records, or None when it records none."""
    found = _HEX64.match(data.decode("ascii", errors="replace").lower())
    return found[0] if found else None
