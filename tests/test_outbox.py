"""The outbox: copies owed to mirrors and S3 wait in a durable queue and drain later."""

from __future__ import annotations

import json

import yaml

from tests.helpers import (
    cloud_home,
    cloud_manager,
    rebalance_doc,
    refused_port,
    remote_keys,
    run_bot,
)


def test_server_down_queues_then_drains_without_loss_or_duplicates(project, state_file,
                                                                   endpoint):
    bm = cloud_manager(endpoint.url, "restartable")
    made = [bm.backup_state_file(state_file).name]
    endpoint.stop()
    down = cloud_manager(endpoint.url, "restartable")
    for i in range(3):
        state_file.write_bytes(rebalance_doc(n=i))
        made.append(down.backup_state_file(state_file).name)
    status = down.status()["targets"][0]
    assert status["pending"] == 3 and status["last_error"]
    endpoint.start()
    later = cloud_manager(endpoint.url, "restartable")
    state_file.write_bytes(rebalance_doc(n="after"))
    made.append(later.backup_state_file(state_file).name)
    keys = remote_keys(endpoint.url, "restartable")
    expected = sorted(f"dalio-lite-backups/{n}{s}" for n in made for s in ("", ".sha256"))
    assert keys == expected
    assert later.status()["targets"][0]["pending"] == 0
    assert later.verify(cloud=True).ok


def test_silent_endpoint_times_out_and_queues(project, state_file, silent_endpoint, caplog):
    bm = cloud_manager(silent_endpoint.url, "hung")
    path = bm.backup_state_file(state_file)
    assert path.exists()
    assert "queued for retry" in caplog.text and "timeout" in caplog.text.lower()
    assert bm.status()["targets"][0]["pending"] == 1


def test_unreachable_cloud_with_valid_local_state_runs(tmp_path, bucket):
    endpoint, name = bucket
    home = cloud_home(tmp_path, endpoint, name)
    assert run_bot(home).returncode == 0
    doc = yaml.safe_load((home / "config.yaml").read_text())
    doc["backup"]["s3_endpoint_url"] = f"http://127.0.0.1:{refused_port()}"
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    again = run_bot(home)
    assert again.returncode == 0, again.stderr
    assert "queued for retry" in again.stderr
    status = json.loads((home / "state" / "autopilot_status.json").read_text())
    assert status["outcome"] == "no_action"
