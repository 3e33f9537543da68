"""A pytest plugin loaded only by mutmut (pyproject.toml, [tool.mutmut] pytest_add_cli_args).

Mutated modules import mutmut's trampoline, and subprocesses started by the tests must run
the mutated code too (tests/helpers.ROOT is mutants/, the tree mutmut copies and mutates;
the tests give it to their subprocesses as PYTHONPATH or cwd). Two things make that work:

- the README one-liners run `python` from PATH, which may be a Python without mutmut:
  the interpreter running the tests (whose environment has mutmut) goes first on PATH;
- while mutmut maps tests to functions ("stats" phase) it sets MUTANT_UNDER_TEST=stats and
  subprocesses inherit it: their trampolines would then read mutmut's configuration from
  their working directory (a tmp folder without pyproject.toml) and fail. Hits in a
  subprocess are not recorded anyway, so the variable is removed for that phase only (the
  test process still knows the phase: mutmut keeps it in process-local state too). When a
  mutant runs, the variable names that mutant and subprocesses inherit it.
"""

from __future__ import annotations

import os
import sys


def pytest_configure(config):
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if not path.startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
