"""Peak memory of backup and restore of a 10 MB state file, each in a fresh process,
against a process that only imports the module: JSON (validated without being
built) and a file with no content rules. Files over 256 KiB are hashed with
hashlib, whose OpenSSL library is itself a few MiB: the last column leaves it out."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, print_table

# VmHWM, not ru_maxrss: ru_maxrss survives exec and so reports this parent's peak.
PROBE = """
import sys
sys.path.insert(0, {root!r})
from backup_manager import BackupManager
bm = BackupManager({backups!r})
op, state = sys.argv[1], sys.argv[2]
if op == "openssl":
    import hashlib
    hashlib.sha256(b"")
elif op == "backup":
    bm.backup_state_file(state)
elif op == "restore":
    bm.restore(state)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def _records(size: int) -> bytes:
    """A trade history of about `size` bytes: many small objects, as a state grows."""
    record = b'{"symbol": "SPY", "qty": 12, "price": 412.57, "side": "buy", "filled": true}'
    count = size // (len(record) + 2)
    return b'{"trades": [' + b", ".join([record] * count) + b"]}"


def peak_kib(code: str, op: str, state: Path) -> int:
    out = subprocess.run([sys.executable, "-c", code, op, str(state)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[-1])


def main() -> None:
    size = 10 * 1024 * 1024
    mib = size / 1024 / 1024
    rows = []
    with tempfile.TemporaryDirectory(prefix="dalio-bench-mem-") as tmp:
        code = PROBE.format(root=str(ROOT), backups=str(Path(tmp) / "backups"))
        files = {
            "big.json": b'{"rows": "' + os.urandom(size // 2 - 8).hex().encode() + b'"}',
            "records.json": _records(size),
            "big.dat": os.urandom(size),
        }
        peak_kib(code, "none", Path(tmp) / "x")  # writes the bytecode cache first
        base = peak_kib(code, "none", Path(tmp) / "x")
        openssl = peak_kib(code, "openssl", Path(tmp) / "x") - base
        rows.append(["import only", f"{base / 1024:.1f}", "", "", ""])
        rows.append(["import + hashlib (OpenSSL; loaded for files over 256 KiB)",
                     f"{(base + openssl) / 1024:.1f}", f"{openssl / 1024:.1f}", "", ""])
        for name, data in files.items():
            state = Path(tmp) / name
            state.write_bytes(data)
            for op in ("backup", "restore"):
                if op == "restore":
                    state.unlink()
                extra = (peak_kib(code, op, state) - base) / 1024
                rows.append([f"{op} {name} ({mib:.0f} MiB)", f"{(base / 1024 + extra):.1f}",
                             f"{extra:.1f}", f"{extra / mib:.2f}x",
                             f"{(extra - openssl / 1024) / mib:.2f}x"])
    print(f"machine: {machine()}")
    print_table("Peak RSS (VmHWM), MiB", ["process", "peak", "above import",
                                          "above import / file size",
                                          "above import and OpenSSL / file size"], rows)


if __name__ == "__main__":
    main()
