"""A blob store that stops answering must not hold the server (issue 21), in process: a
SeaweedFS that is stopped and started again, a directory whose blob blocks on open (a FIFO,
as a hung mount would), and missing blobs, which are answers and open no breaker. The store
that accepts connections and never answers, with a real `serve`, is in
tests/reliability/test_blob_store_hangs.py."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import requests
from seaweed import ACCESS_KEY, SECRET_KEY, running_seaweedfs, unavailable
from server_bundles import make_bundle
from server_harness import default_settings, start_server

from remote.server.blobs import BlobError, Deadlines, DirectoryBlobs

pytestmark = pytest.mark.timeout(300)


def s3_settings(endpoint: str, bucket_url: str, **deadlines):
    s = default_settings()
    blobs = dataclasses.replace(
        s.blobs, url=bucket_url, endpoint_url=endpoint, region="us-east-1", access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
        **deadlines,
    )  # fmt: skip
    return dataclasses.replace(s, blobs=blobs)


def timed_upload(server, token: str, terminal_id: str, made: tuple[str, bytes] | None = None) -> tuple[float, requests.Response]:
    bundle_id, body = made or make_bundle(token, terminal_id)
    started = time.monotonic()
    answer = server.upload(token, body, bundle_id)
    return time.monotonic() - started, answer


def test_a_stopped_seaweedfs_is_503_at_once_and_used_again_when_it_is_back(tmp_path):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with running_seaweedfs(tmp_path / "weed") as weed:
        # A fresh SeaweedFS makes the bucket's volumes on its first write, which can take seconds
        # on a loaded machine: the deadline here is for that, not for the stopped store (refused at once).
        settings = s3_settings(weed.endpoint, weed.s3_url(), breaker_open_seconds=1.0, operation_timeout_seconds=10.0)
        running = start_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", "s3-stopped", settings)
        server = next(running)
        try:
            tid, token = server.terminal()
            assert timed_upload(server, token, tid)[1].status_code == 201
            weed.kill()
            answers = [timed_upload(server, token, tid) for _ in range(6)]
            for seconds, answer in answers:
                assert answer.status_code == 503 and "Retry-After" in answer.headers, answer.text
                assert seconds < 5.0
            assert answers[-1][0] < 1.0, answers  # open: not even tried
            assert server.get("/healthz").json()["blob_store"] == "failing"
            weed.start()
            time.sleep(1.2)  # the breaker lets one call try again after breaker_open_seconds
            seconds, answer = timed_upload(server, token, tid)
            assert answer.status_code == 201, answer.text
            assert server.get("/healthz").json()["blob_store"] == "ok"
        finally:
            running.close()


def test_a_directory_read_that_blocks_ends_at_the_deadline(tmp_path):
    """A FIFO where a blob should be: open() blocks until a writer comes, as a read from a hung
    mount blocks. The caller gets a BlobError at the deadline; after three, none waits at all."""
    store = DirectoryBlobs(tmp_path / "blobs", deadlines=Deadlines(operation_seconds=0.5, breaker_failures=3, breaker_open_seconds=30))
    digest = "ab" * 32
    store.path(digest).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(store.path(digest))
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(BlobError, match="no answer within 0.5 s"):
            store.get(digest)
        assert time.monotonic() - started < 2.0  # 0.5 s, and a loaded machine's scheduling
    started = time.monotonic()
    with pytest.raises(BlobError, match="failing") as refused:
        store.put(b"another bundle")
    assert time.monotonic() - started < 0.5 and refused.value.retry_after >= 29  # not even tried
    with open(store.path(digest), "wb"):  # let the blocked opens through, so their threads end
        pass


def test_a_missing_blob_is_an_answer_not_a_failure(tmp_path):
    store = DirectoryBlobs(tmp_path / "blobs", deadlines=Deadlines(operation_seconds=1, breaker_failures=2, breaker_open_seconds=30))
    for _ in range(5):
        with pytest.raises(BlobError):
            store.get("cd" * 32)
    assert not store.breaker.failing
    assert store.get(store.put(b"x")) == b"x"
