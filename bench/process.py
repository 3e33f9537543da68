"""Whole-process cost: `python -m backup_manager backup|restore` as a cron job runs
it, against `python -c pass`, samples interleaved; and restic / borg when installed."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, STATE_1K, Stats, machine, print_table, ratio


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    # As in latency.py: no sample waits for the writeback of what the previous one
    # wrote (restic and borg write whole repositories); a cron run meets a quiet disk.
    os.sync()
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="dalio-bench-proc-") as tmp:
        work = Path(tmp)
        (work / "state").mkdir()
        state = work / "state" / "x.json"
        state.write_bytes(STATE_1K)
        (work / "state" / "last_rebalance.json").write_bytes(STATE_1K)
        env = dict(os.environ)
        # A cron job keeps its bytecode cache; without it every run compiles the module.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "backup_manager")],
                       env=env, check=True)
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "backup": [py, "-m", "backup_manager", "backup", "state/x.json"],
            # `--` is not the plain cron line: the same backup, read by argparse.
            "backup -- FILE (argparse reads the line)":
                [py, "-m", "backup_manager", "backup", "--", "state/x.json"],
            "backup, a file with a content rule (last_rebalance.json)":
                [py, "-m", "backup_manager", "backup", "state/last_rebalance.json"],
            "restore": [py, "-m", "backup_manager", "restore", "state/x.json", "--yes"],
        }
        tools = {}
        if shutil.which("restic"):
            env["RESTIC_PASSWORD"] = "bench"
            subprocess.run(["restic", "init", "-r", str(work / "restic"), "-q"], env=env,
                           check=True, capture_output=True)
            tools["restic backup"] = ["restic", "-r", str(work / "restic"), "backup", "-q",
                                      str(state)]
        if shutil.which("borg"):
            env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
            subprocess.run(["borg", "init", "-e", "none", str(work / "borg")], env=env,
                           check=True, capture_output=True)
            tools["borg create"] = ["borg", "create", f"{work / 'borg'}::{{now:%s.%f}}",
                                    str(state)]
        commands.update(tools)
        samples: dict[str, list[float]] = {k: [] for k in commands}
        for cmd in commands.values():  # warm caches, write bytecode
            timed(cmd, work, env)
        order = list(commands)
        for _ in range(args.runs):
            random.shuffle(order)  # no command always runs right after restic or borg
            for name in order:
                cmd = commands[name]
                if name == "restore":
                    state.unlink(missing_ok=True)
                samples[name].append(timed(cmd, work, env))
        stats = {k: Stats(v) for k, v in samples.items()}
        base = stats["python -c pass"]
        rows = [[k, s.cell(), ratio(s, base),
                 f"ours is {s.median / stats['backup'].median:.1f}x faster" if k in tools else ""]
                for k, s in stats.items()]
        print(f"machine: {machine()}; runs: {args.runs}, interleaved")
        if not tools:
            print("restic and borg are not installed: their rows are skipped "
                  "(apt-get install restic borgbackup to include them)")
        print_table("Whole process, ms: median [min-max]",
                    ["command", "time", "vs python -c pass", "comparison"], rows)


if __name__ == "__main__":
    main()
