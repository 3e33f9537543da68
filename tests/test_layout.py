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
