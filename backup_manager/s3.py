"""The S3 store: backups under s3://{bucket}/{prefix}/, for when the machine is gone.

The Store contract (store.py), as LocalStore offers it. boto3 is imported on
first use only. The client never deletes: cloud history belongs to the bucket's
own lifecycle rules, versioning or Object Lock. With an ObjectLock every object
is put locked, and `protection()` reads what the bucket itself offers.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import UTC, datetime

from .errors import CloudError, CloudUnavailable, IntegrityError, MissingDependency, UploadConflict
from .objectlock import ObjectLock, Protection, refused_text
from .store import MAX_STATE_BYTES, Store, too_large

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any


# One attempt, bounded: a dead, silent or unreachable endpoint costs a backup call
# about 2 s. Retrying is the outbox's job: what fails now goes with the next backup
# or `sync`, so an in-call retry would only double the wait of the trading run.
DEFAULT_CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 1},
    "connect_timeout": 1,
    "read_timeout": 2,
}
_RETRYABLE_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "BadDigest", "XAmzContentSHA256Mismatch",
}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def import_boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise MissingDependency(
            "cloud backup needs boto3, which is not installed: "
            "pip install 'daliolite[s3]'  (or: pip install boto3)"
        ) from None
    return boto3


class S3Store(Store):
    """Objects named `{prefix}/{name}` in one bucket. Names never contain '/'."""

    def __init__(self, bucket: str, prefix: str = "dalio-lite-backups", *,
                 endpoint_url: str | None = None, region: str | None = None,
                 sse: str | None = None, kms_key_id: str | None = None,
                 expected_owner: str | None = None,
                 client_config: dict[str, Any] | None = None, client: Any = None,
                 max_bytes: int = MAX_STATE_BYTES, object_lock: ObjectLock | None = None):
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.client_config = {**DEFAULT_CLIENT_CONFIG, **(client_config or {})}
        self._client = client
        self._client_lock = threading.Lock()
        self._owner = {"ExpectedBucketOwner": expected_owner} if expected_owner else {}
        self._put_extra = dict(self._owner)
        if sse:
            self._put_extra["ServerSideEncryption"] = sse
        if kms_key_id:
            self._put_extra["SSEKMSKeyId"] = kms_key_id
        self.object_lock = object_lock

    def __repr__(self) -> str:
        return f"S3Store({self.label!r})"

    @property
    def label(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        """One client per store, made on first use; boto3 clients are thread-safe."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        boto3 = import_boto3()
        from botocore.config import Config

        options = dict(self.client_config)
        if self.endpoint_url:
            # MinIO, R2, B2 and older stores reject the CRC32 trailers boto3 adds by default.
            options.setdefault("request_checksum_calculation", "when_required")
            options.setdefault("response_checksum_validation", "when_required")
        client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            config=Config(**options))
        client.meta.events.register_last("before-call.s3", _no_expect_continue)
        return client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def list_names(self, prefix: str = "") -> list[str]:
        """Names under the prefix; keys that would not be plain file names are ignored."""
        start = self.key(prefix)
        cut = len(self.key(""))
        names = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, **self._owner)
            for page in pages:
                for obj in page.get("Contents", ()):
                    name = obj["Key"][cut:]
                    if _plain_name(name):
                        names.append(name)
        except Exception as exc:
            raise translate_error(exc, f"listing {self.label}") from None
        return names

    def scan(self) -> tuple[list[str], list[str]]:
        return self.list_names(""), []

    def prepare(self) -> None:
        pass  # a bucket is created by its owner, never by a backup

    def path(self, name: str) -> None:
        return None

    def mtime(self, name: str) -> None:
        return None

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes, checked against S3's stored checksum; None if missing."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key(name),
                                           ChecksumMode="ENABLED", **self._owner)
            size = reply.get("ContentLength", 0)
            # Not `with body`: that reads the raw stream, past botocore's checksum check.
            body = reply["Body"]
            try:
                if max_bytes is not None and max_bytes < self.max_bytes and size > max_bytes:
                    return body.read(max_bytes + 1)
                if size > self.max_bytes:  # closed unread: never downloaded
                    raise too_large(self, name, size)
                # By the size S3 reports (a read allocates what it asks for), then one
                # more read sees the end, where botocore checks length and checksum.
                data = body.read(size + 1)
                data += body.read(1) if len(data) <= size else b""
            finally:
                body.close()
            if len(data) > self.max_bytes:
                raise too_large(self, name, len(data))
        except IntegrityError:
            raise
        except Exception as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            if _is_checksum_error(exc):
                raise IntegrityError("checksum mismatch", f"{self.label}/{name}: S3's stored "
                                     "checksum does not match the downloaded bytes") from None
            raise translate_error(exc, f"downloading {self.label}/{name}") from None
        stored = reply.get("ChecksumSHA256")
        if stored and "-" not in stored and stored != _b64_sha256(data):
            raise IntegrityError("checksum mismatch",
                                 f"{self.label}/{name}: S3's stored checksum does not match")
        return data

    def _head(self, name: str, **extra: Any) -> dict[str, Any] | None:
        """HeadObject's answer for `name`; None if it is missing."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(name),
                                           **extra, **self._owner)
        except Exception as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise translate_error(exc, f"checking {self.label}/{name}") from None

    def written_at(self, name: str) -> datetime | None:
        reply = self._head(name)
        return None if reply is None else reply["LastModified"].astimezone(UTC)

    def stored_checksum(self, name: str) -> str | None:
        """S3's stored SHA-256 (base64) of an object; None if missing or not recorded."""
        reply = self._head(name, ChecksumMode="ENABLED")
        return None if reply is None else reply.get("ChecksumSHA256")

    def write(self, name: str, data: bytes) -> None:
        """Upload once; S3 verifies the SHA-256 on arrival and never overwrites a key."""
        digest = _b64_sha256(data)
        lock = self.object_lock.put_parameters(datetime.now(UTC)) if self.object_lock else {}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(name), Body=data,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=digest, IfNoneMatch="*",
                **self._put_extra, **lock)
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412"):
                self._check_existing(name, data, digest)
                return
            if lock and _no_object_lock(exc):
                raise CloudError(refused_text(f"uploading {self.label}/{name}",
                                              self.object_lock)) from None
            raise translate_error(exc, f"uploading {self.label}/{name}") from None

    def protection(self) -> Protection:
        """The bucket's versioning and Object Lock, as it answers (never raises: what
        cannot be read is None, and `unread` says why)."""
        locking, retention, unread = None, None, None
        try:
            reply = self.client.get_object_lock_configuration(Bucket=self.bucket, **self._owner)
            config = reply.get("ObjectLockConfiguration", {})
            locking = config.get("ObjectLockEnabled") == "Enabled"
            default = config.get("Rule", {}).get("DefaultRetention")
            if default:
                # Days or Years: some stores answer 0 for the one not set.
                retention = (default.get("Mode"), default.get("Days") or None,
                             default.get("Years") or None)
        except Exception as exc:
            if _error_code(exc) == "ObjectLockConfigurationNotFoundError":
                locking = False
            else:
                error = translate_error(exc, "reading its Object Lock configuration")
                if isinstance(error, CloudUnavailable):  # one timeout is enough
                    return Protection(None, None, None, self.object_lock, str(error))
                unread = str(error)
        if locking:  # Object Lock keeps versioning on for good: no need to ask
            return Protection("Enabled", True, retention, self.object_lock, unread)
        try:
            reply = self.client.get_bucket_versioning(Bucket=self.bucket, **self._owner)
            versioning = reply.get("Status") or "off"
        except Exception as exc:
            versioning = None
            unread = "; ".join(filter(None, (unread, str(translate_error(
                exc, "reading its versioning")))))
        return Protection(versioning, locking, retention, self.object_lock, unread)

    def lock_of(self, name: str) -> tuple[str, datetime] | None:
        """(mode, retain-until) of the object's current version; None if it is not
        locked, or missing. HeadObject, since GetObjectRetention is not everywhere."""
        reply = self._head(name)
        if reply is None:
            return None
        mode = reply.get("ObjectLockMode")
        until = reply.get("ObjectLockRetainUntilDate")
        return (mode, until) if mode and until else None

    def _check_existing(self, name: str, data: bytes, digest: str) -> None:
        stored = self.stored_checksum(name)
        if stored is None or "-" in stored:
            # A store that keeps no SHA-256: compare the bytes themselves.
            try:
                if self.read(name) == data:
                    return
            except IntegrityError:  # too large, or damaged: other bytes all the same
                pass
        elif stored == digest:
            return
        raise UploadConflict(f"{self.label}/{name} exists with other content; not overwritten")


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and "\x00" not in name \
        and name not in (".", "..")


def _no_object_lock(exc: Exception) -> bool:
    """Whether a PUT was refused because the bucket has no Object Lock (AWS and moto
    answer 400 InvalidRequest, "Bucket is missing Object Lock Configuration")."""
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
    return _error_code(exc) == "InvalidRequest" and \
        "objectlock" in message.lower().replace(" ", "")


def _is_checksum_error(exc: Exception) -> bool:
    from botocore.exceptions import FlexibleChecksumError

    return isinstance(exc, FlexibleChecksumError)


def _no_expect_continue(params: dict[str, Any], **_: Any) -> None:
    # botocore asks first ("Expect: 100-continue") and a silent server makes it wait
    # a second for an answer; state files are small, so send them straight away.
    params["headers"].pop("Expect", None)


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "")) or None
    return None


def translate_error(exc: Exception, doing: str) -> CloudError:
    """Map a botocore failure to CloudUnavailable (worth retrying) or CloudError."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, MissingDependency):
        return CloudError(f"{doing}: {exc}")
    code = _error_code(exc)
    if code is not None:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)  # type: ignore[attr-defined]
        message = exc.response.get("Error", {}).get("Message", "")  # type: ignore[attr-defined]
        kind = CloudUnavailable if status >= 500 or code in _RETRYABLE_CODES else CloudError
        return kind(f"{doing}: {code} {message}".rstrip())
    from botocore import exceptions as bx

    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return CloudError(f"{doing}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role")
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError,
                        OSError)):
        return CloudUnavailable(f"{doing}: {exc}")
    return CloudError(f"{doing}: {type(exc).__name__}: {exc}")
