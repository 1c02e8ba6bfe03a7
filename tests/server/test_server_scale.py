"""The large deployment's parts: blob stores (directory and a real SeaweedFS S3), retention
on a seeded store with uploads running, and the blob an upload of the same bytes needs
again after retention deleted it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import s3_settings
from server_bundles import make_bundle
from server_harness import default_settings, fresh_pg_database, start_server

from remote.server import db, retention, store
from remote.server.blobs import BlobError, DirectoryBlobs, open_store

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight

BACKENDS = ["sqlite", "postgresql", "postgresql+s3"]


@pytest.fixture(params=["directory", "s3"])
def blob_store(request, tmp_path):
    if request.param == "directory":
        return DirectoryBlobs(tmp_path / "blobs")
    b = s3_settings(request.getfixturevalue("seaweedfs")).blobs
    options = {"endpoint_url": b.endpoint_url, "region": b.region, "access_key_id": b.access_key_id,
               "secret_access_key": b.secret_access_key}  # fmt: skip
    return open_store(b.url, tmp_path, options)


def test_blob_store_put_is_idempotent_streams_and_deletes(blob_store):
    data = bytes(range(256)) * 1000  # several read chunks
    digest = blob_store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blob_store.put(data) == digest and blob_store.exists(digest)
    chunks = list(blob_store.stream(digest))
    assert len(chunks) > 1 and b"".join(chunks) == data
    blob_store.delete(digest)
    assert not blob_store.exists(digest)
    with pytest.raises(BlobError):
        blob_store.stream(digest)  # a missing blob fails before any byte is sent
    assert blob_store.marker(create=False) is None
    made = blob_store.marker(create=True)
    assert made and blob_store.marker(create=True) == made


def test_s3_store_that_does_not_answer_is_a_blob_error_counted_in_metrics(tmp_path):
    from remote.server.metrics import Metrics

    metrics = Metrics()
    dead = open_store("s3://nobucket", tmp_path, {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1",
                                                  "access_key_id": "x", "secret_access_key": "y"}, metrics)  # fmt: skip
    with pytest.raises(BlobError, match="s3 blob store: put"):
        dead.put(b"x")
    assert 'posdiag_blob_errors_total{op="put"} 1.0' in metrics.render()


@contextlib.contextmanager
def fresh_server(request, tmp_path, backend: str, **retention_keys):
    settings = s3_settings(request.getfixturevalue("seaweedfs")) if backend.endswith("+s3") else default_settings()
    settings = dataclasses.replace(settings, retention=dataclasses.replace(settings.retention, **retention_keys))
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite" else stack.enter_context(fresh_pg_database())
        gen = start_server(url, tmp_path / "data", backend.split("+")[0], settings)
        stack.callback(next, gen, None)
        yield next(gen), settings


def age(server, bundle_ids: list[str], days: float) -> None:
    """Make rows look received `days` ago, one microsecond apart in the given order."""
    base = datetime.now(UTC) - timedelta(days=days)
    with db.writing(server.service.engine) as conn:
        for i, bundle_id in enumerate(bundle_ids):
            stamp = db.stamp(base + timedelta(microseconds=i))
            conn.execute(db.bundles.update().where(db.bundles.c.id == bundle_id).values(received_at=stamp))


def upload_many(server, token: str, tid: str, count: int) -> list[tuple[str, str]]:
    """(bundle id, sha256) of `count` bundles confirmed by the server."""
    out = []
    for _ in range(count):
        bundle_id, body = make_bundle(token, tid, code=uuid.uuid4().hex[:6])
        assert server.upload(token, body, bundle_id).status_code == 201
        out.append((bundle_id, hashlib.sha256(body).hexdigest()))
    return out


def rows(server) -> dict[str, str]:
    with server.service.engine.connect() as conn:
        return dict(conn.execute(sa.select(db.bundles.c.id, db.bundles.c.sha256)).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_retention_removes_exactly_the_expired_rows_and_blobs_while_uploads_run(request, tmp_path, backend):
    with fresh_server(request, tmp_path, backend, days=30, max_per_terminal=5, batch=2) as (server, settings):
        (a, ta), (b, tb) = server.terminal("A"), server.terminal("B")
        a_old, a_new = upload_many(server, ta, a, 2), upload_many(server, ta, a, 8)
        b_old, b_new = upload_many(server, tb, b, 3), upload_many(server, tb, b, 2)
        age(server, [i for i, _ in a_old + b_old], days=40)
        age(server, [i for i, _ in a_new], days=2)  # in upload order: the first three are the oldest
        expired = a_old + b_old + a_new[:3]
        kept = a_new[3:] + b_new

        during: list[tuple[str, str]] = []
        stop = threading.Event()

        def keep_uploading() -> None:  # fresh terminals, each under the cap
            while not stop.is_set():
                tid, token = server.terminal("C")
                during.extend(upload_many(server, token, tid, 2))

        uploader = threading.Thread(target=keep_uploading)
        uploader.start()
        try:
            done = retention.run_pass(server.service.engine, server.service.blobs, settings.retention, server.service.metrics)
        finally:
            stop.set()
            uploader.join(30)
        assert done is not None and (done.by_age, done.by_count, done.blobs) == (5, 3, 8)
        left = rows(server)
        assert set(left) == {i for i, _ in kept + during} and during
        for bundle_id, digest in expired:
            assert not server.service.blobs.exists(digest)
            assert store.bundle_view(server.service.engine, bundle_id) is None  # its redacted view went too
        for bundle_id, digest in kept + during:
            assert server.get(f"/api/v1/bundles/{bundle_id}/download").content
            assert server.service.blobs.exists(digest)
        stats = server.get("/api/v1/stats", params={"days": 3, "top": 100}).json()  # counts of what is left
        assert stats["total"] == len(left)
        assert {t["key"]: t["count"] for t in stats["top_terminals"]}.get(a) == 5
        assert {t["key"]: t["count"] for t in stats["top_terminals"]}.get(b) == 2
        metrics = server.service.metrics.render()
        assert 'posdiag_retention_removed_total{kind="rows"} 8.0' in metrics
        assert 'posdiag_retention_removed_total{kind="blobs"} 8.0' in metrics
        again = retention.run_pass(server.service.engine, server.service.blobs, settings.retention)
        assert (again.rows, again.blobs) == (0, 0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_upload_that_found_its_blob_before_retention_deleted_it_writes_it_again(request, tmp_path, backend):
    with fresh_server(request, tmp_path, backend, days=30) as (server, settings):
        tid, token = server.terminal()
        bundle_id, body = make_bundle(token, tid)
        assert server.upload(token, body, bundle_id).status_code == 201
        record = store.get_bundle(server.service.engine, bundle_id)
        age(server, [bundle_id], days=40)
        # The upload of the same bytes has stored (found) its blob; retention now runs to the end ...
        done = retention.run_pass(server.service.engine, server.service.blobs, settings.retention)
        assert (done.rows, done.blobs) == (1, 1) and not server.service.blobs.exists(record["sha256"])
        # ... and only then does the upload insert its row: the blob is written again first.
        written = []
        store.insert_bundles(server.service.engine, [store.NewBundle(record, "{}", lambda: written.append(server.service.blobs.put(body)))])
        assert written == [record["sha256"]]
        assert server.get(f"/api/v1/bundles/{bundle_id}/download").content == body


def test_a_blob_that_a_remaining_row_names_is_kept(request, tmp_path):
    """Two rows, one blob (a bundle re-sent under a new id is not possible, so the rows are
    written directly): removing one row leaves the blob for the other."""
    with fresh_server(request, tmp_path, "sqlite", days=30) as (server, settings):
        tid, token = server.terminal()
        bundle_id, body = make_bundle(token, tid)
        assert server.upload(token, body, bundle_id).status_code == 201
        record = store.get_bundle(server.service.engine, bundle_id)
        twin = dict(record, id=str(uuid.uuid4()))
        with db.writing(server.service.engine) as conn:
            conn.execute(db.bundles.insert().values(**twin))
        age(server, [bundle_id], days=40)
        assert retention.plan(server.service.engine, settings.retention).blobs == 0
        done = retention.run_pass(server.service.engine, server.service.blobs, settings.retention)
        assert (done.rows, done.blobs) == (1, 0)
        assert server.service.blobs.get(record["sha256"]) == body
