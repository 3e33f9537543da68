"""Object Lock: copies in S3 that no key deletes before a date (backup.s3_object_lock),
and what a bucket's versioning and Object Lock leave a leaked key able to do.

S3 keeps a locked version until its retain-until date: GOVERNANCE lets only a key
allowed s3:BypassGovernanceRetention delete it sooner, COMPLIANCE no one. Locking
needs a bucket made with Object Lock (which turns versioning on for good).
"""

from __future__ import annotations

from collections import namedtuple
from datetime import timedelta
from enum import StrEnum

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_LOCK_DAYS = 36_500
"""A hundred years, as for retention: longer is no setting a person means."""


class ObjectLock(namedtuple("ObjectLock", "mode days")):
    """What config asks: every object put locked in `mode` for `days` from its PUT."""

    __slots__ = ()

    def put_parameters(self, now: datetime) -> dict[str, Any]:
        """The PutObject parameters that lock one object, `now` being UTC."""
        return {"ObjectLockMode": self.mode,
                "ObjectLockRetainUntilDate": now + timedelta(days=self.days)}

    def __str__(self) -> str:
        return f"{self.mode} for {self.days} day(s)"


class Exposure(StrEnum):
    """What a leaked key (one that may write the bucket) can do to the copies in it."""

    ERASE = "delete-or-overwrite-every-copy"
    ERASE_VERSIONS = "delete-every-version"
    BYPASS_ONLY = "delete-only-with-governance-bypass"
    NOTHING = "delete-nothing-before-retain-until"
    UNKNOWN = "unknown"


class Protection(namedtuple("Protection", "versioning locking retention asked unread")):
    """A bucket's protection as read from it: `versioning` ('Enabled', 'Suspended',
    'off', None: not read), `locking` (Object Lock on: True/False, None: not read),
    `retention` (its default: (mode, days, years) or None), `asked` (the ObjectLock
    config asks for, or None), `unread` (why something could not be read, or None)."""

    __slots__ = ()

    @property
    def refused(self) -> bool:
        """Config asks for a lock the bucket cannot give (its PUTs are refused)."""
        return self.asked is not None and self.locking is False

    @property
    def lock_mode(self) -> str | None:
        """The mode the copies this machine puts are locked in; None: not locked."""
        if not self.locking:
            return None
        if self.asked is not None:
            return self.asked.mode
        return self.retention[0] if self.retention else None

    @property
    def exposure(self) -> Exposure:
        # Object Lock needs versioning on: with it off or suspended there is no lock.
        if self.locking is None and self.versioning in (None, "Enabled"):
            return Exposure.UNKNOWN
        mode = self.lock_mode
        if mode == "COMPLIANCE":
            return Exposure.NOTHING
        if mode == "GOVERNANCE":
            return Exposure.BYPASS_ONLY
        if self.versioning == "Enabled":
            return Exposure.ERASE_VERSIONS
        return Exposure.UNKNOWN if self.versioning is None else Exposure.ERASE

    def as_facts(self) -> dict[str, Any]:
        """The facts for status and verify --json."""
        mode, days, years = self.retention or (None, None, None)
        return {"versioning": self.versioning, "object_lock": self.locking,
                "default_retention": {"mode": mode, "days": days, "years": years}
                if self.retention else None,
                "asked": {"mode": self.asked.mode, "days": self.asked.days}
                if self.asked else None,
                "unread": self.unread, "leaked_key_can": str(self.exposure),
                "lock_refused": self.refused}


LEAKED_KEY = {
    Exposure.ERASE: "a leaked key can delete or overwrite every copy (no versioning, no "
                    "Object Lock)",
    Exposure.ERASE_VERSIONS: "a leaked key allowed s3:DeleteObjectVersion can delete every "
                             "copy; plain deletes and overwrites leave older versions",
    Exposure.BYPASS_ONLY: "a leaked key cannot delete a locked copy before its retain-until "
                          "date unless it is allowed s3:BypassGovernanceRetention",
    Exposure.NOTHING: "no key, not even the account's root user, can delete a locked copy "
                      "before its retain-until date",
    Exposure.UNKNOWN: "what a leaked key can do is unknown until the bucket's settings "
                      "can be read",
}


def protection_lines(facts: dict[str, Any]) -> list[str]:
    """A bucket's protection facts (Protection.as_facts) for people: one line of
    settings, one of what a leaked key can do."""
    versioning = facts["versioning"] or "not read"
    if facts["object_lock"] is None:
        lock = "not read"
    elif not facts["object_lock"]:
        lock = "off"
    else:
        lock = "on, " + _retention_words(facts["default_retention"])
    asked = facts["asked"]
    wanted = f"{asked['mode']} for {asked['days']} day(s)" if asked else "none"
    lines = [f"versioning {versioning}; Object Lock {lock}; backup.s3_object_lock asks: "
             f"{wanted}"]
    if facts["unread"]:
        lines.append(f"cannot read all of it: {facts['unread']}")
    lines.append(LEAKED_KEY[Exposure(facts["leaked_key_can"])])
    return lines


def _retention_words(retention: dict[str, Any] | None) -> str:
    if not retention:
        return "no default retention"
    span = f"{retention['days']} day(s)" if retention["days"] else \
        f"{retention['years']} year(s)"
    return f"default retention {retention['mode']} {span}"


def refused_text(label: str, asked: ObjectLock) -> str:
    """Why a bucket refuses what config asks, and what fixes it."""
    return (f"{label}: backup.s3_object_lock asks for {asked}, but the bucket has no Object "
            "Lock: every upload is refused and waits in the outbox (nothing is uploaded "
            "unlocked)")
