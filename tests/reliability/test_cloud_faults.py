"""Cloud faults over real HTTP: a moto server behind a proxy that answers 503,
stalls past the read timeout or drops connections, and a server killed and
restarted while backups run. The local save never fails; the outbox drains once
the endpoint is back; nothing is duplicated or corrupted remotely."""

from __future__ import annotations

import os
import threading
import time
import uuid
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from backup_manager import BackupManager
from tests.helpers import Endpoint, FaultProxy, rebalance_doc, scaled


@pytest.fixture
def upstream(moto_server):
    """A restartable moto server with a bucket of this test's own (moto keeps buckets
    in process memory, shared by every server of the session)."""
    ep = Endpoint()
    ep.bucket = f"faults-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=ep.url, region_name="us-east-1").create_bucket(
        Bucket=ep.bucket)
    yield ep
    ep.stop()


@pytest.fixture
def proxy(upstream):
    p = FaultProxy(upstream.port)
    p.bucket = upstream.bucket
    yield p
    p.close()


class PutLog:
    """Every PUT the managers' clients really send, and every HTTP answer to one, in
    order: ("sent", name) and ("answer", name, status). A PUT that times out or whose
    connection drops has no answer."""

    def __init__(self):
        self.events = []

    def watch(self, bm):
        events = bm.cloud.client.meta.events
        events.register("before-send.s3.PutObject",
                        lambda request, **_: self.events.append(("sent", _name(request.url))))
        events.register("after-call.s3.PutObject",
                        lambda http_response, **_: self.events.append(
                            ("answer", _name(http_response.url), http_response.status_code)))
        return bm

    def sent_since(self, mark):
        return sorted(e[1] for e in self.events[mark:] if e[0] == "sent")


def _name(url):
    return unquote(urlsplit(url).path.rsplit("/", 1)[1])


@pytest.fixture
def puts():
    return PutLog()


def manager(server, puts=None):
    """A fresh manager (as each cron run has) talking to `server` (proxy or upstream)."""
    bm = BackupManager(cloud_enabled=True, s3_bucket=server.bucket, s3_endpoint_url=server.url,
                       s3_region="us-east-1", keep_last=1000,
                       s3_client_config={"connect_timeout": 0.5, "read_timeout": 0.5})
    return puts.watch(bm) if puts is not None else bm


def remote_backups(server):
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=server.bucket).get("Contents", [])]
    return sorted(k.split("/", 1)[1] for k in keys)


def expected_keys(paths):
    return sorted(n for p in paths for n in (p.name, p.name + ".sha256"))


def owed(made, server):
    """The backups whose copy is not complete in the bucket (no remote sidecar yet)."""
    remote = set(remote_backups(server))
    return [p for p in made if p.name + ".sha256" not in remote]


def sync_sends_each_owed_copy_once(puts, made, proxy_or_upstream, upstream):
    """Sync with a fresh manager: exactly one PUT of each backup and of its sidecar
    that the bucket still lacks, and none of anything already there; then a second
    sync has nothing left to send."""
    missing = owed(made, upstream)
    mark = len(puts.events)
    result = manager(proxy_or_upstream, puts).sync()
    assert result.pending == 0, result.errors
    assert puts.sent_since(mark) == expected_keys(missing)
    mark = len(puts.events)
    again = manager(proxy_or_upstream, puts).sync()
    assert (again.copied, again.pending, puts.sent_since(mark)) == (0, 0, [])
    return missing


def assert_uploaded_once(puts, made):
    """Once S3 has answered a PUT of a key with 200 (stored) or 412 (already there),
    that key is never sent again; every backup and sidecar got such an answer."""
    settled = set()
    for event in puts.events:
        if event[0] == "sent":
            assert event[1] not in settled, f"{event[1]} was uploaded again"
        elif event[2] in (200, 412):
            settled.add(event[1])
    assert sorted(settled) == expected_keys(made)


def with_point(path):
    """A backup and the restore point its call committed: both are copies owed."""
    from backup_manager.points import point_name, points_in

    return [path, path.parent / point_name(max(points_in(os.listdir(path.parent))[0]))]


def backups_through(server, state_file, count, before=None, puts=None):
    made = []
    for i in range(count):
        state_file.write_bytes(rebalance_doc(n=i, at=time.time()))
        bm = manager(server, puts)
        made += with_point(bm.backup_state_file(state_file))
        if before:
            before(i)
    return made


@pytest.mark.parametrize("fault", ["fail_503", "drop"])
def test_bursts_of_faults_queue_then_drain(project, state_file, proxy, upstream, fault, report,
                                          puts):
    rounds = scaled(3)
    made = []
    for _ in range(rounds):
        setattr(proxy, fault, 3)
        made += backups_through(proxy, state_file, 2, puts=puts)
    assert all(p.exists() for p in made), "every local save succeeded"
    assert manager(proxy).status()["targets"][0]["pending"] > 0, "failed copies wait"
    setattr(proxy, fault, 0)  # the burst is over: one attempt per call, the outbox retries
    sync_sends_each_owed_copy_once(puts, made, proxy, upstream)
    assert remote_backups(upstream) == expected_keys(made)
    assert_uploaded_once(puts, made)
    assert manager(upstream).verify(cloud=True).ok, "no corrupted remote object"
    report(f"{rounds} bursts of 3 x {fault}: {len(made)} backups, all uploaded once, verified")


def test_responses_slower_than_read_timeout(project, state_file, proxy, upstream, report,
                                           puts):
    proxy.delay = 1.0
    slow = backups_through(proxy, state_file, scaled(3), puts=puts)
    assert manager(proxy).status()["targets"][0]["pending"] == len(slow)
    proxy.delay = 0.0
    assert sync_sends_each_owed_copy_once(puts, slow, proxy, upstream) == slow
    assert remote_backups(upstream) == expected_keys(slow)
    assert_uploaded_once(puts, slow)
    assert manager(upstream).verify(cloud=True).ok
    report(f"{len(slow)} backups against a server slower than the read timeout: "
           "queued, then uploaded once each")


def test_server_killed_and_restarted_while_backing_up(project, state_file, upstream, report,
                                                     puts):
    count = scaled(30)
    made = []

    def maybe_kill(i):
        if i == count // 3:
            upstream.stop()
        if i == 2 * count // 3:
            upstream.start()

    made = backups_through(upstream, state_file, count, before=maybe_kill, puts=puts)
    assert all(p.exists() for p in made)
    sync_sends_each_owed_copy_once(puts, made, upstream, upstream)
    assert remote_backups(upstream) == expected_keys(made)
    assert_uploaded_once(puts, made)
    assert manager(upstream).verify(cloud=True).ok
    report(f"{count} backups, server killed after {count // 3} and back after "
           f"{2 * count // 3}: 0 local failures, {len(made)} uploaded once each, 0 corrupt")


def test_kill_server_during_an_upload(project, state_file, upstream, report, puts):
    """Stop the server from inside the request stream: the PUT of the backup is in
    flight when the server goes away."""
    bm = manager(upstream, puts)
    killed = []

    def stop_on_put(request, **_):
        if request.method == "PUT" and not killed:
            killed.append(True)
            threading.Thread(target=upstream.stop).start()
            time.sleep(0.3)

    bm.cloud.client.meta.events.register("before-send.s3.PutObject", stop_on_put)
    path = bm.backup_state_file(state_file)
    assert path.exists()
    made = with_point(path)
    assert bm.status()["targets"][0]["pending"] == 2, "the backup and its restore point"
    upstream.start()
    assert sync_sends_each_owed_copy_once(puts, made, upstream, upstream) == made
    assert remote_backups(upstream) == expected_keys(made)
    assert_uploaded_once(puts, made)
    assert manager(upstream).verify(cloud=True).ok
    report("server stopped while a PUT was in flight: local backup kept, upload queued, "
           "uploaded once after restart")
