"""Reliability suites: real processes, real kills, real faults.

RELIABILITY_ITERATIONS scales every loop (default 1: a few minutes in CI;
try 10 for a long run). Each suite prints what it tried and what survived.
"""

from __future__ import annotations

import uuid

import pytest

from tests.fake_alpaca import FakeAlpaca
from tests.helpers import FaultProxy


@pytest.fixture
def report(request, capsys):
    """Print a figure line that survives pytest's capture (shown with -s or -rA)."""
    lines = []
    yield lines.append
    with capsys.disabled():
        for line in lines:
            print(f"\n[reliability] {request.node.name}: {line}", end="")


@pytest.fixture
def bucket(moto_server):
    """(the moto endpoint, a fresh bucket of this test's own)."""
    import boto3

    name = f"attack-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=name)
    return moto_server, name


@pytest.fixture
def server():
    """The fake Alpaca server (tests/fake_alpaca.py) on 127.0.0.1."""
    broker = FakeAlpaca()
    yield broker
    broker.stop()


@pytest.fixture
def s3_proxy(bucket):
    """A FaultProxy in front of `bucket`'s endpoint."""
    endpoint, _ = bucket
    proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()
