"""Whole-process cost of a no-trade `python dalio_lite.py` run (the daily cron line):
this tree, whose start-up guard also catches up backups and copies, against the
same run of the tree before the guard (git revision BEFORE), on identical homes.
Target: at most 1.2x. Samples interleaved; each run is a real process.

    python bench/host.py [--runs N] [--before REV]
"""

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

from common import ROOT, Stats, machine, print_table

# The last commit before the start-up guard moved into the module (issue 12).
BEFORE = "7fd4bf9"


def checkout(rev: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def home_for(code: Path, folder: Path, env: dict) -> list[str]:
    """A DalioLite home after its first run (which rebalances): later runs trade nothing."""
    folder.mkdir()
    shutil.copy(code / "config.yaml", folder / "config.yaml")
    cmd = [sys.executable, str(code / "dalio_lite.py"), "--config", str(folder / "config.yaml")]
    subprocess.run(cmd, env={**env, "PYTHONPATH": str(code)}, check=True, capture_output=True)
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--before", default=BEFORE)
    args = parser.parse_args()
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a cron job keeps its bytecode cache
    with tempfile.TemporaryDirectory(prefix="dalio-bench-host-") as tmp:
        work = Path(tmp)
        codes = {"before": checkout(args.before, work / "before"), "now": ROOT}
        cases = {}
        for label, code in codes.items():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(code / "backup_manager"),
                            str(code / "dalio_lite.py")], env=env, check=True)
            cases[label] = (home_for(code, work / f"home-{label}", env),
                            {**env, "PYTHONPATH": str(code)})
        samples: dict[str, list[float]] = {label: [] for label in cases}
        order = list(cases)
        for round_ in range(args.runs + 2):
            random.Random(round_).shuffle(order)
            for label in order:
                cmd, run_env = cases[label]
                os.sync()
                start = time.perf_counter()
                subprocess.run(cmd, env=run_env, check=True, capture_output=True)
                if round_ >= 2:
                    samples[label].append(time.perf_counter() - start)
        before, now = Stats(samples["before"]), Stats(samples["now"])
        ratio = now.median / before.median
        print_table(f"no-trade `python dalio_lite.py` run, ms (median [min-max] of {args.runs});"
                    f" {machine()}", ["tree", "run", "ratio", "target 1.2x"],
                    [[f"before ({args.before})", before.cell(), "1.00x", ""],
                     ["now (start-up guard + catch-up)", now.cell(), f"{ratio:.2f}x",
                      "met" if ratio <= 1.2 else "NOT MET"]])


if __name__ == "__main__":
    main()
