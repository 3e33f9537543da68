"""The package's logger, without importing logging until a message can show.

Until something imports logging, nothing has configured it, so INFO and DEBUG
messages would be dropped at the default WARNING level anyway: they are
skipped without the import, which costs a cron run more than a whole backup.
WARNING and above always go through logging.
"""

from __future__ import annotations

import sys

NAME = "backup_manager"


def _logger():  # noqa: ANN202
    import logging

    return logging.getLogger(NAME)


def _configured() -> bool:
    return "logging" in sys.modules


def debug(msg: str, *args: object) -> None:
    if _configured():
        _logger().debug(msg, *args)


def info(msg: str, *args: object) -> None:
    if _configured():
        _logger().info(msg, *args)


def warning(msg: str, *args: object) -> None:
    _logger().warning(msg, *args)


def error(msg: str, *args: object) -> None:
    _logger().error(msg, *args)


def exception(msg: str, *args: object) -> None:
    """ERROR with the traceback of the exception being handled."""
    _logger().exception(msg, *args)
