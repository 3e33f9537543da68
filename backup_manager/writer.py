"""The writer id: which machine (deployment) wrote a restore point or placed an order.

Made once, at the first use, as twelve random hex digits in ``backups/.writer``,
with the folder it was made for (its path and inode). It is not a backup: it is
never copied to a mirror or S3 and never restored, so a machine rebuilt from
copies gets an id of its own. A copy of the whole installation elsewhere (a
second checkout made with cp -a or rsync, a disk copied into another path) carries
the file, but not the folder it names: the copy is another writer, and gets an id
of its own the first time it writes (the old file is kept beside it). So does an
installation moved to another path. A copy in the same place (a disk image, a
folder restored where it was) may keep both; the history's chain tells two such
writers apart (a fork).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import log
from .atomic import atomic_write, fsync_dir, publish_new, unlink_quietly, write_temp
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
    if found is not None and found[1] == "here":
        return found[0]
    try:
        if found is not None and found[1] == "elsewhere":
            _set_aside(path, found[0])
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if found is not None and found[1] == "unrecorded":
            # An id from before folders were recorded: this folder's, recorded now.
            atomic_write(path, f"{found[0]}\n{_made_for(folder)}\n".encode(),
                         durable=durable)
            return found[0]
        record = f"{os.urandom(6).hex()}\n{_made_for(folder)}\n"
        tmp = write_temp(folder, WRITER_FILE, record.encode(), durable=durable)
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
    return made[0]


def known_writer_id(backup_dir: str | Path) -> str | None:
    """This machine's writer id, or None when it never wrote here (nothing is made): no
    file, or one copied from another folder."""
    found = _read(Path(backup_dir) / WRITER_FILE)
    return found[0] if found is not None and found[1] != "elsewhere" else None


def _made_for(folder: Path) -> str:
    """The folder an id belongs to: its path (a copy elsewhere, or the installation
    moved, has another) and inode (a copy made in its place often has another)."""
    return f"{os.stat(folder).st_ino} {os.path.realpath(folder)}"


def _set_aside(path: Path, old: str) -> None:
    """A copied id is kept (under its own name) for whoever looks, never used here."""
    again = _read(path)
    if again is None or again[1] != "elsewhere":
        return  # another process set it aside (and may have made this folder's) first
    try:
        os.rename(path, path.with_name(f"{WRITER_FILE}.copied-{old}"))
    except FileNotFoundError:
        return  # another process set it aside first
    log.warning("%s was made for another folder (a copy of this installation): this "
                "one becomes a writer of its own", path)


def _read(path: Path) -> tuple[str, str] | None:
    """(the id, made for: "here", "elsewhere", or "unrecorded" for an id from before
    folders were recorded); None when there is no file."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"cannot read the writer id {path}") from None
    text = lines[0].strip() if lines else ""
    if not re.fullmatch(_WRITER_ID, text):
        raise StorageError(f"{path} does not hold a writer id (twelve hex digits): "
                           f"{text[:40]!r}; move it aside and run again to make a new one")
    if len(lines) < 2:
        return text, "unrecorded"
    return text, "here" if lines[1].strip() == _made_for(path.parent) else "elsewhere"
