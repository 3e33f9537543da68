"""One contract, every store: LocalStore (a folder) and S3Store (moto server over HTTP)."""

from __future__ import annotations

import pytest

from backup_manager import UploadConflict
from backup_manager.local import LocalStore
from backup_manager.s3 import S3Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        s = LocalStore(tmp_path / "store")
        s.ensure()
        return s
    endpoint, bucket = request.getfixturevalue("bucket")
    return S3Store(bucket, "prefix", endpoint_url=endpoint, region="us-east-1")


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


def test_list_names_filters_by_prefix(store):
    for name in ("a_1.json", "a_2.json", "a_b_1.json", "b_1.json"):
        store.write(name, name.encode())
    assert sorted(store.list_names("a_")) == ["a_1.json", "a_2.json", "a_b_1.json"]
    assert sorted(store.list_names("")) == ["a_1.json", "a_2.json", "a_b_1.json", "b_1.json"]


def test_empty_store_lists_nothing(store):
    assert store.list_names("") == []


def test_binary_and_empty_objects(store):
    store.write("bin", bytes(range(256)))
    store.write("empty", b"")
    assert store.read("bin") == bytes(range(256))
    assert store.read("empty") == b""


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


def test_nested_and_escaping_keys_are_never_listed_s3(bucket):
    import boto3

    endpoint, name = bucket
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for key in ("prefix/../../x.json", "prefix/sub/a_1.json", "prefix/.hidden", "prefix/ok.json",
                "other/ok2.json"):
        client.put_object(Bucket=name, Key=key, Body=b"{}")
    assert sorted(S3Store(name, "prefix", endpoint_url=endpoint).list_names("")) == [
        ".hidden", "ok.json"], "hidden names are listed, as a folder lists them"
