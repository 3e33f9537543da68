"""One contract, every store: LocalStore (a folder) and S3Store (moto server over HTTP).

backup_manager/store.py states the contract. Where the two stores differ (a damaged
or unreadable object, a store that cannot be listed, path and mtime), each test names
what each store must do, so a store that drifts from its side of the contract fails.
"""

from __future__ import annotations

import errno
import io
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import (
    CloudError,
    CloudUnavailable,
    IntegrityError,
    StoreUnreachable,
    UploadConflict,
)
from backup_manager.local import LocalStore
from backup_manager.s3 import S3Store
from tests.helpers import FAST, refused_port

NAME = "a_2026-01-01_00-00-00.000000Z.json"
DATA = b'{"timestamp": "2026-01-01T00:00:00+00:00", "n": 1}'


def kind(store) -> str:
    return "local" if isinstance(store, LocalStore) else "s3"


def elsewhere(store, where: str):
    """A store of the same kind at another place, never written to: a folder beside
    this one (its parent exists), or another prefix in the same bucket."""
    if isinstance(store, LocalStore):
        return LocalStore(store.root.parent / where)
    return S3Store(store.bucket, where, endpoint_url=store.endpoint_url, region=store.region)


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


def sent_requests(store: S3Store) -> list[str]:
    sent = []
    store.client.meta.events.register("before-send.s3.*",
                                      lambda request, **_: sent.append(request.method))
    return sent


# --- write and read ------------------------------------------------------------------


def test_missing_object_reads_as_none(store):
    assert store.read("nothing-here.json") is None


def test_write_then_read_round_trips(store):
    store.write("a_2026-01-01_00-00-00.000000Z.json", b'{"a": 1}')
    assert store.read("a_2026-01-01_00-00-00.000000Z.json") == b'{"a": 1}'


def test_write_is_idempotent_for_equal_bytes(store):
    store.write("x.json", b"same")
    store.write("x.json", b"same")
    assert store.read("x.json") == b"same"


def test_write_never_overwrites_other_bytes(store):
    store.write("x.json", b"first")
    with pytest.raises(UploadConflict, match="not overwritten"):
        store.write("x.json", b"second")
    assert store.read("x.json") == b"first"


def test_writes_leave_the_object_alone_in_the_store(store):
    # Atomic: no temp file (a hidden name, which list_names would show) stays behind,
    # whether the write is made, repeated or refused.
    store.write("x.json", b"first")
    store.write("x.json", b"first")
    with pytest.raises(UploadConflict):
        store.write("x.json", b"second")
    assert store.list_names("") == ["x.json"]
    assert store.scan() == (["x.json"], [])


def test_binary_and_empty_objects(store):
    store.write("bin", bytes(range(256)))
    store.write("empty", b"")
    assert store.read("bin") == bytes(range(256))
    assert store.read("empty") == b""


@pytest.mark.parametrize("max_bytes,expected", [
    (0, 1), (10, 11), (len(DATA) - 2, len(DATA) - 1), (len(DATA) - 1, len(DATA)),
    (len(DATA), len(DATA)), (10 * len(DATA), len(DATA)),
])
def test_read_with_max_bytes_returns_at_most_one_byte_more(store, max_bytes, expected):
    store.write(NAME, DATA)
    assert store.read(NAME, max_bytes=max_bytes) == DATA[:expected]
    assert store.read(NAME) == DATA, "a bounded read changes nothing"


def test_an_object_over_the_stores_bound_is_too_large_and_never_read(store):
    store.write(NAME, DATA)
    store.max_bytes = len(DATA) - 1
    bodies = []
    if isinstance(store, S3Store):
        store.client.meta.events.register("after-call.s3.GetObject",
                                          lambda parsed, **_: bodies.append(parsed["Body"]))
    for bound in (None, len(DATA) - 1, 10 * len(DATA)):
        with pytest.raises(IntegrityError) as info:
            store.read(NAME, max_bytes=bound)
        assert info.value.kind == "too large" and NAME in info.value.detail
        assert f"{len(DATA):,} bytes" in info.value.detail
    assert [body._amount_read for body in bodies] == [0] * len(bodies), "downloaded"
    assert store.read(NAME, max_bytes=4) == DATA[:5], "a smaller bound reads one byte more"
    with pytest.raises(UploadConflict):
        store.write(NAME, b"other bytes")  # what cannot be read is never taken as equal
    store.max_bytes = len(DATA)
    assert store.read(NAME) == DATA, "an object of exactly the bound is read"


# --- listing -------------------------------------------------------------------------


def test_list_names_filters_by_prefix(store):
    for name in ("a_1.json", "a_2.json", "a_b_1.json", "b_1.json"):
        store.write(name, name.encode())
    assert sorted(store.list_names("a_")) == ["a_1.json", "a_2.json", "a_b_1.json"]
    assert sorted(store.list_names("")) == ["a_1.json", "a_2.json", "a_b_1.json", "b_1.json"]


def test_empty_store_lists_nothing(store):
    assert store.list_names("") == []


def test_hidden_names_are_listed(store):
    store.write(".hidden", b"{}")
    store.write(NAME, DATA)
    assert sorted(store.list_names("")) == [".hidden", NAME]
    assert store.list_names(".") == [".hidden"]
    assert sorted(store.scan()[0]) == [".hidden", NAME]


def test_a_store_not_made_yet_is_empty_and_stays_unmade(store):
    fresh = elsewhere(store, "not-made-yet")
    assert fresh.list_names("") == []
    assert fresh.scan() == ([], [])
    assert fresh.read(NAME) is None
    if kind(store) == "local":
        assert not fresh.root.exists(), "listing or reading never creates the folder"


def test_scan_gives_objects_and_nothing_else(store):
    for name in ("b.json", NAME, NAME + ".sha256"):
        store.write(name, name.encode())
    objects, others = store.scan()
    assert sorted(objects) == sorted([NAME, NAME + ".sha256", "b.json"])
    assert others == []


def test_nested_names_are_never_listed_local(tmp_path):
    s = LocalStore(tmp_path)
    s.write("top.json", b"{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a_1.json").write_text("{}")
    (tmp_path / "a_link.json").symlink_to(tmp_path / "sub" / "a_1.json")
    names = set(s.list_names(""))
    assert "top.json" in names
    # The folder and the symlink may be listed (read() refuses them); nothing inside
    # the sub-folder is, under any name.
    assert names - {"sub", "a_link.json"} == {"top.json"}
    assert set(s.list_names("a_")) <= {"a_link.json"}
    assert s.read("a_link.json") is None, "a symlink is never an object"
    assert s.read("sub") is None, "a folder is never an object"


def test_scan_puts_symlinks_and_folders_apart_local(tmp_path):
    s = LocalStore(tmp_path / "store")
    s.ensure()
    s.write("top.json", b"{}")
    (s.root / "sub").mkdir()
    (s.root / "sub" / "a_1.json").write_text("{}")
    (s.root / "a_link.json").symlink_to(s.root / "top.json")
    (s.root / "dangling.json").symlink_to(tmp_path / "gone")
    objects, others = s.scan()
    assert objects == ["top.json"]
    assert sorted(others) == ["a_link.json", "dangling.json", "sub"]


def test_nested_and_escaping_keys_are_never_listed_s3(bucket):
    import boto3

    endpoint, name = bucket
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for key in ("prefix/../../x.json", "prefix/sub/a_1.json", "prefix/.hidden", "prefix/ok.json",
                "other/ok2.json"):
        client.put_object(Bucket=name, Key=key, Body=b"{}")
    assert sorted(S3Store(name, "prefix", endpoint_url=endpoint).list_names("")) == [
        ".hidden", "ok.json"], "hidden names are listed, as a folder lists them"
    objects, others = S3Store(name, "prefix", endpoint_url=endpoint).scan()
    assert (sorted(objects), others) == ([".hidden", "ok.json"], [])


# --- a store that cannot be listed: never "empty" -------------------------------------


def folder_is_a_regular_file(request, tmp_path):
    (tmp_path / "store").write_bytes(b"a file where the folder belongs")
    return LocalStore(tmp_path / "store"), StoreUnreachable, errno.ENOTDIR


def parent_is_missing(request, tmp_path):
    return LocalStore(tmp_path / "not-mounted" / "store"), StoreUnreachable, errno.ENOENT


def endpoint_refuses_connections(request, tmp_path):
    request.getfixturevalue("credentials")
    store = S3Store("nowhere", "prefix", endpoint_url=f"http://127.0.0.1:{refused_port()}",
                    region="us-east-1", client_config=FAST)
    return store, CloudUnavailable, None


def bucket_does_not_exist(request, tmp_path):
    endpoint = request.getfixturevalue("moto_server")
    return S3Store("no-such-bucket", "prefix", endpoint_url=endpoint, region="us-east-1"), \
        CloudError, None


UNLISTABLE = [folder_is_a_regular_file, parent_is_missing, endpoint_refuses_connections,
              bucket_does_not_exist]


@pytest.mark.parametrize("case", UNLISTABLE, ids=[c.__name__ for c in UNLISTABLE])
def test_a_store_that_cannot_be_listed_raises(request, tmp_path, case):
    store, error, code = case(request, tmp_path)
    for call in (lambda: store.list_names(""), lambda: store.list_names("a_"), store.scan):
        with pytest.raises(error) as info:
            call()
        if code is not None:
            assert info.value.errno == code, info.value
        else:
            # Exactly the class: unreachable (worth retrying) or refused (it is not).
            assert type(info.value) is error, repr(info.value)


# --- a damaged object ----------------------------------------------------------------


def folder_at_the_name(store, monkeypatch):
    os.unlink(store.path(NAME))
    os.mkdir(store.path(NAME))


def symlink_at_the_name(store, monkeypatch):
    # Even to a file that holds exactly the object's bytes: a symlink is no object.
    elsewhere_file = store.root.parent / "outside.json"
    elsewhere_file.write_bytes(DATA)
    os.unlink(store.path(NAME))
    os.symlink(elsewhere_file, store.path(NAME))


def bytes_changed_in_transit(store, monkeypatch):
    # What the client receives differs from what S3 stored (and checksummed): the
    # client's response checksum validation sees it.
    from botocore.response import StreamingBody

    read = StreamingBody.read
    monkeypatch.setattr(StreamingBody, "read", lambda self, amt=None: (
        flip(chunk) if (chunk := read(self, amt)) else chunk))


def body_changed_after_the_clients_check(store, monkeypatch):
    # The store compares the bytes with S3's stored checksum itself, so a client that
    # does not validate responses (older botocore, other settings) is no hole.
    from botocore.response import StreamingBody

    def swap(parsed, **_):
        data = flip(parsed["Body"].read())
        parsed["Body"] = StreamingBody(io.BytesIO(data), len(data))

    store.client.meta.events.register("after-call.s3.GetObject", swap)


DAMAGES = {"local": [folder_at_the_name, symlink_at_the_name],
           "s3": [bytes_changed_in_transit, body_changed_after_the_clients_check]}


@pytest.mark.parametrize("damage", [d for ds in DAMAGES.values() for d in ds],
                         ids=[d.__name__ for ds in DAMAGES.values() for d in ds])
def test_read_of_a_damaged_object(request, tmp_path, monkeypatch, damage):
    local = damage in DAMAGES["local"]
    if local:
        store = LocalStore(tmp_path / "store")
        store.ensure()
    else:
        endpoint, bucket = request.getfixturevalue("bucket")
        store = S3Store(bucket, "prefix", endpoint_url=endpoint, region="us-east-1")
    store.write(NAME, DATA)
    assert store.read(NAME) == DATA
    damage(store, monkeypatch)
    if local:
        # A folder or a symlink where an object belongs (list_names may show it) is
        # no object.
        assert store.read(NAME) is None
        assert store.read(NAME, max_bytes=4) is None
    else:
        with pytest.raises(IntegrityError) as info:
            store.read(NAME)
        assert info.value.kind == "checksum mismatch"
        assert NAME in info.value.detail


# --- an object that cannot be read ---------------------------------------------------


def test_read_of_an_unreadable_local_object_raises_oserror(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    store.ensure()
    store.write(NAME, DATA)
    store.write("other.json", b"{}")
    target = os.fspath(store.path(NAME))
    real_open = os.open

    def failing_open(path, *args, **kwargs):
        if os.fspath(path) == target:
            raise OSError(errno.EIO, os.strerror(errno.EIO), target)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(StoreUnreachable) as info:
        store.read(NAME)
    assert info.value.errno == errno.EIO, "an I/O error is never 'missing'"
    assert store.read("other.json") == b"{}"


def test_read_from_a_stopped_s3_server_raises_cloud_unavailable(endpoint):
    store = S3Store("restartable", "unreadable", endpoint_url=endpoint.url,
                    region="us-east-1", client_config=FAST)
    store.write(NAME, DATA)
    assert store.read(NAME) == DATA
    endpoint.stop()
    with pytest.raises(CloudUnavailable):
        store.read(NAME)
    with pytest.raises(CloudUnavailable):
        store.read("nothing-here.json")  # cannot tell: never None


# --- prepare, path, mtime, label -----------------------------------------------------


def test_prepare_makes_a_store_ready_for_writes(store):
    fresh = elsewhere(store, "made-by-prepare")
    fresh.prepare()
    fresh.prepare()
    fresh.write(NAME, DATA)
    assert fresh.read(NAME) == DATA
    assert fresh.list_names("") == [NAME]


def test_prepare_never_makes_a_parent_folder_local(tmp_path):
    store = LocalStore(tmp_path / "not-mounted" / "mirror")
    with pytest.raises(OSError) as info:
        store.prepare()
    assert info.value.errno == errno.ENOENT
    assert not (tmp_path / "not-mounted").exists(), "a drive not mounted is never faked"


def test_prepare_never_makes_a_bucket_s3(moto_server):
    store = S3Store("never-made-by-prepare", "prefix", endpoint_url=moto_server,
                    region="us-east-1")
    sent = sent_requests(store)
    store.prepare()
    assert sent == [], "a bucket is created by its owner, never by a backup"
    with pytest.raises(CloudError):
        store.list_names("")


def test_path_is_the_file_for_a_folder_and_none_for_s3(store):
    store.write(NAME, DATA)
    if kind(store) == "local":
        assert store.path(NAME) == store.root / NAME
        assert store.path(NAME).read_bytes() == DATA
    else:
        assert store.path(NAME) is None


def test_mtime_is_when_a_file_was_written_and_none_for_s3(store):
    before = time.time()
    store.write(NAME, DATA)
    after = time.time()
    assert store.mtime("nothing-here.json") is None
    if kind(store) == "local":
        assert before - 2 <= store.mtime(NAME) <= after + 2
        os.utime(store.path(NAME), (1_000_000_000, 1_000_000_000))
        assert store.mtime(NAME) == 1_000_000_000
    else:
        assert store.mtime(NAME) is None, "S3 does not say: ages come from names"


def test_written_at_is_the_stores_own_clock_and_none_when_missing(store):
    """The store's account of when an object was written (S3's LastModified: the lease
    of another machine's intent is also measured by it, whatever that machine's clock)."""
    before = datetime.now(UTC)
    store.write(NAME, DATA)
    after = datetime.now(UTC)
    assert store.written_at("nothing-here.json") is None
    when = store.written_at(NAME)
    assert when.tzinfo is not None
    assert before - timedelta(seconds=2) <= when <= after + timedelta(seconds=2)
    if kind(store) == "local":
        os.utime(store.path(NAME), (1_000_000_000, 1_000_000_000))
        assert store.written_at(NAME) == datetime.fromtimestamp(1_000_000_000, UTC)


def test_written_at_from_a_stopped_s3_server_raises_cloud_unavailable(endpoint):
    store = S3Store("restartable", "written", endpoint_url=endpoint.url,
                    region="us-east-1", client_config=FAST)
    store.write(NAME, DATA)
    endpoint.stop()
    with pytest.raises(CloudUnavailable):
        store.written_at(NAME)  # cannot tell: never "missing"


def test_label_says_where_the_store_is(store):
    if kind(store) == "local":
        assert store.label == str(store.root)
    else:
        assert store.label == f"s3://{store.bucket}/prefix"
