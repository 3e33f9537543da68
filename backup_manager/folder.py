"""backups/: the local store, its inter-process lock, the outbox of copies owed,
and the sub-folders where restore keeps what it replaces (corrupt/, replaced/:
never read by restore)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import file_lock
from .errors import LockTimeout, storage_error
from .local import LocalStore
from .outbox import Outbox
from .store import MAX_STATE_BYTES

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from datetime import datetime

    from .formats import StateKey

LOCK_FILE = ".lock"
RECOVERY_RECORD = ".recovery.json"
"""What the last start-up decided that `status` must show: its refusal, unseen stores."""
OUTBOX_DIR = ".outbox"
CORRUPT_DIR = "corrupt"
REPLACED_DIR = "replaced"


class BackupsFolder:
    """The backups folder of one site. Nothing touches the disk until it is used."""

    def __init__(self, root: str | Path, *, durable: bool, lock_timeout: float,
                 clock: Callable[[], datetime], max_bytes: int = MAX_STATE_BYTES):
        self.root = Path(root)
        self.durable = durable
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.store = LocalStore(self.root, durable=durable, max_bytes=max_bytes)
        self.outbox = Outbox(self.root / OUTBOX_DIR, durable=durable)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (created with the folder if missing)."""
        try:
            self.store.ensure()
            if not self.root.is_dir():
                raise NotADirectoryError(20, "not a folder", str(self.root))
            lock = file_lock(self.root / LOCK_FILE, self.lock_timeout, "backups folder lock")
            lock.__enter__()
        except LockTimeout as exc:
            raise LockTimeout(f"{exc} (backup.lock_timeout_seconds sets how long to "
                              f"wait)") from None
        except OSError as exc:
            raise storage_error(exc, f"cannot use backups folder {self.root}") from None
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def recovery_record(self) -> dict | None:
        """What the last start-up recorded (its refusal, stores it could not see); None
        when it recorded nothing (all was well) or the record cannot be read."""
        import json

        from .atomic import read_state_file
        try:
            doc = json.loads(read_state_file(self.root / RECOVERY_RECORD)[0])
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def record_recovery(self, doc: dict | None) -> None:
        """Replace the start-up record (None: remove it). Raises OSError."""
        import json

        from .atomic import atomic_write, unlink_quietly
        path = self.root / RECOVERY_RECORD
        if doc is None:
            unlink_quietly(str(path))
            return
        self.store.ensure()
        atomic_write(path, json.dumps(doc, indent=1).encode(), durable=self.durable)

    def set_aside(self, sub_folder: str, names: list[str]) -> list[str]:
        """Move objects (each with its sidecar) into a sub-folder restore never reads,
        durably; return where they went, relative to the backups folder."""
        import os

        from .atomic import fsync_dir
        aside = self.root / sub_folder
        aside.mkdir(mode=0o700, exist_ok=True)
        moved = []
        for name in names:
            for part in (name + ".sha256", name):  # the commit marker first, as in prune
                if (self.root / part).exists():
                    os.replace(self.root / part, aside / part)
                    moved.append(f"{sub_folder}/{part}")
        if self.durable:
            fsync_dir(aside)
            fsync_dir(self.root)
        return moved

    def keep_aside(self, sub_folder: str, key: StateKey, data: bytes, mode: int) -> str:
        """Keep `data` as a backup in a sub-folder that restore never reads from;
        return its name relative to the backups folder."""
        aside = LocalStore(self.root / sub_folder, durable=self.durable)
        aside.ensure()
        return f"{sub_folder}/{aside.create_backup(*key, data, mode, self.clock())}"
