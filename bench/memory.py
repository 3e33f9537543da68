"""Peak memory of backing up a 10 MB JSON state, in a fresh process, against a process
that only imports the module. Information only, no target: DalioLite's state files
are under 1 KB. The state is parsed with json.loads to check it, so the peak is
the bytes, the parsed document and hashlib's OpenSSL (loaded for files over 256 KiB).

Then a DalioLite rebalance (prices moved since the first run: orders, paper_account.json
saved after each) with a mirror, with and without a 1.5 GiB sparse object planted in the mirror
under the next backup name of paper_account.json: the prune after each save looks at
the mirror's newest backup first. Target: peak RSS and time within 1.2x of the
rebalance without it (every read is bounded, backup.max_state_bytes)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
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


REBALANCE = """
import runpy, sys
sys.argv = [{script!r}, "--config", *sys.argv[1:]]
try:
    runpy.run_path({script!r}, run_name="__main__")
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print("peak-kib", peak.split()[1], file=sys.stderr)
"""
PLANTED_BYTES = 3 * 512 * 1024 * 1024


def rebalance(tmp: Path, n: int, planted: bool) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of a first DalioLite run, in a home of its own."""
    import yaml

    from backup_manager.formats import format_backup_name

    home = tmp / f"{'planted' if planted else 'plain'}-{n}"
    home.mkdir()
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(mirror_dirs=["mirror"], keep_last=1)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    code = REBALANCE.format(script=str(ROOT / "dalio_lite.py"))
    first = subprocess.run([sys.executable, "-c", code, str(home / "config.yaml")],
                           capture_output=True, text=True, cwd=home)
    if "order:" not in first.stderr:
        raise SystemExit(f"the first run placed no order:\n{first.stderr}")
    # Prices move: the next (forced) run rebalances, saving paper_account.json per order.
    doc["broker"]["prices"] = {k: v * (1.5 if k == "VTI" else 1.0)
                               for k, v in doc["broker"]["prices"].items()}
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    if planted:
        name = format_backup_name("paper_account", ".json",
                                  datetime.now(UTC) + timedelta(minutes=10))
        with open(home / "mirror" / name, "wb") as f:
            f.truncate(PLANTED_BYTES)  # sparse: no disk used
        (home / "mirror" / (name + ".sha256")).write_text(f"{'0' * 64}  {name}\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(home / "config.yaml"),
                           "--force-rebalance"], capture_output=True, text=True, cwd=home)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or "order:" not in done.stderr:
        raise SystemExit(f"the rebalance failed or placed no order:\n{done.stderr}")
    return int(done.stderr.rsplit("peak-kib ", 1)[1].split()[0]) / 1024, elapsed


def planted_table(runs: int = 5) -> list[list[str]]:
    with tempfile.TemporaryDirectory(prefix="dalio-bench-planted-") as tmp:
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        rebalance(Path(tmp), -1, False)  # writes the bytecode cache first
        for n in range(runs):
            for planted in (False, True):  # interleaved: the machine's drift hits both
                results[planted].append(rebalance(Path(tmp), n, planted))
    floor_rss = statistics.median(r for r, _ in results[False])
    floor_s = statistics.median(s for _, s in results[False])
    rows = []
    for planted, label in ((False, "rebalance, mirror as it should be (floor)"),
                           (True, "rebalance, 1.5 GiB sparse object planted in the mirror")):
        rss = statistics.median(r for r, _ in results[planted])
        seconds = statistics.median(s for _, s in results[planted])
        rows.append([label, f"{rss:.1f}", f"{rss / floor_rss:.2f}x", f"{seconds:.3f}",
                     f"{seconds / floor_s:.2f}x"])
    return rows


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
    print_table("A planted object in a mirror: peak RSS (MiB) and time (s) of a rebalance, "
                "medians of 5; target: within 1.2x of the floor",
                ["run", "peak RSS", "ratio", "seconds", "ratio"], planted_table())


if __name__ == "__main__":
    main()
