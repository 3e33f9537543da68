"""The `backup:` section of config.yaml, checked key by key.

Relative paths resolve against the folder holding config.yaml, never the
working directory, so cron and a dashboard see the same files. The checks
(`check_keys`, `number`, ...) are public so a host checks its own sections the
same way, with errors that name the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError, MissingDependency
from .objectlock import MAX_LOCK_DAYS, MODES, ObjectLock
from .retention import MAX_DAYS

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BACKUP_DEFAULTS", "MAX_DAYS", "backup_options", "check_keys",
           "dashboard_remote_restore", "flag", "host_lock", "load_config_file", "number",
           "object_lock", "path_list", "text_or_none", "timeout", "whole_number"]

BACKUP_DEFAULTS: dict[str, Any] = {
    "dir": "backups",
    "state_files": [],
    "retention_days": 30,
    "keep_last": 10,
    "keep_daily": 30,
    "durable": True,
    "lock_timeout_seconds": 10,
    "cloud_enabled": False,
    "s3_bucket": None,
    "s3_prefix": "dalio-lite-backups",
    "s3_endpoint_url": None,
    "s3_region": None,
    "s3_sse": None,
    "s3_kms_key_id": None,
    "s3_expected_bucket_owner": None,
    "s3_connect_timeout_seconds": 1,
    "s3_read_timeout_seconds": 2,
    "s3_max_attempts": 1,
    "s3_object_lock": None,
    "mirror_dirs": [],
    "status_hook": None,
    "require_fence": False,
    "host_lock": None,
    "host_lock_timeout_seconds": 60,
    "dashboard_remote_restore": False,
    "max_state_bytes": 16 * 1024 * 1024,
    "key_file": None,
    "key_env": None,
    "encrypt": False,
}
MIN_STATE_BOUND = 64 * 1024
"""The least backup.max_state_bytes: sidecars and restore points are read under the same
bound (DalioLite's points are under 1 KiB)."""
MAX_STATE_BOUND = 1024 ** 3
SSE_MODES = (None, "AES256", "aws:kms")
MAX_TIMEOUT = 3600.0


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping; ConfigError names the file and the problem."""
    try:
        import yaml
    except ImportError:
        raise MissingDependency("reading config.yaml needs PyYAML: pip install PyYAML") from None
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return doc


def check_keys(section: Mapping[str, Any], valid: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(section) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(map(str, unknown))} in {where}; "
                          f"valid keys: {', '.join(valid)}")


def whole_number(key: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or \
            (maximum is not None and value > maximum):
        most = f" and <= {maximum:,}" if maximum is not None else ""
        raise ConfigError(f"{key} must be a whole number >= {minimum}{most}, got {value!r}")
    return value


def number(key: str, value: Any, minimum: float = 0.0, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum \
            or value != value or (maximum is not None and value > maximum):
        most = f" and <= {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{key} must be a number >= {minimum:g}{most}, got {value!r}")
    return float(value)


def timeout(key: str, value: Any) -> float:
    """Seconds to wait: more than none, at most an hour."""
    seconds = number(key, value, maximum=MAX_TIMEOUT)
    if seconds <= 0:
        raise ConfigError(f"{key} must be a number of seconds > 0 and <= {MAX_TIMEOUT:g}, "
                          f"got {value!r}")
    return seconds


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def text_or_none(key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{key} must be a non-empty string or null, got {value!r}")
    return value


def path_list(key: str, value: Any, base: Path) -> list[Path]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of paths, got {value!r}")
    return [base / v for v in value]


def distinct_file_names(key: str, paths: list[Path]) -> list[Path]:
    """Backups are named by the file name alone: two state files called the same
    would share (and prune) each other's backups."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise ConfigError(f"{key}: {seen[path.name]} and {path} have the same file name "
                              f"{path.name!r}; their backups would share names: rename one")
        seen[path.name] = path
    return paths


def backup_options(section: Mapping[str, Any] | None, base_dir: Path) -> dict[str, Any]:
    """BackupManager keyword arguments from a `backup:` section (None means all defaults)."""
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"backup must be a mapping of keys, got {section!r}")
    check_keys(section, BACKUP_DEFAULTS, "backup")
    s = {**BACKUP_DEFAULTS, **section}
    where = "backup."
    directory = s["dir"]
    if not isinstance(directory, str) or not directory:
        raise ConfigError(f"{where}dir must be a folder path, got {directory!r}")
    sse = s["s3_sse"]
    if sse not in SSE_MODES:
        raise ConfigError(f"{where}s3_sse must be null, AES256 or aws:kms, got {sse!r}")
    status_hook(section)  # no longer used; checked so a config from before stays valid
    host_lock(section, base_dir)  # read by the Site; checked here too
    dashboard_remote_restore(section)  # read by the Backups page; checked here too
    options = {
        "backup_dir": base_dir / directory,
        "state_files": distinct_file_names(where + "state_files", path_list(
            where + "state_files", s["state_files"], base_dir)),
        "retention_days": whole_number(where + "retention_days", s["retention_days"],
                                       maximum=MAX_DAYS),
        "keep_last": whole_number(where + "keep_last", s["keep_last"], maximum=MAX_DAYS),
        "keep_daily": whole_number(where + "keep_daily", s["keep_daily"], maximum=MAX_DAYS),
        "durable": flag(where + "durable", s["durable"]),
        "require_fence": flag(where + "require_fence", s["require_fence"]),
        "max_state_bytes": whole_number(where + "max_state_bytes", s["max_state_bytes"],
                                        minimum=MIN_STATE_BOUND, maximum=MAX_STATE_BOUND),
        "lock_timeout": timeout(where + "lock_timeout_seconds", s["lock_timeout_seconds"]),
        "cloud_enabled": flag(where + "cloud_enabled", s["cloud_enabled"]),
        "mirror_dirs": path_list(where + "mirror_dirs", s["mirror_dirs"], base_dir),
        "s3_prefix": s["s3_prefix"] if s["s3_prefix"] is not None else "",
        "s3_sse": sse,
    }
    for key in ("s3_bucket", "s3_endpoint_url", "s3_region", "s3_kms_key_id",
                "s3_expected_bucket_owner"):
        options[key] = text_or_none(where + key, s[key])
    if not isinstance(options["s3_prefix"], str):
        raise ConfigError(f"{where}s3_prefix must be a string, got {s['s3_prefix']!r}")
    options["s3_client_config"] = {
        "connect_timeout": timeout(where + "s3_connect_timeout_seconds",
                                   s["s3_connect_timeout_seconds"]),
        "read_timeout": timeout(where + "s3_read_timeout_seconds", s["s3_read_timeout_seconds"]),
        "retries": {"mode": "standard",
                    "total_max_attempts": whole_number(where + "s3_max_attempts",
                                                       s["s3_max_attempts"], minimum=1,
                                                       maximum=10)},
    }
    if options["cloud_enabled"] and not options["s3_bucket"]:
        raise ConfigError(f"{where}cloud_enabled is true but {where}s3_bucket is not set")
    options["s3_object_lock"] = object_lock(where + "s3_object_lock", s["s3_object_lock"],
                                            options["cloud_enabled"])
    options["sealing"] = sealing(s, base_dir)
    return options


def object_lock(key: str, value: Any, cloud_enabled: bool) -> ObjectLock | None:
    """`backup.s3_object_lock` ({mode: GOVERNANCE|COMPLIANCE, days: N}, or null): the
    lock every object put in S3 gets. Asked without cloud backup it would protect
    nothing, so that is an error too."""
    if value is None:
        return None
    if isinstance(value, ObjectLock):
        value = value._asdict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping {{mode: GOVERNANCE or COMPLIANCE, days: "
                          f"N}}, or null, got {value!r}")
    check_keys(value, {"mode": None, "days": None}, key)
    mode, days = value.get("mode"), value.get("days")
    if mode not in MODES:
        raise ConfigError(f"{key}.mode must be GOVERNANCE or COMPLIANCE, got {mode!r}")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_LOCK_DAYS:
        raise ConfigError(f"{key}.days must be a whole number of days from 1 to "
                          f"{MAX_LOCK_DAYS:,}, got {days!r}")
    if not cloud_enabled:
        raise ConfigError(f"{key} is set but cloud backup is off (backup.cloud_enabled: "
                          "false): it locks copies in S3 only; turn cloud backup on, or "
                          "remove the key")
    return ObjectLock(mode, days)


_ENV_NAME = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"


def sealing(s: Mapping[str, Any], base_dir: Path) -> Any:
    """What `backup.key_file`, `backup.key_env` and `backup.encrypt` say: a Sealing (the
    copies in mirrors and S3 are signed, and maybe encrypted), or None (no key)."""
    key_file = text_or_none("backup.key_file", s.get("key_file"))
    key_env = text_or_none("backup.key_env", s.get("key_env"))
    encrypt = flag("backup.encrypt", s.get("encrypt", False))
    if key_file is not None and key_env is not None:
        raise ConfigError("backup.key_file and backup.key_env are both set: name one key source")
    if key_env is not None and (key_env[0].isdigit() or set(key_env) - set(_ENV_NAME)):
        raise ConfigError(f"backup.key_env must name an environment variable (letters, digits, "
                          f"_), got {key_env!r}; the key itself never goes in config.yaml")
    if key_file is None and key_env is None:
        if encrypt:
            raise ConfigError("backup.encrypt is true but no key is configured: set "
                              "backup.key_file (python -m backup_manager key init makes one) "
                              "or backup.key_env")
        return None
    from .keys import KeySource
    from .seal import Sealing
    return Sealing(KeySource(file=base_dir / key_file if key_file else None, env=key_env),
                   encrypt=encrypt)


def host_lock(section: Mapping[str, Any] | None, base_dir: Path) -> tuple[Path | None, float]:
    """The host's run lock named by `backup.host_lock` (None: the host has none, or does
    not say) and how long the command line's restore waits for it
    (`backup.host_lock_timeout_seconds`). A manual restore takes that lock, so it never
    interleaves with a running daily check."""
    section = section if isinstance(section, Mapping) else {}
    path = text_or_none("backup.host_lock", section.get("host_lock"))
    wait = timeout("backup.host_lock_timeout_seconds",
                   section.get("host_lock_timeout_seconds",
                               BACKUP_DEFAULTS["host_lock_timeout_seconds"]))
    return (base_dir / path if path is not None else None), wait


def state_dir_of(config: Mapping[str, Any], base_dir: Path) -> Path:
    """The host's state folder: `state.dir` of config.yaml (default `state`), against
    the config's folder."""
    section = config.get("state")
    folder = section.get("dir") if isinstance(section, Mapping) else None
    if folder is None:
        folder = "state"
    if not isinstance(folder, str) or not folder:
        raise ConfigError(f"state.dir must be a folder path, got {folder!r}")
    return base_dir / folder


def dashboard_remote_restore(section: Mapping[str, Any] | None) -> bool:
    """`backup.dashboard_remote_restore`: whether the Backups page may restore while it
    is served beyond localhost. Off by default: anyone who reaches such a page could
    roll the bot's state back, so the operator turns it on only behind authentication."""
    section = section if isinstance(section, Mapping) else {}
    return flag("backup.dashboard_remote_restore", section.get(
        "dashboard_remote_restore", BACKUP_DEFAULTS["dashboard_remote_restore"]))


def status_hook(section: Mapping[str, Any] | None) -> str | None:
    """`backup.status_hook`, from before the Site read the host's record itself: still
    accepted (a config from then keeps working), checked, and not used."""
    section = section if isinstance(section, Mapping) else {}
    hook = section.get("status_hook")
    if hook is not None and (not isinstance(hook, str) or hook.count(":") != 1
                             or not all(hook.split(":"))):
        raise ConfigError(f"backup.status_hook must be 'module:function', got {hook!r}")
    return hook
