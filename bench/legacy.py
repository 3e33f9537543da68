"""A backups folder migrated from the original module: 10,000 old-style names
(`{stem}_{YYYY-MM-DD_HH-MM-SS}.json`, local time, with sidecars). Backup and
restore with a fresh BackupManager per call (as a cron run), against the
specification's sample code (bench/naive.py) on the same kind of folder.
Target: ours at least 2x faster for both. Samples interleaved.

    python bench/legacy.py [--runs N] [--count N]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from common import STATE_1K, machine, measure_interleaved, print_table
from naive import naive_backup, naive_restore

from backup_manager import BackupManager

# Keep everything, as the sample code keeps everything younger than 30 days by mtime:
# both sides then list, parse and order the whole folder on every call.
KEEP_ALL = dict(keep_last=36_500, keep_daily=36_500, retention_days=36_500)


def legacy_folder(folder: Path, count: int) -> None:
    """`count` complete backups named by the original module's rule, an hour apart."""
    folder.mkdir(parents=True)
    digest = hashlib.sha256(STATE_1K).hexdigest()
    end = datetime.now() - timedelta(hours=1)
    for i in range(count):
        name = f"s_{end - timedelta(hours=i):%Y-%m-%d_%H-%M-%S}.json"
        (folder / name).write_bytes(STATE_1K)
        (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dalio-bench-legacy-") as tmp:
        root = Path(tmp)
        state = root / "state" / "s.json"
        state.parent.mkdir()
        state.write_bytes(STATE_1K)
        folders = {}
        for side in ("ours", "sample"):
            folders[side] = root / side
            legacy_folder(folders[side], args.count)
        live = root / "live" / "s.json"
        live.parent.mkdir()

        def remove_live() -> None:
            live.unlink(missing_ok=True)

        cases = {
            ("backup", "ours"): (lambda: BackupManager(folders["ours"], **KEEP_ALL)
                                 .backup_state_file(state), None),
            ("backup", "sample"): (lambda: naive_backup(state, folders["sample"]), None),
            ("restore", "ours"): (lambda: BackupManager(folders["ours"], **KEEP_ALL)
                                  .restore(live), remove_live),
            ("restore", "sample"): (lambda: naive_restore(live, folders["sample"]), remove_live),
        }
        results = measure_interleaved(cases, args.runs)
        rows = []
        for op in ("backup", "restore"):
            ours, sample = results[(op, "ours")], results[(op, "sample")]
            faster = sample.median / ours.median
            rows.append([op, ours.cell(), sample.cell(), f"{faster:.2f}x",
                         "met" if faster >= 2 else "NOT MET"])
        print_table(f"{args.count:,} old-style backups, fresh manager per call, ms "
                    f"(median [min-max] of {args.runs}); {machine()}",
                    ["call", "ours", "spec sample", "ours faster by", "target 2x"], rows)
        shutil.rmtree(root / "live")


if __name__ == "__main__":
    main()
