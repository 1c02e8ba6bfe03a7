"""Bundle files, named by the sha256 of their bytes (`ab/abcdef...`), in a directory (the
default) or in an S3-compatible object store (`s3://BUCKET[/PREFIX]`, the large deployment).

A blob is complete before its name exists (a directory writes a temp file, fsyncs and
renames it; an S3 PUT is atomic), and is written before the database row that points at
it is committed, so a row never names a missing blob. Same bytes, same name: a second
write is a no-op. Reads stream in chunks. Every operation is timed, and failures counted,
in the server's metrics (`BlobError` is what callers see of any store failure).

A store that accepts connections and never answers, or a directory on a hung mount, must
not hold the server (issue 21). Every operation runs in the store's own threads under one
deadline (`Deadlines.operation_seconds`; an S3 read timeout alone was 30 s per read, three
tries); a caller waits at most that long. After `breaker_failures` failures in a row the
store's circuit breaker opens: for `breaker_open_seconds` every operation fails at once
(BlobError with `retry_after`, answered 503 with Retry-After), then one call tries the store
again and its outcome closes or reopens the breaker. A missing blob is an answer, not a
failure.

Each store carries a marker (`.posdiag-store`) holding a random id that the database
records too: a server whose store has another marker, or none while the database names
one, is not looking at the store the rows were written to (see cli `serve`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remote.server.metrics import Metrics

CHUNK = 64 * 1024
log = logging.getLogger("posdiag.blobs")
MARKER = ".posdiag-store"


class BlobError(Exception):
    """The blob store failed (unreachable, refused, too slow, missing blob); `retry_after`:
    seconds a client should wait before it tries again."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Deadlines:
    """How long a store may take, and when to stop asking it ([server.blobs])."""

    operation_seconds: float = 10.0
    breaker_failures: int = 3
    breaker_open_seconds: float = 5.0
    workers: int = 32  # store calls in flight at once; more fail at once (the store is hung)


class Breaker:
    """Closed until `failures` failures in a row; then open for `open_seconds`, failing every
    call at once; then half-open: one call is let through, and its outcome decides."""

    def __init__(self, failures: int, open_seconds: float) -> None:
        self.failures, self.open_seconds = failures, open_seconds
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._open_until = 0.0
        self._trying = False

    @property
    def failing(self) -> bool:
        return self._in_a_row >= self.failures

    def wait(self) -> float:
        """Seconds the breaker stays open (0: a call may be tried); asks nothing, changes nothing."""
        with self._lock:
            return max(0.0, self._open_until - time.monotonic()) if self.failing else 0.0

    def admit(self) -> float:
        """0 when a call may go to the store; else seconds until one may."""
        with self._lock:
            if not self.failing:
                return 0.0
            wait = self._open_until - time.monotonic()
            if wait > 0:
                return wait
            if self._trying:  # half-open: one trial at a time
                return 1.0
            self._trying = True
            return 0.0

    def record(self, answered: bool) -> None:
        with self._lock:
            self._trying = False
            self._in_a_row = 0 if answered else self._in_a_row + 1
            if self.failing:
                self._open_until = time.monotonic() + self.open_seconds


def check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("not a sha256 hex digest")
    return digest


class BlobStore:
    """The interface; a subclass implements the underscored methods."""

    kind = ""

    def __init__(self, metrics: Metrics | None = None, deadlines: Deadlines | None = None) -> None:
        self.metrics = metrics
        self.deadlines = deadlines or Deadlines()
        self.breaker = Breaker(self.deadlines.breaker_failures, self.deadlines.breaker_open_seconds)
        self._pool = ThreadPoolExecutor(self.deadlines.workers, thread_name_prefix="blob")
        self._slots = threading.BoundedSemaphore(self.deadlines.workers)

    def put(self, data: bytes) -> str:
        """Store `data` (nothing if already there); its sha256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        self._timed("put", self._put, digest, data)
        return digest

    def get(self, digest: str) -> bytes:
        return b"".join(self.stream(digest))

    def stream(self, digest: str) -> Iterator[bytes]:
        """The blob in chunks; it is opened (and a failure raised) before this returns."""
        return self._guarded(self._timed("get", self._open, check_digest(digest)), digest)

    def _guarded(self, chunks: Iterator[bytes], digest: str) -> Iterator[bytes]:
        try:
            yield from chunks
        except BlobError:
            raise
        except Exception as exc:
            self._failed("get")
            raise BlobError(f"{self.kind} blob store: reading {digest[:12]}: {exc}") from exc

    def exists(self, digest: str) -> bool:
        return bool(self._timed("head", self._exists, check_digest(digest)))

    def delete(self, digest: str) -> None:
        self._timed("delete", self._delete, check_digest(digest))

    def marker(self, create: bool) -> str | None:
        """This store's id; made (if `create`) when it has none."""
        found = self._timed("marker", self._read_marker)
        if found is None and create:
            self._timed("marker", self._write_marker, uuid.uuid4().hex)
            found = self._timed("marker", self._read_marker)
        return found

    def describe(self) -> str:
        raise NotImplementedError

    def _timed(self, op: str, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in the store's threads within the deadline, through the breaker."""
        wait = self.breaker.admit()
        if wait:
            if self.metrics is not None:
                self.metrics.blob_refused(op)
            raise BlobError(f"{self.kind} blob store is failing: {op} not tried for {wait:.0f} s more", math.ceil(wait))
        if not self._slots.acquire(blocking=False):
            self.breaker.record(False)
            self._failed(op)
            raise BlobError(f"{self.kind} blob store: {self.deadlines.workers} calls are already waiting on it")
        started = time.perf_counter()
        try:
            result = self._pool.submit(self._in_slot, fn, *args).result(timeout=self.deadlines.operation_seconds)
        except FutureTimeout:
            self._failed(op)
            self.breaker.record(False)
            log.warning("%s blob store: %s took longer than %g s", self.kind, op, self.deadlines.operation_seconds)
            raise BlobError(f"{self.kind} blob store: {op}: no answer within {self.deadlines.operation_seconds:g} s") from None
        except Exception as exc:
            self._failed(op)
            self.breaker.record(self._missing(exc))
            if isinstance(exc, BlobError):
                raise
            if not self._missing(exc):
                log.warning("%s blob store: %s failed: %s", self.kind, op, exc)
            raise BlobError(f"{self.kind} blob store: {op}: {exc}") from exc
        finally:
            if self.metrics is not None:
                self.metrics.blob_seconds(op, time.perf_counter() - started)
        self.breaker.record(True)
        return result

    def _in_slot(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        finally:
            self._slots.release()

    def _missing(self, exc: BaseException) -> bool:
        """The store answered that the blob is not there: an answer, not a failure of the store."""
        return isinstance(exc, FileNotFoundError)

    def _failed(self, op: str) -> None:
        if self.metrics is not None:
            self.metrics.blob_error(op)

    def _put(self, digest: str, data: bytes) -> None:
        raise NotImplementedError

    def _open(self, digest: str) -> Iterator[bytes]:
        raise NotImplementedError

    def _exists(self, digest: str) -> bool:
        raise NotImplementedError

    def _delete(self, digest: str) -> None:
        raise NotImplementedError

    def _read_marker(self) -> str | None:
        raise NotImplementedError

    def _write_marker(self, value: str) -> None:
        raise NotImplementedError


class DirectoryBlobs(BlobStore):
    kind = "directory"

    def __init__(self, root: Path, metrics: Metrics | None = None, deadlines: Deadlines | None = None) -> None:
        super().__init__(metrics, deadlines)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / check_digest(digest)

    def _put(self, digest: str, data: bytes) -> None:
        final = self.path(digest)
        if final.exists():
            return
        final.parent.mkdir(exist_ok=True)
        _write_durably(final, data)

    def _open(self, digest: str) -> Iterator[bytes]:
        fh = self.path(digest).open("rb")  # opened here: a missing blob fails before streaming

        def chunks() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return chunks()

    def _exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def _delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def _read_marker(self) -> str | None:
        path = self.root / MARKER
        return path.read_text().strip() if path.exists() else None

    def _write_marker(self, value: str) -> None:
        _write_durably(self.root / MARKER, value.encode())


def _write_durably(final: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class S3Blobs(BlobStore):
    """Objects `PREFIX/ab/abcdef...` in BUCKET, through boto3. Endpoint, region and keys come
    from [server.blobs] when set there, else from boto3's usual sources (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3, ~/.aws)."""

    kind = "s3"

    def __init__(self, url: str, options: dict[str, str], metrics: Metrics | None = None, deadlines: Deadlines | None = None) -> None:
        super().__init__(metrics, deadlines)
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = parse_s3_url(url)
        given = {k: v for k, v in options.items() if v}
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=given.get("endpoint_url"),
            region_name=given.get("region"),
            aws_access_key_id=given.get("access_key_id"),
            aws_secret_access_key=given.get("secret_access_key"),
            # One retry at most, and no read longer than the whole deadline: a terminal
            # retries a failed upload itself, and the deadline (_timed) answers the caller
            # whatever boto3 is still waiting for.
            config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=min(5.0, self.deadlines.operation_seconds),
                read_timeout=self.deadlines.operation_seconds,
                max_pool_connections=self.deadlines.workers,
                s3={"addressing_style": "path"},
            ),
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/") + f" at {self.client.meta.endpoint_url}"

    def _missing(self, exc: BaseException) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")

    def key(self, digest: str) -> str:
        return f"{self.prefix}{digest[:2]}/{digest}"

    def _put(self, digest: str, data: bytes) -> None:
        if self._exists(digest):
            return
        self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data, ContentType="application/gzip")

    def _open(self, digest: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return chunks()

    def _exists(self, digest: str) -> bool:
        return self._head(self.key(digest))

    def _head(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def _delete(self, digest: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def _read_marker(self) -> str | None:
        if not self._head(self.prefix + MARKER):
            return None
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + MARKER)["Body"].read().decode().strip()

    def _write_marker(self, value: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + MARKER, Body=value.encode())


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET[/PREFIX]` to (bucket, prefix ending in '/' or empty)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not url.startswith("s3://") or not bucket:
        raise ValueError(f"not an s3://BUCKET[/PREFIX] URL: {url!r}")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


def open_store(
    url: str, data_dir: Path, options: dict[str, str], metrics: Metrics | None = None, deadlines: Deadlines | None = None
) -> BlobStore:
    """`s3://...` is S3; a path (or `file://path`) is a directory; empty is DATA/blobs."""
    if url.startswith("s3://"):
        return S3Blobs(url, options, metrics, deadlines)
    if not url:
        return DirectoryBlobs(data_dir / "blobs", metrics, deadlines)
    return DirectoryBlobs(Path(url.removeprefix("file://")), metrics, deadlines)
