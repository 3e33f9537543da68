"""Restore: find what to install: the newest valid backup of a state file, or what a
restore point names, in whichever store holds it intact (install.py installs it).

Nothing is chosen before its bytes matched their sidecar and their content was
valid; a store that cannot be asked is recorded (`Search`), never taken as empty.
"""

from __future__ import annotations

import heapq
import os
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping

from . import log
from .catalog import BackupSet, backups_of, read_valid, sidecar_digest
from .errors import IntegrityError, InvalidStateError, StoreUnreachable
from .formats import parse_backup_name, sha256_hex, state_key
from .history import History
from .points import Entry, Point

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .formats import BackupName, StateKey
    from .store import Store

_FIELDS = "name path timestamp size complete location"


class RestoreResult(namedtuple("RestoreResult", _FIELDS + " changed replaced kept_as skipped "
                               "point newest_point behind",
                               defaults=("local", True, None, None, (), None, None, None))):
    """The backup restore chose (BackupInfo's fields), and what it did: `changed` is False
    when the file already held it; `replaced` is None, "valid" or "invalid"; `kept_as`
    is where the replaced file went; `skipped` lists (backup, why) passed over.
    Where it stands in the history: `point`, the number of the restore point it
    comes from (None: no point names these bytes); `newest_point`; `behind`, how
    many points older than the newest it is (0: the newest point's own bytes)."""

    __slots__ = ()


class Candidate(namedtuple("Candidate", "location store backup data")):
    """A backup that matched its sidecar and holds valid content, with its bytes."""

    __slots__ = ()


class Search:
    """What a search looked at: for the error message and as start-up evidence.

    `unreachable` maps each store that could not be listed or read (its label) to
    why: "cannot see" is evidence that state may exist, never "nothing there".
    """

    def __init__(self) -> None:
        self.tried: list[tuple[str, str]] = []
        self.found = 0
        self.unreachable: dict[str, str] = {}
        self.unreachable_ids: dict[str, str] = {}

    def cannot_ask(self, location: str, store: Store, why: str) -> None:
        """The store could not be listed: it is not asked again in this search."""
        self.tried.append((store.label, why))
        self.unreachable.setdefault(store.label, why)
        self.unreachable_ids.setdefault(location, why)

    def cannot_read(self, location: str, store: Store, name: str, why: str) -> None:
        """An object could not be read: the store cannot be fully seen. A bucket that
        failed once is not asked again (each try may cost a timeout); a folder is
        still asked for its other objects."""
        if store.path(name) is None:
            self.cannot_ask(location, store, why)
            return
        self.tried.append((f"{store.label}/{name}", why))
        self.unreachable.setdefault(store.label, why)

    def summary(self) -> str:
        if not self.tried:
            return "nothing to try"
        more = len(self.tried) - 10
        return "; ".join(f"{what}: {why}" for what, why in self.tried[:10]) + (
            f"; and {more} more" if more > 0 else "")


def find_newest_valid(sources: Iterable[tuple[str, Store]], key: StateKey, prefix: str | None,
                      skip: Mapping[str, str], search: Search) -> Candidate | None:
    """The newest valid backup (timestamp starting with `prefix`) across every store
    in `sources`, passing over damaged ones; on equal names the earlier store in
    `sources` wins. None when there is none. Stores in `skip` (location -> why)
    are not asked again."""
    listed = []
    for rank, (location, store) in enumerate(sources):
        if location in skip:
            search.cannot_ask(location, store, "not asked again: " + skip[location])
            continue
        try:
            backups = backups_of(store, key)
        except StoreUnreachable as exc:
            search.cannot_ask(location, store, f"cannot list: {exc}")
            continue
        if not backups:
            search.tried.append((store.label, _nothing_found(store)))
        listed.append(_candidates(backups, rank, location, store, prefix))
    for _order, _rank, location, store, backup in heapq.merge(*listed):
        if location in search.unreachable_ids:
            continue
        search.found += 1
        try:
            return Candidate(location, store, backup, read_valid(store, backup))
        except StoreUnreachable as exc:
            search.cannot_read(location, store, backup.name, f"cannot read {backup.name}: {exc}")
        except (IntegrityError, InvalidStateError) as exc:
            # One bad backup: the older ones may be fine.
            log.warning("skipping backup %s in %s: %s", backup.name, store.label, exc)
            search.tried.append((f"{store.label}/{backup.name}", str(exc)))
    return None


def fetch_entry(sources: Iterable[tuple[str, Store]], key: StateKey, entry: Entry,
                search: Search) -> Candidate | None:
    """The bytes a point's entry names, verified, from the first store holding them:
    the named backup, or else any backup of the same file with the same SHA-256 (a
    repaired copy). None when no store holds them."""
    sources = list(sources)
    for location, store in sources:
        if location in search.unreachable_ids:
            continue
        backup = parse_backup_name(entry.backup, *key)
        found = _verified(location, store, backup, entry, search) if backup else None
        if found is not None:
            return found
    for location, store in sources:
        if location in search.unreachable_ids:
            continue
        try:
            names = [b for b in backups_of(store, key).complete() if b.name != entry.backup]
        except StoreUnreachable as exc:
            search.cannot_ask(location, store, f"cannot list: {exc}")
            continue
        for backup in names:
            if sidecar_digest(store, backup.name) == entry.sha256:
                found = _verified(location, store, backup, entry, search)
                if found is not None:
                    return found
    return None


def _verified(location: str, store: Store, backup: BackupName, entry: Entry,
              search: Search) -> Candidate | None:
    try:
        data = read_valid(store, backup)
    except StoreUnreachable as exc:
        search.cannot_read(location, store, backup.name, f"cannot read {backup.name}: {exc}")
        return None
    except (IntegrityError, InvalidStateError) as exc:
        if getattr(exc, "kind", "") != "missing backup":  # one store without it is no news
            log.warning("skipping backup %s in %s: %s", backup.name, store.label, exc)
            search.tried.append((f"{store.label}/{backup.name}", str(exc)))
        return None
    if sha256_hex(data) != entry.sha256:
        search.tried.append((f"{store.label}/{backup.name}",
                             "holds other bytes than the restore point records"))
        return None
    return Candidate(location, store, backup, data)


def standing(plan: Any, result: RestoreResult | None) -> RestoreResult:
    """`result` with where its bytes stand against the newest restore point; for a plan
    whose live file already holds the newest point's bytes, the "nothing to do" result."""
    newest, point = plan.newest, plan.point
    if result is None:
        entry = newest.entry(plan.path.name)
        return RestoreResult(entry.backup, None, newest.time, None, True, "live",
                             changed=False, point=newest.sequence,
                             newest_point=newest.sequence, behind=0)
    behind = None
    if point is not None and newest is not None:
        entry = newest.entry(plan.path.name)
        same = entry is not None and plan.chosen is not None and \
            entry.sha256 == sha256_hex(plan.chosen.data)
        behind = 0 if same else newest.sequence - point.sequence
    return result._replace(point=point.sequence if point else None,
                           newest_point=newest.sequence if newest else None, behind=behind)


def point_naming(history: History, key: StateKey, digest: str) -> Point | None:
    """The newest restore point whose entry for `key` holds bytes with `digest`."""
    for point in history:
        entry = point.entry(key.file_name)
        if entry is not None and entry.sha256 == digest:
            return point
    return None


def find_in_points(history: History, sources: list[tuple[str, Store]], key: StateKey,
                   search: Search) -> tuple[Candidate, Point] | None:
    """The newest point's entry for one state file whose bytes verify somewhere, and
    that point; older points are tried when a newer entry is damaged everywhere."""
    for point in history:
        entry = point.entry(key.file_name)
        if entry is None:
            continue
        search.found += 1
        tried = len(search.tried)
        chosen = fetch_entry(sources, key, entry, search)
        if chosen is not None:
            return chosen, point
        if len(search.tried) == tried:  # no damaged copy said why: say it
            search.tried.append((f"restore point {point.sequence}",
                                 f"no store holds {entry.backup}"))
    return None


def installable_point(history: History, sources: list[tuple[str, Store]],
                      file_names: Iterable[str], search: Search, *,
                      sequence: int | None = None, prefix: str | None = None
                      ) -> tuple[Point, dict[str, Candidate]] | None:
    """The newest point (numbered `sequence`, or made at a time starting with
    `prefix`) whose entries for `file_names` all verify, with their bytes."""
    file_names = list(file_names)
    for point in history:
        if sequence is not None and point.sequence != sequence:
            continue
        if prefix is not None and not point_stamp(point).startswith(prefix):
            continue
        chosen = {}
        for file_name in file_names:
            entry = point.entry(file_name)
            if entry is None:
                continue
            found = fetch_entry(sources, state_key(file_name), entry, search)
            if found is None:
                search.tried.append((f"restore point {point.sequence}",
                                     f"no store holds the bytes of {entry.backup}"))
                break
            chosen[file_name] = found
        else:
            return point, chosen
    return None


def point_stamp(point: Point) -> str:
    """A point's time as a backup's timestamp part, for --timestamp prefixes."""
    return f"{point.time:%Y-%m-%d_%H-%M-%S}.{point.time:%f}Z"


def _nothing_found(store: Store) -> str:
    # A relative folder (BackupManager() in the one-liners) is read from the working
    # directory: name the folder looked in, so a person sees they ran from elsewhere.
    folder = store.path("")
    if folder is None:
        return "no backups"
    if not folder.is_dir():
        return f"no backups found: looked in {os.path.abspath(folder)}, which does not exist"
    return f"no backups found in {os.path.abspath(folder)}"


def _candidates(backups: BackupSet, rank: int, location: str, store: Store,
                prefix: str | None) -> Iterator[tuple]:
    """(order, rank, location, store, backup) newest first, for heapq.merge: order
    sorts new-style before legacy, each newest first."""
    for backup, _complete in backups:
        if not prefix or backup.stamp.startswith(prefix):
            yield (not backup.stamp.endswith("Z"), _Desc(backup.stamp)), rank, location, \
                store, backup


class _Desc(str):
    """A string that sorts backwards, so heapq.merge takes the newest stamp first."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


