"""Shared fixtures: a project folder per test, state files, a real S3 endpoint (moto's
server over HTTP on 127.0.0.1, started once per session), one that a test can stop
and start, one that never answers, and AWS credentials."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers import ROOT, Endpoint, SilentEndpoint, rebalance_doc


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder that is also the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    return tmp_path


@pytest.fixture
def state_file(project):
    path = project / "state" / "last_rebalance.json"
    path.write_bytes(rebalance_doc())
    return path


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server on 127.0.0.1 with a random port; yields its endpoint URL."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_server, request):
    """A fresh, empty bucket on the moto server; yields (endpoint, bucket name)."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:40].strip("-]")
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if name in existing:
        for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    else:
        client.create_bucket(Bucket=name)
    return moto_server, name


@pytest.fixture
def locked_bucket(moto_server, request):
    """A fresh bucket made with Object Lock (so versioning is on), named by the test and
    a random suffix: a locked version can never be cleared for the next run. Yields
    (endpoint, bucket name)."""
    import uuid

    import boto3

    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    name = f"l-{base.strip('-')}-{uuid.uuid4().hex[:8]}".replace("--", "-")
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=name, ObjectLockEnabledForBucket=True)
    return moto_server, name


@pytest.fixture
def endpoint(moto_server):
    """A moto server of the test's own, with the bucket "restartable": the test may
    stop it and start it again on the same port."""
    import boto3

    ep = Endpoint()
    s3 = boto3.client("s3", endpoint_url=ep.url, region_name="us-east-1")
    s3.create_bucket(Bucket="restartable")
    # moto keeps buckets in process memory, shared by every server: what an earlier
    # test left in "restartable" would be this test's (its points, its copies).
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="restartable"):
        for item in page.get("Contents", ()):
            s3.delete_object(Bucket="restartable", Key=item["Key"])
    yield ep
    ep.stop()


@pytest.fixture
def credentials(monkeypatch):
    """Credentials, so a request really goes out (without them boto3 fails before
    sending anything, and an endpoint test would prove nothing)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def silent_endpoint(credentials):
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """One empty store of each kind, for the Store contract suite (tests/test_stores.py):
    LocalStore, a folder made ready; S3Store, a fresh bucket on the moto server over HTTP."""
    from backup_manager.local import LocalStore
    from backup_manager.s3 import S3Store

    if request.param == "local":
        s = LocalStore(tmp_path / "store")
        s.ensure()
        return s
    endpoint, bucket = request.getfixturevalue("bucket")
    return S3Store(bucket, "prefix", endpoint_url=endpoint, region="us-east-1")


@pytest.fixture
def home(tmp_path):
    """A DalioLite installation: the shipped config.yaml in its own folder."""
    folder = tmp_path / "bot"
    folder.mkdir()
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    return folder


@pytest.fixture
def alpaca_server():
    """A fake Alpaca trading API on 127.0.0.1 with a free port (tests/fake_alpaca.py):
    one fresh account per test, for the real alpaca-py client of a DalioLite process."""
    from tests.fake_alpaca import FakeAlpaca

    server = FakeAlpaca()
    yield server
    server.stop()
