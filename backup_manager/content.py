"""Content rules: what a state file may hold (valid JSON objects; the rules a host
registers per file name), and the moment a state file's content records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .errors import InvalidStateError

Validator = Callable[[object], None]
"""Called with the parsed JSON of a state file; raises InvalidStateError to refuse it."""

_VALIDATORS: dict[str, Validator] = {}


def register_validator(file_name: str, validator: Validator) -> None:
    """Add a content rule for every state file called `file_name` (e.g. 'x.json')."""
    _VALIDATORS[file_name] = validator


def parse_iso_timestamp(value: object) -> datetime:
    """An aware UTC datetime from ISO-8601 text; a naive value is read as local time."""
    if not isinstance(value, str):
        raise InvalidStateError(f"timestamp must be an ISO-8601 string, got {value!r}")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidStateError(f"timestamp {value!r} is not ISO-8601") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.astimezone(UTC)


def _check_last_rebalance(doc: object) -> None:
    # A timestamp ahead of the clock is valid content: the clock may be the wrong one
    # (a naive time written in a zone ahead of this one). Trading on it is the host's call.
    parse_iso_timestamp(doc.get("timestamp"))  # type: ignore[union-attr]


register_validator("last_rebalance.json", _check_last_rebalance)

ContentTime = Callable[[dict], datetime]
"""Called with the parsed JSON of a valid state file: the moment its content records."""

_CONTENT_TIMES: dict[str, ContentTime] = {
    "last_rebalance.json": lambda doc: parse_iso_timestamp(doc["timestamp"]),
}


def register_content_time(file_name: str, when: ContentTime) -> None:
    """Say which moment a state file's content records (last_rebalance.json: its
    timestamp). Recovery takes a live file whose moment is before the newest restore
    point's as older state (a rollback), and one ahead of the clock as a clock doubt."""
    _CONTENT_TIMES[file_name] = when


def content_time(file_name: str, data: bytes) -> datetime | None:
    """The moment the valid content `data` of `file_name` records; None when no rule
    says, or the content does not tell."""
    rule = _CONTENT_TIMES.get(file_name)
    if rule is None:
        return None
    import json

    try:
        return rule(json.loads(data))
    except (ValueError, KeyError, TypeError, InvalidStateError):
        return None


def is_valid_content(file_name: str, data: bytes) -> bool:
    try:
        validate_content(file_name, data)
    except InvalidStateError:
        return False
    return True


def validate_content(file_name: str, data: bytes) -> None:
    """Refuse content a state file must never hold. Non-JSON files are not inspected.

    A `.json` state file must hold what `json.loads` reads as an object, and pass
    the content rule registered for its name, if any.
    """
    if not file_name.endswith(".json"):
        return
    import json  # here, not at the top: `import backup_manager` does not load json

    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidStateError(f"{file_name}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidStateError(
            f"{file_name}: JSON must be an object, got {type(doc).__name__}")
    rule = _VALIDATORS.get(file_name)
    if rule is not None:
        try:
            rule(doc)
        except InvalidStateError as exc:
            raise InvalidStateError(f"{file_name}: {exc}") from None
