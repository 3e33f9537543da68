"""Backup names, sidecars, timestamp prefixes and content rules."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_manager import (
    InvalidStateError,
    formats,
    parse_iso_timestamp,
    register_validator,
    validate_content,
)
from backup_manager.formats import (
    check_timestamp_prefix,
    format_backup_name,
    parse_any_backup_name,
    parse_backup_name,
    parse_sidecar,
    sha256_hex,
    sidecar_text,
    state_key,
)
from tests.helpers import SCALE

WHEN = datetime(2026, 2, 17, 10, 30, 0, 123456, tzinfo=UTC)


def test_name_format_matches_design():
    assert format_backup_name("last_rebalance", ".json", WHEN) == \
        "last_rebalance_2026-02-17_10-30-00.123456Z.json"


def test_name_from_other_zone_is_written_in_utc():
    plus_two = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert format_backup_name("s", ".json", plus_two) == format_backup_name("s", ".json", WHEN)


def test_name_round_trips():
    name = format_backup_name("last_rebalance", ".json", WHEN)
    parsed = parse_backup_name(name, "last_rebalance", ".json")
    assert parsed.when == WHEN and not parsed.legacy


@pytest.mark.parametrize("name", [
    "last_rebalance_attempt_2026-02-17_10-30-00.123456Z.json",
    "last_rebalance_2026-02-17_10-30-00.123456Z.json.sha256",
    "last_rebalance_2026-02-17_10-30-00.123456Z.txt",
    "last_rebalance_2026-13-17_10-30-00.123456Z.json",
    "last_rebalance_2026-02-30_10-30-00.123456Z.json",
    "last_rebalance_2026-02-17_24-30-00.123456Z.json",
    "last_rebalance_2026-02-31_10-30-00.json",
    "last_rebalance_2026-02-17_10-30-00.1234Z.json",
    "last_rebalance_*.json",
    ".last_rebalance_2026-02-17_10-30-00.123456Z.json.tmp-abcd",
])
def test_names_of_other_files_do_not_parse(name):
    assert parse_backup_name(name, "last_rebalance", ".json") is None


def test_legacy_names_are_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        parsed = parse_backup_name("last_rebalance_2026-02-17_10-30-00.json",
                                   "last_rebalance", ".json")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert parsed.legacy
    assert parsed.when == datetime(2026, 2, 17, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("name,stem,suffix", [
    ("a_b_2026-02-17_10-30-00.123456Z.json", "a_b", ".json"),
    ("a_2026-02-17_10-30-00.json", "a", ".json"),
    ("noext_2026-02-17_10-30-00.123456Z", "noext", ""),
    ("my file [1]_2026-02-17_10-30-00.123456Z.yaml", "my file [1]", ".yaml"),
])
def test_any_name_finds_its_stem(name, stem, suffix):
    parsed = parse_any_backup_name(name)
    assert (parsed.stem, parsed.suffix) == (stem, suffix)


@pytest.mark.parametrize("size", [0, 1024, formats._SMALL, formats._SMALL + 1])
def test_sha256_hex_is_sha256_at_every_size(size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_sidecar_is_sha256sum_format():
    text = sidecar_text("ab" * 32, "x.json")
    assert text == f"{'ab' * 32}  x.json\n".encode()
    assert parse_sidecar(text, "x.json") == "ab" * 32


@pytest.mark.parametrize("text,problem", [
    (b"", "empty"),
    (b"abc  x.json\n", "form"),
    (("ab" * 32 + "  y.json\n").encode(), "names 'y.json'"),
    (b"\xff\xfe", "not text"),
])
def test_malformed_sidecars_are_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_sidecar(text, "x.json")


@pytest.mark.parametrize("prefix", ["2026-02-17_10-30-00", "2026-02-17", "2026",
                                    "2026-02-17_10-30-00.1Z"])
def test_timestamp_prefixes_accepted(prefix):
    assert check_timestamp_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["*", "2026-02-1[0-9]", "../x", "a/b", "", "2026?", " 2026",
                                    "2026\x00"])
def test_timestamp_prefixes_refused(prefix):
    with pytest.raises(ValueError, match="not a timestamp prefix"):
        check_timestamp_prefix(prefix)


def test_parsed_backup_names_are_equal_when_their_names_are():
    name = "s_2026-02-17_10-30-00.123456Z.json"
    a, again = parse_backup_name(name, "s", ".json"), parse_any_backup_name(name)
    other = parse_backup_name("s_2026-02-17_10-30-00.123457Z.json", "s", ".json")
    assert a == again and len({a, again, other}) == 2
    assert a != other
    assert a != name, "a name is not its text"


def test_a_refused_timestamp_prefix_says_what_a_prefix_may_hold():
    with pytest.raises(ValueError) as refused:
        check_timestamp_prefix("2026-02-1[0-9]")
    assert str(refused.value) == (
        "backup_timestamp '2026-02-1[0-9]' is not a timestamp prefix: use digits, '-', '_', "
        "'.' and 'Z' only, e.g. '2026-02-17_10-30-00' or '2026-02-17'")


@pytest.mark.parametrize("path", ["state/", "", "x.sha256"])
def test_state_key_refuses_non_files(path):
    with pytest.raises(ValueError):
        state_key(path)


@pytest.mark.parametrize("path,message", [
    ("state/", "not a state file path: 'state/'"),
    ("..", "not a state file path: '..'"),
    ("state/..", "not a state file path: 'state/..'"),
    ("state/x.sha256", "state file name must not end in .sha256: 'x.sha256'"),
    ("state/a.tmp-1.json", "state file name must not contain '.tmp-': 'a.tmp-1.json'"),
    ("state/a\x7fb.json", "state file name has a control character: 'a\\x7fb.json'; its "
                           "backups could not be listed or restored: rename the file"),
])
def test_state_key_refusals_say_what_is_wrong(path, message):
    with pytest.raises(ValueError) as refused:
        state_key(path)
    assert str(refused.value) == message


def test_a_space_is_no_control_character():
    assert state_key("state/last rebalance.json") == ("last rebalance", ".json")


def test_a_backup_of_another_suffix_never_parses_as_this_suffix():
    assert parse_backup_name("s_2026-02-17_10-30-00.123456Z.txt", "s", ".csv") is None


def test_a_temp_file_of_a_state_file_without_suffix_is_no_backup():
    temp = ".s_2026-02-17_10-30-00.123456Z.tmp-0a1b2c3d"
    assert parse_any_backup_name(temp) is None


def test_legacy_names_are_read_as_utc_instants(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        when = parse_backup_name("s_2026-02-17_10-30-00.json", "s", ".json").when
        stamp = parse_iso_timestamp("2026-02-17T10:30:00")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert when == stamp == datetime(2026, 2, 17, 15, 30, tzinfo=UTC)
    assert when.utcoffset() == stamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize("data,message", [
    (b"", "sidecar is empty or not in 'sha256  name' form"),
    (b"\xff\xfe", "sidecar is not text"),
    (b"x" * 4096, "sidecar is empty or not in 'sha256  name' form"),
    (b"x" * 4097, "sidecar is larger than 4096 bytes"),
    (("ab" * 32 + "  y.json\n").encode(), "sidecar names 'y.json', not 'x.json'"),
])
def test_sidecar_refusals_say_what_is_wrong(data, message):
    with pytest.raises(ValueError) as refused:
        parse_sidecar(data, "x.json")
    assert str(refused.value) == message


def test_a_timestamp_that_is_no_text_is_named():
    with pytest.raises(InvalidStateError) as refused:
        validate_content("last_rebalance.json", b'{"timestamp": 5}')
    assert str(refused.value) == \
        "last_rebalance.json: timestamp must be an ISO-8601 string, got 5"


def _doc(**kw):
    return json.dumps(kw).encode()


NOW = datetime.now(UTC)
INVALID = [
    ("truncated", "last_rebalance.json", b'{"timestamp": "2026-02-1'),
    ("empty", "last_rebalance.json", b""),
    ("nul bytes", "settings.json", b"\x00\x00\x00"),
    ("a list", "settings.json", b"[1, 2]"),
    ("a string", "settings.json", b'"x"'),
    ("no timestamp", "last_rebalance.json", _doc(when="2026-01-01")),
    ("timestamp not text", "last_rebalance.json", _doc(timestamp=1234)),
    ("timestamp not ISO", "last_rebalance.json", _doc(timestamp="yesterday")),
    ("not UTF-8", "settings.json", b'{"a": "\xff"}'),
    ("deep nesting", "settings.json", b"[" * 100000 + b"]" * 100000),
    ("integer over Python's digit limit", "settings.json", b'{"a": ' + b"9" * 5000 + b"}"),
]


@pytest.mark.parametrize("file_name,data", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_content_is_refused(file_name, data):
    with pytest.raises(InvalidStateError, match=file_name):
        validate_content(file_name, data)


VALID = [
    ("utc", "last_rebalance.json", _doc(timestamp="2026-02-17T10:30:00+00:00")),
    ("z suffix", "last_rebalance.json", _doc(timestamp="2026-02-17T10:30:00Z")),
    ("legacy naive", "last_rebalance.json", _doc(timestamp="2026-02-17T10:30:00")),
    ("within clock skew", "last_rebalance.json",
     _doc(timestamp=(NOW + timedelta(minutes=2)).isoformat())),
    ("any object", "settings.json", _doc(cash=1.5)),
    ("not json at all", "notes.txt", b"\x00anything"),
]


@pytest.mark.parametrize("file_name,data", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_content_passes(file_name, data):
    validate_content(file_name, data)


def test_registered_rule_applies_to_that_file_only():
    def needs_cash(doc):
        if "cash" not in doc:
            raise InvalidStateError("cash is missing")

    register_validator("custom_rule_test.json", needs_cash)
    with pytest.raises(InvalidStateError, match="cash is missing"):
        validate_content("custom_rule_test.json", b"{}")
    validate_content("other.json", b"{}")


@pytest.mark.parametrize("data,message", [
    (b'{\n "a" 1}', r"x\.json: not valid JSON \(Expecting ':' delimiter: line 2 column 6 "
                   r"\(char 7\)\)"),
    (b'{"a": "\xff"}', r"x\.json: not valid JSON \('utf-8' codec can't decode byte 0xff"),
    (b"[1, 2]", r"x\.json: JSON must be an object, got list"),
    (b"null", r"x\.json: JSON must be an object, got NoneType"),
])
def test_refusals_name_the_file_and_the_problem(data, message):
    with pytest.raises(InvalidStateError, match=message):
        validate_content("x.json", data)


# --- a .json state is valid exactly when json.loads reads it as an object, rule or not ---

RULE_CALLS = []


def _any_object_rule(doc):
    RULE_CALLS.append(doc)


register_validator("any_object_rule_test.json", _any_object_rule)
FILES = ["x.json", "any_object_rule_test.json"]  # without and with a content rule

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
JSON_BYTES = b'{}[],:"\\ \t\n0123456789.eE+-truefalsnNIiyx\x01\xc3\xa9\xff'


def _json_loads_object(data):
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        return False


def _accepted(file_name, data):
    """Whether validate_content accepts `data`; any error but InvalidStateError fails the
    test, and an accepted file with a rule must have reached its rule."""
    RULE_CALLS.clear()
    try:
        validate_content(file_name, data)
    except InvalidStateError:
        return False
    if file_name != "x.json":
        assert len(RULE_CALLS) == 1 and isinstance(RULE_CALLS[0], dict)
    return True


@pytest.mark.parametrize("file_name", FILES)
@settings(max_examples=400 * SCALE, deadline=None)
@given(value=st.dictionaries(st.text(), JSON_VALUES, max_size=4) | JSON_VALUES,
       indent=st.sampled_from([None, 1, "\t"]),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(JSON_BYTES),
                                st.sampled_from(["insert", "delete", "replace"])), max_size=3))
def test_content_is_valid_exactly_when_json_loads_reads_an_object_from_edited_documents(
        file_name, value, indent, edits):
    data = bytearray(json.dumps(value, indent=indent, ensure_ascii=False).encode())
    for where, byte, how in edits:
        where %= len(data) + 1
        if how == "insert":
            data.insert(where, byte)
        elif where < len(data):
            if how == "delete":
                del data[where]
            else:
                data[where] = byte
    assert _accepted(file_name, bytes(data)) == _json_loads_object(bytes(data))


@pytest.mark.parametrize("file_name", FILES)
@settings(max_examples=400 * SCALE, deadline=None)
@given(st.lists(st.sampled_from(JSON_BYTES), max_size=24).map(bytes))
def test_content_is_valid_exactly_when_json_loads_reads_an_object_from_random_bytes(
        file_name, data):
    assert _accepted(file_name, data) == _json_loads_object(data)


@pytest.mark.parametrize("depth,valid", [(600, True), (100000, False)])
def test_deep_nesting_is_judged_alike_with_and_without_a_rule(depth, valid):
    data = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    assert _json_loads_object(data) is valid
    assert [_accepted(name, data) for name in FILES] == [valid, valid]


def test_a_timestamp_ahead_of_the_clock_is_valid_content():
    # A naive time written in a zone ahead of this one looks like the future here;
    # refusing it would make a fresh backup unrestorable. Trading on it is the host's call.
    validate_content("last_rebalance.json", _doc(timestamp=(NOW + timedelta(days=400)).isoformat()))
    validate_content("last_rebalance.json", _doc(timestamp="2099-01-01T09:00:00"))
