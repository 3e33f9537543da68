"""Run every benchmark and print its tables: python bench/run.py [--quick]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["latency.py", "durable.py", "points.py", "intents.py", "legacy.py", "process.py",
           "host.py", "cloud.py", "memory.py", "keys.py"]


def main() -> int:
    quick = "--quick" in sys.argv
    failed = 0
    for script in SCRIPTS:
        print(f"\n# {script}", flush=True)
        args = [sys.executable, str(HERE / script)]
        if quick and script != "memory.py":
            args += ["--runs", "10"]
        failed |= subprocess.run(args, cwd=HERE).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
