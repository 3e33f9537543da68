"""Keys: the secrets that sign (and may encrypt) the copies in mirrors and S3.

A key file holds one key a line, oldest first: `dalio-key-1 ID SECRET`, the secret
32 random bytes in base64, the id the first 12 hex digits of the secret's SHA-256
under a label (so a damaged line is found, and a copy names the key that signed it
without telling anything about it). The newest key signs; every key listed verifies,
so copies signed before a rotation still restore. `backup.key_env` names an
environment variable holding the same lines instead (on one line, ';' separates them).
The key itself never goes in config.yaml.
"""

from __future__ import annotations

import os
import re

from .errors import KeyUnavailable

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from pathlib import Path

KEY_LINE_TAG = "dalio-key-1"
_ID = re.compile(r"[0-9a-f]{12}")
FILE_HEADER = ("# DalioLite backup keys (backup.key_file), oldest first: the newest signs.\n"
               "# Keep a copy away from this machine: without it the copies in mirrors and\n"
               "# S3 cannot be checked or decrypted, and restore refuses them.\n")


class Key(tuple):
    """(id, secret): one key of a key file."""

    __slots__ = ()

    def __new__(cls, key_id: str, secret: bytes) -> Key:
        return super().__new__(cls, (key_id, secret))

    @property
    def id(self) -> str:
        return self[0]

    @property
    def secret(self) -> bytes:
        return self[1]


def key_id(secret: bytes) -> str:
    """The id a secret is known by: it names the key without revealing it."""
    from .formats import sha256_hex
    return sha256_hex(b"dalio key id\0" + secret)[:12]


class Keyring:
    """The keys of one source, oldest first; `source` says where they came from."""

    def __init__(self, keys: list[Key], source: str):
        self.keys, self.source = list(keys), source

    @property
    def signing(self) -> Key:
        """The newest key: it signs every new copy."""
        return self.keys[-1]

    def get(self, wanted: str) -> Key | None:
        return next((k for k in self.keys if k.id == wanted), None)


class KeySource:
    """Where the keys are: a key file, or an environment variable. Read on first use."""

    def __init__(self, file: Path | None = None, env: str | None = None):
        if (file is None) == (env is None):
            raise ValueError("a key source is a key file or an environment variable")
        self.file, self.env = file, env
        self._ring: Keyring | None = None

    @property
    def label(self) -> str:
        return f"key file {self.file}" if self.file is not None else \
            f"environment variable {self.env}"

    def keyring(self) -> Keyring:
        """The keys; KeyUnavailable names the source and what is wrong with it."""
        if self._ring is None:
            self._ring = Keyring(parse_keys(self._text(), self.label), self.label)
        return self._ring

    def _text(self) -> str:
        if self.env is not None:
            text = os.environ.get(self.env)
            if not text:
                raise KeyUnavailable(f"the {self.label} (backup.key_env) is not set: "
                                     "signed copies cannot be made or checked")
            return text if "\n" in text else text.replace(";", "\n")
        try:
            return self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyUnavailable(f"the {self.label} (backup.key_file) does not exist: signed "
                                 "copies cannot be made or checked; put the key file back "
                                 "from where you stored it (python -m backup_manager key init "
                                 "makes a new one, which cannot open older copies)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyUnavailable(f"cannot read the {self.label}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None


def parse_keys(text: str, label: str) -> list[Key]:
    """The keys in a key file's text, oldest first; KeyUnavailable names the bad line."""
    import base64

    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] != KEY_LINE_TAG or not _ID.fullmatch(parts[1]):
            raise KeyUnavailable(f"the {label}, line {number}, is not a key "
                                 f"('{KEY_LINE_TAG} ID SECRET')")
        try:
            secret = base64.b64decode(parts[2], validate=True)
        except ValueError:
            secret = b""
        if len(secret) != 32 or key_id(secret) != parts[1]:
            raise KeyUnavailable(f"the {label}, line {number}: key {parts[1]} does not match "
                                 "its secret (the line is damaged or was mistyped)")
        keys.append(Key(parts[1], secret))
    if not keys:
        raise KeyUnavailable(f"the {label} holds no key")
    return keys


def new_key_line() -> tuple[str, str]:
    """(a new key's line, its id)."""
    import base64

    secret = os.urandom(32)
    return f"{KEY_LINE_TAG} {key_id(secret)} {base64.b64encode(secret).decode()}\n", \
        key_id(secret)


def init_key_file(path: Path) -> str:
    """Create a key file holding one new key, readable by its owner only (0600), durably;
    return the key's id. An existing file is never overwritten (FileExistsError)."""
    from .atomic import fsync_dir, sync_to_disk

    line, new_id = new_key_line()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, (FILE_HEADER + line).encode())
        sync_to_disk(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    fsync_dir(path.parent)
    return new_id


def add_key(path: Path) -> str:
    """Add a new key to an existing key file (it signs from now on; the older keys stay to
    verify older copies), atomically and 0600; return its id."""
    from .atomic import atomic_write

    text = path.read_text(encoding="utf-8")
    parse_keys(text, f"key file {path}")
    line, new_id = new_key_line()
    atomic_write(path, (text if text.endswith("\n") else text + "\n").encode() + line.encode(),
                 mode=0o600)
    return new_id
