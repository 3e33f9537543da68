"""The writer id: which machine (deployment) wrote a restore point or placed an order.

Made once, at the first use, as twelve random hex digits in ``backups/.writer``.
It is not a backup: it is never copied to a mirror or S3 and never restored, so
a machine rebuilt from copies gets an id of its own. A cloned disk keeps the
clone's id; the history's chain tells two such writers apart (a fork).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .atomic import fsync_dir, publish_new, unlink_quietly, write_temp
from .errors import StorageError, storage_error

WRITER_FILE = ".writer"
_WRITER_ID = r"[0-9a-f]{12}"


def writer_id(backup_dir: str | Path, *, durable: bool = True) -> str:
    """This machine's writer id, made (exclusively, durably) if there is none yet.

    Raises StorageError when the file cannot be read or made, or holds no id.
    """
    folder = Path(backup_dir)
    path = folder / WRITER_FILE
    found = _read(path)
    if found is not None:
        return found
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = write_temp(folder, WRITER_FILE, (os.urandom(6).hex() + "\n").encode(),
                         durable=durable)
        try:
            publish_new(tmp, os.fspath(path))
        except FileExistsError:
            unlink_quietly(tmp)  # another process made it first: its id is ours
        if durable:
            fsync_dir(folder)
    except OSError as exc:
        raise storage_error(exc, f"cannot make the writer id {path}") from None
    made = _read(path)
    if made is None:
        raise StorageError(f"the writer id {path} vanished while it was made")
    return made


def known_writer_id(backup_dir: str | Path) -> str | None:
    """This machine's writer id, or None when it never wrote (nothing is made)."""
    return _read(Path(backup_dir) / WRITER_FILE)


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"cannot read the writer id {path}") from None
    if not re.fullmatch(_WRITER_ID, text):
        raise StorageError(f"{path} does not hold a writer id (twelve hex digits): "
                           f"{text[:40]!r}; move it aside and run again to make a new one")
    return text
