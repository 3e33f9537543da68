"""The errors: one base class, and every class is raised by some test through the
public API, so none is a name that nothing can produce."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import backup_manager
from backup_manager import (
    BackupError,
    BackupManager,
    ConfigError,
    InvalidStateError,
    LockTimeout,
    MissingDependency,
    NoValidBackupError,
    StorageError,
    errors,
)
from tests.helpers import ROOT

TESTS = Path(__file__).resolve().parent
KNOWN = {"BackupError", "ConfigError", "InvalidStateError", "IntegrityError",
         "NoValidBackupError", "LockTimeout", "StorageError", "CloudError",
         "CloudUnavailable", "UploadConflict", "MissingDependency"}


def error_classes() -> list[str]:
    return sorted(name for name, value in vars(errors).items()
                  if isinstance(value, type) and issubclass(value, BackupError)
                  and value.__module__ == errors.__name__)


def test_every_error_class_is_raised_by_some_test():
    classes = error_classes()
    assert KNOWN <= set(classes), "the listing finds every class"
    assert set(classes) <= set(backup_manager.__all__), "every error class is public"
    sources = "\n".join(p.read_text() for p in sorted(TESTS.rglob("*.py")))
    untested = [name for name in classes
                if not re.search(r"pytest\.raises\(\s*(?:[\w.]+\.)?" + name + r"\b", sources)]
    assert not untested, f"no test has pytest.raises({', '.join(untested)} ...)"


def test_every_deliberate_error_is_a_backup_error(project, state_file):
    """A caller catches everything the package raises on purpose with one class."""
    broken = project / "state" / "broken.json"
    broken.write_bytes(b"{broken")
    (project / "a-file").write_text("a file where the backups folder belongs")
    cases = [
        (lambda: BackupManager(keep_last=-1), ConfigError),
        (lambda: BackupManager().backup_state_file(broken), InvalidStateError),
        (lambda: BackupManager().restore(state_file), NoValidBackupError),
        (lambda: BackupManager("a-file").backup_state_file(state_file), StorageError),
    ]
    for call, specific in cases:
        with pytest.raises(BackupError) as info:
            call()
        assert type(info.value) is specific, repr(info.value)


def test_errors_are_also_the_builtin_exceptions_callers_expect():
    assert issubclass(ConfigError, ValueError) and issubclass(InvalidStateError, ValueError)
    assert issubclass(StorageError, OSError)
    assert issubclass(LockTimeout, TimeoutError)
    assert issubclass(MissingDependency, ImportError)
    assert issubclass(errors.CloudUnavailable, errors.CloudError)
    # One "cannot see" for every store, the system's errno kept for a folder:
    assert issubclass(errors.CloudError, errors.StoreUnreachable)
    assert issubclass(errors.StoreUnreachable, OSError)
    # A write conflict is no "cannot see": the store answered.
    assert not issubclass(errors.UploadConflict, errors.StoreUnreachable)
    assert issubclass(errors.UnseenStoresError, errors.NoValidBackupError)


MISSING = {
    # the module made unimportable, the call that needs it, what the message must say
    "boto3": ("BackupManager(sys.argv[1], cloud_enabled=True, s3_bucket='b').cloud.client",
              "pip install 'daliolite[s3]'"),
    "yaml": ("BackupManager.from_config(sys.argv[2])", "pip install PyYAML"),
}


@pytest.mark.parametrize("module", list(MISSING))
def test_a_missing_dependency_says_what_to_install(tmp_path, module):
    """Run where the module cannot be imported (sys.modules[name] = None, set before
    anything imports it): the package still imports and builds a manager, and the
    first call that needs the module raises MissingDependency naming the install."""
    call, install = MISSING[module]
    config = tmp_path / "config.yaml"
    config.write_text("backup:\n  dir: backups\n")
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{module!r}] = None
        import pytest
        from backup_manager import BackupManager, MissingDependency
        with pytest.raises(MissingDependency) as info:
            {call}
        assert type(info.value) is MissingDependency, repr(info.value)
        assert {module!r} not in [m for m, v in sys.modules.items() if v is not None]
        print(info.value)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "backups"), str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert install in proc.stdout, proc.stdout
