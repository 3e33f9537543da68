"""Peak memory of backup and restore of a 10 MB state file, each in a fresh process,
against a process that only imports the module."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, print_table

PROBE = """
import resource, sys
sys.path.insert(0, {root!r})
from backup_manager import BackupManager
bm = BackupManager({backups!r})
op = sys.argv[1]
if op == "backup":
    bm.backup_state_file({state!r})
elif op == "restore":
    bm.restore({state!r})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(op: str, code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code, op], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[-1])


def main() -> None:
    size = 10 * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="dalio-bench-mem-") as tmp:
        state = Path(tmp) / "big.json"
        state.write_bytes(b'{"rows": "' + os.urandom(size // 2 - 8).hex().encode() + b'"}')
        code = PROBE.format(root=str(ROOT), backups=str(Path(tmp) / "backups"),
                            state=str(state))
        base = peak_kib("none", code)
        backup = peak_kib("backup", code)
        state.unlink()
        restore = peak_kib("restore", code)
    mib = size / 1024 / 1024
    rows = [["import only", f"{base / 1024:.1f}", "", ""]]
    for name, peak in (("backup 10 MB", backup), ("restore 10 MB", restore)):
        extra = (peak - base) / 1024
        rows.append([name, f"{peak / 1024:.1f}", f"{extra:.1f}", f"{extra / mib:.2f}x"])
    print(f"machine: {machine()}; state file: {mib:.0f} MiB of JSON")
    print_table("Peak RSS, MiB", ["process", "peak", "above import", "above / file size"], rows)


if __name__ == "__main__":
    main()
