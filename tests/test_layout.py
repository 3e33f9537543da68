"""The package reads bottom-up: each module imports only modules before it in the
reading order that the package docstring states."""

from __future__ import annotations

import ast
import re

import backup_manager
from tests.helpers import ROOT

PACKAGE = ROOT / "backup_manager"


def reading_order() -> list[str]:
    doc = " ".join(backup_manager.__doc__.split())
    listed = re.search(r"Modules, in reading order \([^)]*\): ([a-z0-9_, ]+)\.", doc)
    assert listed, "the package docstring lists its modules in reading order"
    return [name.strip() for name in listed[1].split(",")]


def imported_modules(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return found


def test_every_module_is_listed_once_in_reading_order():
    order = reading_order()
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))
    assert sorted(order) == modules


def test_modules_import_only_modules_before_them():
    order = reading_order()
    for name in order:
        later = set(order[order.index(name):])
        wrong = imported_modules(PACKAGE / f"{name}.py") & later
        assert not wrong, f"{name} imports {sorted(wrong)}, which come after it"


RECOVERY_CALLS = {"restore", "restore_from_backup", "plan_restore", "install_restore",
                  "restore_all", "install_point", "quarantine", "unlink", "remove", "rename",
                  "replace", "rmtree"}


def test_the_host_holds_no_recovery_rule_of_its_own():
    """DalioLite's start-up is one call to the package's guard and a report of what it
    decided: the host gives facts (its records, its broker account, its commands), never
    installs, deletes or moves a state file, and never refuses on its own."""
    tree = ast.parse((ROOT / "dalio_lite.py").read_text())
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    methods = {f.attr for f in calls if isinstance(f, ast.Attribute)}
    functions = {f.id for f in calls if isinstance(f, ast.Name)}
    assert not methods & RECOVERY_CALLS, f"the host restores or moves files itself: " \
                                         f"{sorted(methods & RECOVERY_CALLS)}"
    assert "recover" in functions, "the start-up is the guard's"
    raised = {ast.unparse(node.exc).split("(")[0] for node in ast.walk(tree)
              if isinstance(node, ast.Raise) and node.exc is not None}
    assert not raised & {"StateUnrecoverableError", "Refusal", "ClockProblem",
                         "BrokerChanged"}, f"the host refuses on its own: {raised}"
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "backup_manager" for alias in node.names}
    assert "CLOCK_SKEW" not in imported, "the clock rule is the guard's"


HOSTS = ("dalio_lite.py", "dalio_schedule.py", "dashboard/backups.py")


def test_the_host_and_the_page_use_only_the_public_names():
    """DalioLite, its scheduler and the Backups page import from the package only the
    names in backup_manager.__all__ (and the config checks of backup_manager.config),
    and reach into no BackupManager internals (its folder, stores, outbox, copier)."""
    public = set(backup_manager.__all__)
    for name in HOSTS:
        tree = ast.parse((ROOT / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "backup_manager"):
                assert node.module in ("backup_manager", "backup_manager.config"), \
                    f"{name} imports {node.module}"
                if node.module == "backup_manager":
                    private = {a.name for a in node.names} - public
                    assert not private, f"{name} imports {sorted(private)}, not in __all__"
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
                assert not (isinstance(node.value, ast.Attribute) and
                            node.value.attr in ("manager", "backup_manager")), \
                    f"{name} reaches into the manager: {ast.unparse(node)}"


INTERNALS = {"folder", "store", "outbox", "copier", "cloud", "mirrors"}
