"""Peak memory of backing up a 10 MB JSON state, in a fresh process, against a process
that only imports the module. Information only, no target: DalioLite's state files
are under 1 KB. The state is parsed with json.loads to check it, so the peak is
the bytes, the parsed document and hashlib's OpenSSL (loaded for files over 256 KiB)."""

from __future__ import annotations

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
if op == "backup":
    bm.backup_state_file(state)
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
    with tempfile.TemporaryDirectory(prefix="dalio-bench-mem-") as tmp:
        code = PROBE.format(root=str(ROOT), backups=str(Path(tmp) / "backups"))
        state = Path(tmp) / "records.json"
        state.write_bytes(_records(size))
        peak_kib(code, "none", state)  # writes the bytecode cache first
        base = peak_kib(code, "none", state)
        extra = (peak_kib(code, "backup", state) - base) / 1024
    rows = [["import only", f"{base / 1024:.1f}", "", ""],
            [f"backup of a {mib:.0f} MiB JSON state (trade records)",
             f"{base / 1024 + extra:.1f}", f"{extra:.1f}", f"{extra / mib:.1f}x"]]
    print(f"machine: {machine()}")
    print_table("Peak RSS (VmHWM), MiB; information, no target",
                ["process", "peak", "above import", "above import / file size"], rows)


if __name__ == "__main__":
    main()
