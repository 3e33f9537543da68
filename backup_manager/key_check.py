"""Key check: prove that the configured key opens the newest restore point, and every
backup it names, in each store of signed copies (mirrors, S3), before the day it is
needed. `key check` runs it; so does `drill --cloud`."""

from __future__ import annotations

from .catalog import read_valid
from .errors import BackupError, ConfigError, StoreUnreachable
from .formats import parse_backup_name, state_key
from .points import point_name, points_in, read_point
from .seal import signed

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .manager import BackupManager
    from .store import Store


def check_key(manager: BackupManager, *, cloud_only: bool = False) -> list[dict[str, Any]]:
    """Per store of signed copies (only S3 with `cloud_only`): store, ok, the newest point
    it holds (None: none yet), detail. Raises ConfigError when no key is configured."""
    stores = [s for _, s in manager.sources("cloud" if cloud_only else "auto") if signed(s)]
    if not stores:
        raise ConfigError("no key is configured (backup.key_file or backup.key_env), or no "
                          "mirror or S3 bucket" + (" (backup.cloud_enabled)" if cloud_only
                                                    else "") + " to hold signed copies")
    return [_check_store(store) for store in stores]


def _check_store(store: Store) -> dict[str, Any]:
    row: dict[str, Any] = {"store": store.label, "ok": False, "point": None, "detail": ""}
    try:
        complete, _ = points_in(store.list_names(""))
        if not complete:
            row.update(ok=True, detail="no restore point here yet: nothing to open")
            return row
        row["point"] = newest = max(complete)
        point = read_point(store, newest)
        for file_name, entry in sorted(point.files.items()):
            if entry is not None:
                key = state_key(file_name)
                read_valid(store, parse_backup_name(entry.backup, *key))
        row.update(ok=True, detail=f"opens {point_name(newest)} and the "
                                   f"{sum(e is not None for e in point.files.values())} "
                                   "backup(s) it names")
    except StoreUnreachable as exc:
        row["detail"] = str(exc)
    except (BackupError, ValueError) as exc:
        row["detail"] = f"the newest point, {point_name(row['point'] or 0)}, does not open: " \
                        f"{exc}"
    return row
