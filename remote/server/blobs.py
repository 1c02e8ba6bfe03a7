"""Bundle files, named by the sha256 of their bytes (`ab/abcdef...`), in a directory (the
default) or in an S3-compatible object store (`s3://BUCKET[/PREFIX]`, the large deployment).

A blob is complete before its name exists (a directory writes a temp file, fsyncs and
renames it; an S3 PUT is atomic), and is written before the database row that points at
it is committed, so a row never names a missing blob. Same bytes, same name: a second
write is a no-op. Reads stream in chunks. Every operation is timed, and failures counted,
in the server's metrics (`BlobError` is what callers see of any store failure).

Each store carries a marker (`.posdiag-store`) holding a random id that the database
records too: a server whose store has another marker, or none while the database names
one, is not looking at the store the rows were written to (see cli `serve`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remote.server.metrics import Metrics

CHUNK = 64 * 1024
log = logging.getLogger("posdiag.blobs")
MARKER = ".posdiag-store"


class BlobError(Exception):
    """The blob store failed (unreachable, refused, missing blob)."""


def check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("not a sha256 hex digest")
    return digest


class BlobStore:
    """The interface; a subclass implements the underscored methods."""

    kind = ""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

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
        started = time.perf_counter()
        try:
            return fn(*args)
        except BlobError:
            self._failed(op)
            raise
        except Exception as exc:
            self._failed(op)
            log.warning("%s blob store: %s failed: %s", self.kind, op, exc)
            raise BlobError(f"{self.kind} blob store: {op}: {exc}") from exc
        finally:
            if self.metrics is not None:
                self.metrics.blob_seconds(op, time.perf_counter() - started)

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

    def __init__(self, root: Path, metrics: Metrics | None = None) -> None:
        super().__init__(metrics)
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

    def __init__(self, url: str, options: dict[str, str], metrics: Metrics | None = None) -> None:
        super().__init__(metrics)
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
            # Few quick retries: a terminal retries a failed upload itself, and a request
            # thread waiting on a dead store holds a database-free worker for nothing.
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=32,
                s3={"addressing_style": "path"},
            ),
        )
        self._missing = (self.client.exceptions.NoSuchKey,)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/") + f" at {self.client.meta.endpoint_url}"

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
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
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


def open_store(url: str, data_dir: Path, options: dict[str, str], metrics: Metrics | None = None) -> BlobStore:
    """`s3://...` is S3; a path (or `file://path`) is a directory; empty is DATA/blobs."""
    if url.startswith("s3://"):
        return S3Blobs(url, options, metrics)
    if not url:
        return DirectoryBlobs(data_dir / "blobs", metrics)
    return DirectoryBlobs(Path(url.removeprefix("file://")), metrics)
