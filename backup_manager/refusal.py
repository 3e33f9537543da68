"""Why the host must not trade (a Refusal: its kind, headline, reasons and the commands
that fix it), and what the host knows (HostFacts) for the recovery rules to use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from .errors import StateUnrecoverableError
from .restore import Search

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any


class RefusalKind(StrEnum):
    """Why the host must not trade."""

    LOST = "lost"                  # state existed and nothing valid is left
    DAMAGED = "damaged"            # the newest point's bytes are held by no store
    UNSEEN = "unseen"              # a store that may hold newer state cannot be seen
    ROLLBACK = "rollback"          # live state older than the newest point, not acknowledged
    CLOCK = "clock"                # state records a moment ahead of the clock
    RECORDS = "records"            # the host's records know of newer state
    UNREADABLE = "unreadable"      # a live state file cannot be read
    BACKUPS = "backups folder"     # backups/ cannot be used to install what is lost
    IDENTITY = "identity"          # the history belongs to another broker account
    WRITER = "writer"              # another machine moved the history on
    FORK = "fork"                  # two histories where there must be one
    FENCE = "fence"                # a store could not be checked for a newer writer
    INTENT = "intent"              # an earlier run's orders cannot be settled
    KEY = "key"                    # a newer point is signed with a key this machine lacks


class Refusal(StateUnrecoverableError):
    """The host must not trade: `kind`, a one-sentence `headline`, `reasons` (one
    (state file, why) each) and `commands` that can fix it, in order."""

    def __init__(self, kind: RefusalKind, headline: str, reasons: list[tuple[str, str]],
                 commands: list[str]):
        self.kind, self.headline = kind, headline
        self.reasons, self.commands = list(reasons), list(commands)
        super().__init__(self.text())

    def text(self) -> str:
        lines = [f"refusing to trade: {self.headline}"]
        lines += [f"  {subject}: {why}" for subject, why in self.reasons]
        if self.commands:
            lines.append("To fix, one of:")
            lines += [f"  {n}. {command}" for n, command in enumerate(self.commands, 1)]
        lines.append("Details: the status command, and the log above.")
        return "\n".join(lines)

    def as_record(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "headline": self.headline,
                "reasons": [list(r) for r in self.reasons], "commands": self.commands}


class HostFacts:
    """What the host knows, for the rules to use.

    `records` maps a state file's name to (a moment, why): the host's own records
    say that file existed and recorded at least that moment (None: existed, moment
    unknown). `evidence(path)` is asked about a lost file when no restore point
    knows it. `identity` says whom the state belongs to now (for DalioLite, its
    broker and account): every point records it, and a history recorded under
    another one is refused until the host switches on purpose (`describe` words an
    identity for people). `commands` are the
    host's command lines, by what they do: "run" (its daily check), "accept_fresh",
    "accept_rollback", "accept_identity"; `backup_command` is how to run this
    package's command line.
    """

    def __init__(self, *, records: Mapping[str, tuple[datetime | None, str]] | None = None,
                 evidence: Callable[[Path], str | None] | None = None,
                 identity: Mapping[str, Any] | None = None,
                 describe: Callable[[Any], str] | None = None,
                 commands: Mapping[str, str] | None = None,
                 backup_command: str = "python -m backup_manager",
                 clock: Callable[[], datetime] | None = None):
        self.identity = dict(identity) if identity is not None else None
        self.describe = describe or _identity_text
        self.records = dict(records or {})
        self.evidence = evidence or (lambda path: None)
        self.commands = dict(commands or {})
        self.backup_command = backup_command
        self.clock = clock or (lambda: datetime.now(UTC))

    def command(self, what: str, fallback: str) -> str:
        return self.commands.get(what, fallback)


class Refusals:
    """The reasons to refuse found so far, the first kind found, and the commands."""

    def __init__(self) -> None:
        self.kind: RefusalKind | None = None
        self.reasons: list[tuple[str, str]] = []
        self.commands: list[str] = []

    def add(self, kind: RefusalKind, subject: str, why: str, *commands: str) -> None:
        self.kind = self.kind or kind
        self.reasons.append((subject, why))
        self.commands += [c for c in commands if c not in self.commands]


HEADLINES = {
    RefusalKind.LOST: "state that existed cannot be recovered",
    RefusalKind.DAMAGED: "the newest restore point's state is held by no store",
    RefusalKind.UNSEEN: "a store that may hold newer state cannot be seen",
    RefusalKind.ROLLBACK: "live state is older than the newest restore point",
    RefusalKind.CLOCK: "the state records a moment ahead of this machine's clock",
    RefusalKind.RECORDS: "the only state left is older than the host's own records",
    RefusalKind.UNREADABLE: "a state file cannot be read",
    RefusalKind.BACKUPS: "the backups folder cannot be used to recover lost state",
    RefusalKind.IDENTITY: "this history belongs to another account than the one configured",
    RefusalKind.WRITER: "another machine has moved this history on",
    RefusalKind.FORK: "the history has forked: two machines wrote the same point",
    RefusalKind.FENCE: "a store could not be checked for a newer writer "
                       "(backup.require_fence)",
    RefusalKind.INTENT: "an earlier run's orders cannot be settled",
    RefusalKind.KEY: "a newer restore point is signed with a key this machine does not hold",
}


def _identity_text(identity: Any) -> str:
    if isinstance(identity, Mapping):
        return ", ".join(f"{k} {v}" for k, v in sorted(identity.items()) if v is not None)
    return str(identity)


def rollback_commands(facts: HostFacts, path: Path) -> list[str]:
    return [f"{facts.backup_command} restore {path} --yes  # back to the newest point",
            facts.command("accept_rollback", "(the host's --accept-rollback)")
            + "  # keep the older state on purpose"]


def writer_commands(facts: HostFacts) -> list[str]:
    """The two ways out when another writer moved the history on: adopt it, or keep this
    machine's state on purpose."""
    return [f"{facts.backup_command} restore --all --yes  # adopt the newest point's state",
            facts.command("accept_takeover", "(the host's take-over command)")
            + "  # keep this machine's state: it becomes the newest point"]


def fresh_commands(facts: HostFacts) -> list[str]:
    fresh = facts.commands.get("accept_fresh", "recover(..., accept_fresh=True)")
    return [f"{fresh}  # start over on purpose; damaged backups move to backups/corrupt/"]


def unseen_text(search: Search) -> str:
    return "; ".join(f"{where} cannot be seen ({why})"
                     for where, why in search.unreachable.items())
