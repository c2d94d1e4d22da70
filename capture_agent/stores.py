"""Destinations for segments: a shared directory or an S3-compatible bucket.

Both share one small interface (``put``, ``exists``, ``read_receipt``) and the same
promise: a segment becomes visible under its final key only complete and verified at the
destination (size and sha256), never partially. Errors say whether retrying can help:
``StoreError`` (destination unreachable or misbehaving: retry) versus ``PermanentUploadError``
(the local file is gone or changed, or the key holds other content: retrying cannot help).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from shared.atomicfile import may_be_live, stale_temps
from shared.receipts import Receipt, parse_receipt, read_receipt, receipt_key
from shared.storage import Storage, sha256_file, validate_key

COPY_CHUNK_BYTES = 1024 * 1024
THROTTLED_CHUNK_BYTES = 64 * 1024
S3_MAX_SINGLE_PUT = 5 * 1024**3  # PutObject and CopyObject limit
#: An S3 upload goes to ``.<name>.<uuid>.part`` first (a key, not a file: no pid to use).
TEMP_SUFFIX = ".part"
_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")


# -- errors -------------------------------------------------------------------------------------
class StoreError(Exception):
    """The destination failed or could not be reached; the same upload may succeed later."""

#: A temporary file written to this recently may belong to a live copy by another agent
#: (a copy writes every chunk, at least every few seconds even bandwidth-limited).
LIVE_TEMP_S = 300.0


class StorageUnavailable(StoreError):
    """The destination is not there at all (unmounted share, endpoint down)."""


class PermanentUploadError(Exception):
    """This segment cannot be shipped as recorded; retrying cannot help."""


class SourceMissing(PermanentUploadError):
    pass


class SourceChanged(PermanentUploadError):
    pass


class DestinationConflict(PermanentUploadError):
    pass


class Cancelled(Exception):
    """The agent is stopping; the upload was abandoned (its temporary object is cleaned later)."""


# -- bandwidth ----------------------------------------------------------------------------------
class TokenBucket:
    """Limits bytes per second through the copy loop, allowing a burst of ``burst`` bytes."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else rate)
        if self.capacity <= 0:
            raise ValueError("burst must be positive")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def consume(self, amount: int, cancel: threading.Event | None = None) -> None:
        """Block until ``amount`` bytes may pass; raises Cancelled if ``cancel`` is set.

        Tokens are taken at once and a deficit is waited off, so float rounding can never
        make the loop spin on a wait too small to move the clock.
        """
        remaining = float(amount)
        while remaining > 0:
            with self._lock:
                self._refill()
                take = min(remaining, self.capacity)
                self._tokens -= take
                remaining -= take
                wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            if wait <= 0:
                continue
            if cancel is None:
                self._sleep(wait)
            elif cancel.wait(wait):
                raise Cancelled("upload cancelled")


class _Pacer:
    """What the copy loops share: the bandwidth limit and the stop signal."""

    def __init__(self, throttle: TokenBucket | None, cancel: threading.Event | None) -> None:
        self.throttle = throttle
        self.cancel = cancel

    @property
    def chunk(self) -> int:
        if self.throttle is None:
            return COPY_CHUNK_BYTES
        return max(4096, min(THROTTLED_CHUNK_BYTES, int(self.throttle.capacity)))

    def pass_bytes(self, amount: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("upload cancelled")
        if self.throttle is not None and amount:
            self.throttle.consume(amount, self.cancel)


def _open_source(path: Path, size: int) -> IO[bytes]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise SourceMissing(f"local segment {path} no longer exists") from None
    actual = os.fstat(handle.fileno()).st_size
    if actual != size:
        handle.close()
        raise SourceChanged(
            f"local segment {path} changed since it was recorded ({size} -> {actual} bytes)"
        )
    return handle


# -- interface ----------------------------------------------------------------------------------
class Store(Protocol):
    description: str

    def put(self, local_path: Path, key: str, sha256: str, size: int) -> None:
        """Copy ``local_path`` to ``key``, verified at the destination, final key last."""

    def exists(self, key: str, sha256: str) -> bool:
        """True when ``key`` already holds exactly this content (no need to copy again)."""

    def read_receipt(self, session_id: str, index: int) -> Receipt | None:
        """The workers' receipt for one segment, if written."""

    def cleanup(self, key: str) -> None:
        """Remove temporaries an interrupted upload of ``key`` left (after a crash)."""


# -- local directory ----------------------------------------------------------------------------
class LocalStore:
    """A directory (local disk or a mounted share) through ``shared.storage.Storage``.

    The root is never created unless asked: a share that is not mounted must look unreachable,
    not silently fill the Mac's own disk under the mount point.
    """

    def __init__(
        self,
        root: Path,
        *,
        create_root: bool = False,
        throttle: TokenBucket | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.storage = Storage(root)
        self.create_root = create_root
        self.description = str(self.storage.root)
        self._pacer = _Pacer(throttle, cancel)

    def _check_root(self) -> None:
        root = self.storage.root
        if self.create_root and not root.exists():
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise StorageUnavailable(
                f"storage root {root} is not a reachable directory (share not mounted?)"
            )

    def exists(self, key: str, sha256: str) -> bool:
        self._check_root()
        path = self.storage.path(key)
        return path.is_file() and sha256_file(path) == sha256

    def put(self, local_path: Path, key: str, sha256: str, size: int) -> None:
        self._check_root()
        final = self.storage.path(key)
        if final.exists():
            raise DestinationConflict(f"{key} already exists in storage with other content")
        self._remove_stale_temps(final)
        # One checksum pass, at the destination: what landed must be what was recorded. Only
        # when it is not is the source hashed too, to tell an edited source (permanent) from a
        # bad copy (retried). Hashing the source while copying as well cost a third pass.
        with _open_source(local_path, size) as source, self.storage.atomic_path(key) as tmp:
            copied = 0
            with tmp.open("wb") as dst:
                while chunk := source.read(self._pacer.chunk):
                    self._pacer.pass_bytes(len(chunk))
                    dst.write(chunk)
                    copied += len(chunk)
            if tmp.stat().st_size == size and sha256_file(tmp) == sha256:
                return
            if copied != size or sha256_file(local_path) != sha256:
                raise SourceChanged(f"local segment {local_path} changed since it was recorded")
            raise StoreError(f"verification of {key} at the destination failed")

    def cleanup(self, key: str) -> None:
        self._check_root()
        self._remove_stale_temps(self.storage.path(key))

    def _remove_stale_temps(self, final: Path) -> None:
        """Temporary files an interrupted earlier attempt (crash, SIGKILL) left behind; not
        one another agent is writing now (the same folder shipped twice)."""
        for stale in stale_temps(final):
            if not may_be_live(stale, untouched_s=LIVE_TEMP_S):
                stale.unlink(missing_ok=True)

    def read_receipt(self, session_id: str, index: int) -> Receipt | None:
        self._check_root()
        return read_receipt(self.storage, session_id, index)


# -- S3 -----------------------------------------------------------------------------------------
class _PacedReader:
    """A seekable request body that honours the bandwidth limit and the stop signal."""

    def __init__(self, handle: IO[bytes], pacer: _Pacer) -> None:
        self._handle = handle
        self._pacer = pacer

    def read(self, amount: int | None = -1) -> bytes:
        if amount is None or amount < 0:
            parts = []
            while chunk := self.read(self._pacer.chunk):
                parts.append(chunk)
            return b"".join(parts)
        chunk = self._handle.read(min(amount, self._pacer.chunk))
        self._pacer.pass_bytes(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, prefix.strip("/")


class S3Store:
    """An S3-compatible bucket: upload to a temporary key, verify, copy to the final key.

    Verification happens at the destination: HEAD must report the expected size and an ETag
    equal to the MD5 the agent computed (single-part uploads), or else the object is
    downloaded and hashed; the server-side copy is asked for a SHA-256 checksum which must
    match too. The final key therefore never holds partial or wrong content.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        throttle: TokenBucket | None = None,
        cancel: threading.Event | None = None,
        client: Any = None,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.description = url
        self._pacer = _Pacer(throttle, cancel)
        self._client = client or _make_client(endpoint_url, region)

    def _full(self, key: str) -> str:
        rel = validate_key(key)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except EndpointConnectionError as exc:
            raise StorageUnavailable(f"S3 endpoint unreachable: {exc}") from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(kwargs.get("Key", "")) from exc
            raise StoreError(f"S3 {operation} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 {operation} failed: {exc}") from exc

    def _head(self, full_key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._call("head_object", Key=full_key, ChecksumMode="ENABLED")
        except FileNotFoundError:
            return None
        return head

    def exists(self, key: str, sha256: str) -> bool:
        head = self._head(self._full(key))
        return head is not None and _head_matches(head, sha256)

    def put(self, local_path: Path, key: str, sha256: str, size: int) -> None:
        if size > S3_MAX_SINGLE_PUT:
            raise PermanentUploadError(
                f"{local_path} is larger than 5 GiB, the S3 single-upload limit; "
                "record shorter segments"
            )
        full = self._full(key)
        existing = self._head(full)
        if existing is not None:
            if _head_matches(existing, sha256, size):
                return
            raise DestinationConflict(f"s3://{self.bucket}/{full} already holds other content")
        self._remove_stale_temps(full)
        md5 = self._hash_source(local_path, sha256, size)
        folder, _, name = full.rpartition("/")
        temp = f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        temp = f"{folder}/{temp}" if folder else temp
        sha_b64 = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            with _open_source(local_path, size) as source:
                self._call(
                    "put_object",
                    Key=temp,
                    Body=_PacedReader(source, self._pacer),
                    ContentLength=size,
                    ContentMD5=base64.b64encode(md5).decode(),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=sha_b64,
                    Metadata={"sha256": sha256},
                )
            self._verify_temp(temp, sha256, md5, size)
            copied = self._call(
                "copy_object",
                Key=full,
                CopySource={"Bucket": self.bucket, "Key": temp},
                ChecksumAlgorithm="SHA256",
                MetadataDirective="COPY",
            )
            server_sha = copied.get("CopyObjectResult", {}).get("ChecksumSHA256")
            if server_sha and server_sha.split("-")[0] != sha_b64:
                self._delete(full)
                raise StoreError(f"S3 copy of {full} produced a different checksum")
        finally:
            self._delete(temp)

    def _hash_source(self, path: Path, sha256: str, size: int) -> bytes:
        """MD5 for Content-MD5/ETag checks; also proves the file is still what was recorded."""
        sha, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 - integrity, not security
        with _open_source(path, size) as handle:
            while chunk := handle.read(COPY_CHUNK_BYTES):
                sha.update(chunk)
                md5.update(chunk)
        if sha.hexdigest() != sha256:
            raise SourceChanged(f"local segment {path} changed since it was recorded")
        return md5.digest()

    def _verify_temp(self, temp: str, sha256: str, md5: bytes, size: int) -> None:
        head = self._head(temp)
        if head is None or int(head.get("ContentLength", -1)) != size:
            raise StoreError(f"S3 object {temp} is missing or has the wrong size after upload")
        etag = str(head.get("ETag", "")).strip('"')
        if _PLAIN_ETAG.fullmatch(etag):
            if etag != md5.hex():
                raise StoreError(f"S3 object {temp} does not match what was sent (ETag)")
            return
        # ETag is not an MD5 (e.g. SSE-KMS): hash what the server actually holds.
        body = self._call("get_object", Key=temp)["Body"]
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(COPY_CHUNK_BYTES), b""):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise StoreError(f"S3 object {temp} does not match what was sent (sha256)")

    def _delete(self, full_key: str) -> None:
        # A leftover temporary object is removed by the next attempt.
        with contextlib.suppress(StoreError, FileNotFoundError):
            self._call("delete_object", Key=full_key)

    def cleanup(self, key: str) -> None:
        self._remove_stale_temps(self._full(key))

    def _remove_stale_temps(self, full: str) -> None:
        folder, _, name = full.rpartition("/")
        prefix = f"{folder}/.{name}." if folder else f".{name}."
        listing = self._call("list_objects_v2", Prefix=prefix)
        for obj in listing.get("Contents", []):
            if str(obj["Key"]).endswith(TEMP_SUFFIX):
                self._delete(obj["Key"])

    def read_receipt(self, session_id: str, index: int) -> Receipt | None:
        try:
            body = self._call("get_object", Key=self._full(receipt_key(session_id, index)))["Body"]
        except FileNotFoundError:
            return None
        receipt = parse_receipt(body.read(64 * 1024 + 1))
        if receipt is None or receipt.session_id != session_id or receipt.index != index:
            return None
        return receipt

    def read_bytes(self, key: str) -> bytes:
        """Whole object (tests and tools)."""
        data: bytes = self._call("get_object", Key=self._full(key))["Body"].read()
        return data


def _head_matches(head: dict[str, Any], sha256: str, size: int | None = None) -> bool:
    if size is not None and int(head.get("ContentLength", -1)) != size:
        return False
    metadata = {str(k).lower(): v for k, v in (head.get("Metadata") or {}).items()}
    if metadata.get("sha256") == sha256:
        return True
    checksum = head.get("ChecksumSHA256")
    return bool(checksum) and checksum == base64.b64encode(bytes.fromhex(sha256)).decode()


def _make_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )


def make_store(
    storage: str,
    *,
    create_root: bool = False,
    endpoint_url: str | None = None,
    region: str | None = None,
    throttle: TokenBucket | None = None,
    cancel: threading.Event | None = None,
) -> LocalStore | S3Store:
    if storage.startswith("s3://"):
        return S3Store(
            storage, endpoint_url=endpoint_url, region=region, throttle=throttle, cancel=cancel
        )
    return LocalStore(Path(storage), create_root=create_root, throttle=throttle, cancel=cancel)


__all__ = [
    "Cancelled",
    "DestinationConflict",
    "LocalStore",
    "PermanentUploadError",
    "S3Store",
    "SourceChanged",
    "SourceMissing",
    "Store",
    "StoreError",
    "StorageUnavailable",
    "TokenBucket",
    "make_store",
]
