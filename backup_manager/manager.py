"""BackupManager: the entry point. It holds what the configuration names (the
backups folder, mirrors, the S3 bucket, the policy); its methods live by job in
backing (backups and restore points), restoring and upkeep (verify, prune, sync).

Local backups are taken under an inter-process lock on the backups folder;
copies to mirror folders and S3 are made outside it, through the outbox, so a
slow endpoint never blocks a local backup and a failed copy is retried later.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from .backing import Backing
from .claiming import Claiming
from .config import (
    MAX_STATE_BOUND,
    MIN_STATE_BOUND,
    backup_options,
    distinct_file_names,
    load_config_file,
    object_lock,
    timeout,
    whole_number,
)
from .copies import CLOUD_TARGET, Copier
from .errors import ConfigError
from .folder import BackupsFolder
from .formats import sha256_hex
from .local import LocalStore
from .restoring import Restoring
from .retention import RetentionPolicy
from .seal import Sealing, seal_stores
from .store import MAX_STATE_BYTES
from .upkeep import Upkeep

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .store import Store


class BackupManager(Backing, Claiming, Restoring, Upkeep):
    """Backups of state files in `backup_dir`, optionally mirrored and sent to S3.

    The first four arguments are the original specification's; everything newer
    is keyword-only. Nothing touches the disk until the first backup or restore,
    so a broken backups folder never stops the host from starting.
    """

    def __init__(self, backup_dir: str | Path = "backups", retention_days: int = 30,
                 cloud_enabled: bool = False, s3_bucket: str | None = None, *,
                 keep_last: int = 10, keep_daily: int = 30, durable: bool = True,
                 lock_timeout: float = 10.0, state_files: Iterable[str | Path] = (),
                 mirror_dirs: Iterable[str | Path] = (), s3_prefix: str = "dalio-lite-backups",
                 s3_endpoint_url: str | None = None, s3_region: str | None = None,
                 s3_sse: str | None = None, s3_kms_key_id: str | None = None,
                 s3_expected_bucket_owner: str | None = None,
                 s3_client_config: Mapping[str, Any] | None = None,
                 s3_object_lock: Mapping[str, Any] | None = None,
                 max_state_bytes: int = MAX_STATE_BYTES,
                 clock: Callable[[], datetime] | None = None, require_fence: bool = False,
                 sealing: Sealing | None = None):
        try:
            self.policy = RetentionPolicy(keep_last, keep_daily, retention_days)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(cloud_enabled, bool):
            raise ConfigError(f"cloud_enabled must be true or false, got {cloud_enabled!r}")
        if cloud_enabled and not s3_bucket:
            raise ConfigError("cloud_enabled is true but s3_bucket is not set")
        self.backup_dir = Path(backup_dir)
        self.retention_days = retention_days
        self.cloud_enabled = cloud_enabled
        self.s3_bucket = s3_bucket
        self.durable = bool(durable)
        self.require_fence = bool(require_fence)
        """Refuse what needs a claim (orders) when a copy target cannot be asked."""
        self.max_state_bytes = whole_number("max_state_bytes", max_state_bytes,
                                            minimum=MIN_STATE_BOUND, maximum=MAX_STATE_BOUND)
        self.state_files = distinct_file_names("state_files", [Path(p) for p in state_files])
        self.folder = BackupsFolder(self.backup_dir, durable=self.durable,
                                    lock_timeout=timeout("lock_timeout", lock_timeout),
                                    clock=clock or (lambda: datetime.now(UTC)),
                                    max_bytes=self.max_state_bytes)
        self.store, self.outbox = self.folder.store, self.folder.outbox
        self.mirrors = {_mirror_id(Path(d)): LocalStore(d, durable=self.durable,
                                                        max_bytes=self.max_state_bytes)
                        for d in mirror_dirs}
        lock = object_lock("s3_object_lock", s3_object_lock, cloud_enabled)
        self.cloud = None
        if cloud_enabled:
            from .s3 import S3Store

            self.cloud = S3Store(s3_bucket, s3_prefix, endpoint_url=s3_endpoint_url,
                                 region=s3_region, sse=s3_sse, kms_key_id=s3_kms_key_id,
                                 expected_owner=s3_expected_bucket_owner,
                                 client_config=dict(s3_client_config or {}),
                                 max_bytes=self.max_state_bytes, object_lock=lock)
        self.mirrors, self.cloud = seal_stores(self.mirrors, self.cloud, sealing,
                                               lambda: self.writer, self.backup_dir,
                                               self.durable)
        targets: dict[str, Store] = dict(self.mirrors)
        if self.cloud is not None:
            targets[CLOUD_TARGET] = self.cloud
        self.copier = Copier(self.store, self.outbox, targets)
        self.seen_sequence = 0
        """The highest restore point number seen in any store by this manager."""
        self._batch: list[dict[str, tuple[str, str, datetime]]] = []
        self._writer: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path, *,
                    base_dir: str | Path | None = None, **overrides: Any) -> BackupManager:
        """Build from a whole configuration: a mapping with a `backup:` key, or a
        config.yaml path (whose folder then anchors relative paths)."""
        if isinstance(config, (str, Path)):
            base_dir = Path(config).resolve().parent
            config = load_config_file(config)
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        options = backup_options(config.get("backup"), base)
        options.update(overrides)
        return cls(**options)

    def __repr__(self) -> str:
        return f"BackupManager({str(self.backup_dir)!r})"


def _mirror_id(folder: Path) -> str:
    return "mirror-" + sha256_hex(os.fsencode(os.path.abspath(folder)))[:12]
