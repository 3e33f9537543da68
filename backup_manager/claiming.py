"""What BackupManager does to claim a restore point before orders: the claim, made
exclusively in every copy target first (fencing another writer), what holds a number
it cannot take, and the check before each order that no other writer moved on."""

from __future__ import annotations

from collections.abc import Mapping

from . import log
from .errors import (
    BackupError,
    IntentNotCommitted,
    StoreUnreachable,
    UnfencedClaim,
    UnfinishedClaim,
    UploadConflict,
    WriterConflict,
)
from .formats import MAX_SIDECAR, SIDECAR_SUFFIX, sha256_hex
from .history import finish_abandoned_claim
from .points import MAX_POINT_BYTES, decode_point, point_name
from .seal import signed, unsealed

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .points import Point
    from .store import Store



class Claiming:
    """BackupManager's claims, on the parts BackupManager.__init__ sets up (folder,
    copier, writer, sources)."""

    def claim_point(self, kind: str, reason: str = "", *,
                    details: Mapping[str, Any] | None = None,
                    require_fence: bool | None = None) -> tuple[Point, dict[str, str]]:
        """Commit a point (an intent before orders) that is first created, exclusively,
        in every copy target that answers, then here: two writers can never both hold
        its number. Returns the point and the targets that could not be asked (target
        id -> why): they are owed it as usual. Raises WriterConflict when a target holds
        another point under the number (another writer moved: nothing may go ahead),
        and, with `require_fence`, when a target could not be asked."""
        unfenced: dict[str, str] = {}
        if require_fence is None:
            require_fence = self.require_fence

        def publish(point: Point, data: bytes) -> list[str]:
            from .formats import sidecar_text
            reached = []
            for target_id, target in self.copier.targets.items():
                if target_id in self.copier.unreachable:
                    unfenced[target_id] = self.copier.unreachable[target_id]
                    continue
                try:
                    target.prepare()
                    target.write(point.name, data)
                    target.write(point.name + SIDECAR_SUFFIX,
                                 sidecar_text(sha256_hex(data), point.name))
                except UploadConflict:
                    raise self._taken(target, point.sequence) from None
                except StoreUnreachable as exc:
                    self.copier.note_unreachable(target_id, exc)
                    unfenced[target_id] = str(exc)
                    continue
                reached.append(target_id)
            if unfenced and require_fence:
                raise UnfencedClaim(
                    "no claim without every store (backup.require_fence): " + "; ".join(
                        f"{self.copier.targets[t].label}: {why}" for t, why in unfenced.items()))
            return reached

        try:
            for _ in range(3):
                try:
                    with self.folder.locked():
                        point = self._commit(kind, reason, details=details, force=True,
                                             publish=publish)
                    break
                except _OwnClaimCutInTwo as cut:
                    # This writer's own claim, killed before its sidecar (so before any
                    # order): its number is passed over, and the point stays as it is.
                    log.warning("%s; claiming the next number", cut)
                    self.seen_sequence = max(self.seen_sequence, cut.sequence)
            else:
                raise WriterConflict("three numbers in a row held by claims cut in two")
        except WriterConflict:
            raise  # the history moved on elsewhere: no claim, and nothing to fix here
        except (BackupError, OSError) as exc:
            raise IntentNotCommitted(f"the intent before orders could not be committed in "
                                     f"{self.backup_dir} ({exc}): no order was placed; fix "
                                     "the backups folder and run again") from exc
        self.copier.send_owed()
        return point, unfenced

    def _taken(self, target: Store, sequence: int) -> WriterConflict:
        """Why `target` refused number `sequence` to this claim: another writer's point,
        or a claim cut in two (its sidecar never written). That one is finished now if
        it is this writer's own or past its lease, so the next run settles it; never in a
        store of signed copies, which reads no point without its signature."""
        name = point_name(sequence)
        try:
            whole = target.read(name + SIDECAR_SUFFIX, max_bytes=MAX_SIDECAR) is not None
        except (BackupError, OSError):
            whole = True
        if whole:
            return WriterConflict(f"{target.label} already holds another restore point "
                                  f"{sequence}: another writer committed it first")
        if _raw_writer(target, name) == self.writer:
            return _OwnClaimCutInTwo(sequence, f"{target.label} holds this writer's own "
                                     f"{name} without its sidecar (a run killed there)")
        try:
            finished = finish_abandoned_claim(target, sequence, self.writer,
                                              self.folder.clock())
        except (BackupError, OSError):  # a signed store reads no point without its signature
            finished = None
        if finished is not None:
            return UnfinishedClaim(
                f"{target.label} held an unfinished claim of restore point {sequence} (writer "
                f"{finished.writer}, {finished.time:%Y-%m-%d %H:%M:%S} UTC): its run "
                "stopped between the point and its sidecar, before any order; it is "
                "finished now, and the next run settles it")
        return WriterConflict(
            f"{target.label} holds {name} without its sidecar: a claim cut in two, or one "
            "another machine is writing now" + (" (its signature is missing, so it proves "
                                               "nothing)" if signed(target) else "")
            + f"; if no machine is placing orders now, delete {target.label}/{name} and "
            "run again")

    def moved_past(self, sequence: int) -> str | None:
        """Why the orders of intent `sequence` must stop: a store holds another writer's
        point after it (the history moved on while this run placed them), or, with
        backup.require_fence, a store cannot be asked; None when no store says so."""
        name = point_name(sequence + 1)
        for location, store in self.sources():
            if location in self.copier.unreachable:
                if self.require_fence:
                    return f"{store.label} cannot be asked (backup.require_fence)"
                continue  # it failed in this run: each order must not wait for it again
            try:
                if store.written_at(name) is None:
                    continue
                data = store.read(name, max_bytes=MAX_POINT_BYTES)
                if data is not None and decode_point(data, name).writer != self.writer:
                    return (f"another machine committed restore point {sequence + 1} in "
                            f"{store.label}: it took the intent as abandoned")
            except StoreUnreachable as exc:
                if location in self.copier.targets:
                    self.copier.note_unreachable(location, exc)
                if self.require_fence:
                    return f"{store.label} cannot be asked ({exc}; backup.require_fence)"
            except (BackupError, OSError):
                continue  # damaged or not a point: no writer's claim
        return None


class _OwnClaimCutInTwo(WriterConflict):
    """This writer's claim of `sequence` was cut in two: the number is passed over."""

    def __init__(self, sequence: int, text: str):
        super().__init__(text)
        self.sequence = sequence


def _raw_writer(store: Store, name: str) -> str | None:
    """The writer a point without its sidecar names, read as it lies (a signed store
    reads nothing without a signature); None when it names none that can be read."""
    try:
        data = unsealed(store).read(name, max_bytes=MAX_POINT_BYTES)
        return decode_point(data, name).writer if data is not None else None
    except (BackupError, OSError):
        return None
