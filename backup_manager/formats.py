"""File formats: backup names and their stamps, checksum sidecars.

A backup of ``state/last_rebalance.json`` taken at 10:30:00.123456 UTC is
``last_rebalance_2026-02-17_10-30-00.123456Z.json``; its sidecar is that name
plus ``.sha256`` and holds ``{hex}  {name}\\n`` as ``sha256sum`` writes it.
Names written by the original module (``last_rebalance_2026-02-17_10-30-00.json``,
local time, whole seconds) are read as well.
"""

from __future__ import annotations

import re
import sys
from collections import namedtuple
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

SIDECAR_SUFFIX = ".sha256"
TEMP_MARK = ".tmp-"
CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the clock a backup's stamp may be before it is a clock problem."""
MAX_SIDECAR = 4096

# Patterns as text: re compiles and caches each on first use, so a cron run pays only
# for those it needs. Ranges are checked here; days 29-31 need the calendar too.
# ASCII digits only: \d would accept any script's digits, and such a planted name
# must never be read as a backup.
STAMP_SHAPE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}(?:\.[0-9]{6}Z)?"
"""What a timestamp part looks like; the calendar is checked apart (backup_from_stamp)."""
_STAMP = (r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])_(?:[01][0-9]|2[0-3])"
          r"-[0-5][0-9]-[0-5][0-9](?:\.[0-9]{6}Z)?")
_ANY_BACKUP = rf"(?P<stem>.+?)_(?P<stamp>{STAMP_SHAPE})(?P<suffix>(?:\.[^.]+)?)"
# Comment lines after the checksum (a signed copy's MAC, seal.py) are skipped, as
# `sha256sum -c` skips them.
_SIDECAR_LINE = r"([0-9a-fA-F]{64}) [ *]([^\n]+)(?:\n#[^\n]*)*\n?"
_TIMESTAMP_PREFIX = r"[0-9_.Z-]+"


class BackupName:
    """A parsed backup name: the state file's stem and suffix, and the timestamp part.

    `when`, the aware UTC instant the name denotes, is computed on first use, so
    listing thousands of backups stays cheap.
    """

    __slots__ = ("name", "stem", "suffix", "stamp", "_when")

    def __init__(self, name: str, stem: str, suffix: str, stamp: str,
                 when: datetime | None = None):
        self.name, self.stem, self.suffix, self.stamp = name, stem, suffix, stamp
        self._when = when

    @property
    def legacy(self) -> bool:
        return not self.stamp.endswith("Z")

    @property
    def when(self) -> datetime:
        if self._when is None:
            self._when = stamp_time(self.stamp)
        return self._when

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BackupName) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"BackupName({self.name!r})"


def format_backup_name(stem: str, suffix: str, when: datetime) -> str:
    when = when.astimezone(UTC)
    return f"{stem}_{when:%Y-%m-%d_%H-%M-%S}.{when:%f}Z{suffix}"


def stamp_time(stamp: str) -> datetime:
    """The UTC instant of a timestamp part; legacy stamps are local time. ValueError if bad."""
    iso = f"{stamp[:10]}T{stamp[11:13]}:{stamp[14:16]}:{stamp[17:19]}"
    if stamp.endswith("Z"):
        return datetime.fromisoformat(f"{iso}.{stamp[20:26]}+00:00")
    return datetime.fromisoformat(iso).astimezone().astimezone(UTC)


def parse_backup_name(name: str, stem: str, suffix: str) -> BackupName | None:
    """Parse `name` as a backup of exactly `{stem}{suffix}`; None for anything else.

    Anchored on the whole stem, so ``a``'s backups never include ``a_b``'s.
    """
    prefix = stem + "_"
    if not name.startswith(prefix) or not name.endswith(suffix):
        return None
    return backup_from_stamp(stem, suffix, name[len(prefix) : len(name) - len(suffix)])


def backup_from_stamp(stem: str, suffix: str, stamp: str) -> BackupName | None:
    """The backup of `{stem}{suffix}` taken at `stamp`; None if no such instant exists."""
    if not re.fullmatch(_STAMP, stamp):
        return None
    parsed = BackupName(f"{stem}_{stamp}{suffix}", stem, suffix, stamp)
    if parsed.legacy or stamp[8:10] > "28":
        try:
            _ = parsed.when  # local time must convert; Feb 30 must not pass
        except ValueError:
            return None
    return parsed


def parse_any_backup_name(name: str) -> BackupName | None:
    """Parse a backup name of any state file (used to find every stem in a folder)."""
    if name.endswith(SIDECAR_SUFFIX) or TEMP_MARK in name:
        return None
    m = re.fullmatch(_ANY_BACKUP, name)
    if not m:
        return None
    return parse_backup_name(name, m["stem"], m["suffix"])


class StateKey(namedtuple("StateKey", "stem suffix")):
    """What a state file's backups are named by: `last_rebalance` and `.json`."""

    __slots__ = ()

    @property
    def file_name(self) -> str:
        return self.stem + self.suffix


def state_key(path: str | Path) -> StateKey:
    """The key of a state file path; ValueError for a path that names no file."""
    p = Path(path)
    if not p.name or p.name in (".", "..") or str(path).endswith("/"):
        raise ValueError(f"not a state file path: {str(path)!r}")
    if p.name.endswith(SIDECAR_SUFFIX):
        raise ValueError(f"state file name must not end in {SIDECAR_SUFFIX}: {p.name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in p.name):
        raise ValueError(f"state file name has a control character: {p.name!r}; its "
                         "backups could not be listed or restored: rename the file")
    if TEMP_MARK in p.name:
        raise ValueError(f"state file name must not contain {TEMP_MARK!r}: {p.name!r}")
    return StateKey(p.stem, p.suffix)


def check_timestamp_prefix(prefix: str | None) -> str | None:
    """Accept a prefix of a backup's timestamp part; anything else is a ValueError."""
    if prefix is None:
        return None
    if not isinstance(prefix, str) or not re.fullmatch(_TIMESTAMP_PREFIX, prefix):
        raise ValueError(
            f"backup_timestamp {prefix!r} is not a timestamp prefix: use digits, '-', '_', "
            "'.' and 'Z' only, e.g. '2026-02-17_10-30-00' or '2026-02-17'"
        )
    return prefix


def _builtin_sha256() -> Callable[[bytes], object] | None:
    # CPython's own SHA-256 loads in a fraction of a millisecond; hashlib loads
    # OpenSSL, which costs a cron run ~5 ms. OpenSSL is several times faster per
    # byte, so large data still goes to hashlib.
    try:
        return __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256").sha256
    except ImportError:  # another Python, or a build without it
        return None


_small_sha256 = _builtin_sha256()
_SMALL = 256 * 1024


def sha256_hex(data: bytes) -> str:
    if _small_sha256 is not None and len(data) <= _SMALL:
        return _small_sha256(data).hexdigest()
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sidecar_text(digest: str, name: str) -> bytes:
    return f"{digest}  {name}\n".encode()


def parse_sidecar(data: bytes, name: str) -> str:
    """The hex digest a sidecar records for backup `name`; ValueError when malformed."""
    if len(data) > MAX_SIDECAR:
        raise ValueError(f"sidecar is larger than {MAX_SIDECAR} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("sidecar is not text") from None
    m = re.fullmatch(_SIDECAR_LINE, text)
    if not m:
        raise ValueError("sidecar is empty or not in 'sha256  name' form")
    if m[2] != name:
        raise ValueError(f"sidecar names {m[2]!r}, not {name!r}")
    return m[1].lower()
