"""History: the restore points every store holds, read on demand, and what the
chain says: forks, the intents no point settles, the orders the points record."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from .envelope import NOT_AUTHENTICATED, UNKNOWN_KEY
from .errors import IntegrityError, InvalidStateError, StoreUnreachable
from .formats import SIDECAR_SUFFIX, sha256_hex, sidecar_text
from .points import (
    MAX_POINT_BYTES,
    Point,
    PointKind,
    decode_point,
    point_name,
    points_in,
    sidecar_digest_of,
)
from .store import fetch_verified

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .store import Store


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
        self.forged: set[int] = set()
        """Numbers whose every copy failed its signature: planted, never a point."""
        self.unknown_key: dict[int, str] = {}
        """Numbers signed with a key the key file does not hold (rotated elsewhere)."""
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
        """The highest number any store holds (readable or damaged, but not forged: a
        point whose every copy carries no valid signature takes no number); 0 when
        none."""
        for sequence in sorted(self.locations, reverse=True):
            self.point(sequence)
            if sequence not in self.forged:
                return sequence
        return 0

    def point(self, sequence: int) -> Point | None:
        """Point `sequence` from the first store whose copy verifies; None if none does."""
        if sequence not in self._read:
            self._read[sequence] = self._first_good(sequence)
        return self._read[sequence]

    def _first_good(self, sequence: int) -> Point | None:
        why, kinds = [], []
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
                kinds.append(getattr(exc, "kind", None))
            except StoreUnreachable as exc:
                self.unseen.setdefault(location, str(exc))
                why.append(f"{store.label}: {exc}")
                kinds.append(None)
        self.damaged[sequence] = "; ".join(why) or "not found"
        if kinds and all(kind == NOT_AUTHENTICATED for kind in kinds):
            self.forged.add(sequence)
        if UNKNOWN_KEY in kinds:
            self.unknown_key[sequence] = self.damaged[sequence]
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

    def written(self, sequence: int) -> datetime | None:
        """The latest time a store that holds point `sequence` says it was written, by the
        store's own clock (None: none says): unlike the point's own time, no writer's
        clock can set it back."""
        found = []
        for location, store in self.locations.get(sequence, ()):
            try:
                when = store.written_at(point_name(sequence))
            except StoreUnreachable as exc:
                self.unseen.setdefault(location, str(exc))
                continue
            if when is not None:
                found.append(when)
        return max(found, default=None)

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
            digest = sidecar_digest_of(sidecar or b"")
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


# How long an intent keeps its claim: its writer places no order of it later than this
# after committing it (every broker call is bounded; four orders take seconds), and
# another machine settles it only after this (it is taken as abandoned).
INTENT_LEASE = timedelta(minutes=15)


def lease_ends(history: History, intent: Point) -> datetime:
    """When an intent's lease ends: INTENT_LEASE after the later of its own time (its
    writer's clock) and the time its stores say it was written (theirs), so a writer
    whose clock is slow cannot make an intent in flight look abandoned."""
    written = history.written(intent.sequence)
    return max(intent.time, written or intent.time) + INTENT_LEASE


def finish_abandoned_claim(store: Store, sequence: int, writer: str,
                           now: datetime) -> Point | None:
    """A claim whose point reached `store` and whose sidecar never did (its run was killed
    between the two: no order of it was placed) is finished here, its own bytes given
    their sidecar, when it is this writer's own or past its lease: it then counts as an
    intent like any other, and is settled. Returns that point; None when the object
    under the number is complete, another writer's claim still in its lease, or no
    point at all."""
    name = point_name(sequence)
    if store.read(name + SIDECAR_SUFFIX, max_bytes=MAX_POINT_BYTES) is not None:
        return None
    data = store.read(name, max_bytes=MAX_POINT_BYTES)
    try:
        point = decode_point(data, name) if data is not None else None
    except InvalidStateError:
        return None
    if point is None or point.kind != PointKind.ORDERS:
        return None
    written = store.written_at(name) or point.time
    if point.writer != writer and now < max(point.time, written) + INTENT_LEASE:
        return None
    store.write(name + SIDECAR_SUFFIX, sidecar_text(sha256_hex(data), name))
    return point


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
