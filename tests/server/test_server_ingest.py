"""Upload: the happy path, idempotency, and every kind of bad upload gets its 4xx while the
server goes on serving. All over real HTTP to uvicorn, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import tarfile
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from server_bundles import make_bundle, sign, tar_gz

from remote.server.db import bundles as bundles_table


def assert_serving(server) -> None:
    assert requests.get(server.url + "/healthz", timeout=10).json()["status"] == "ok"


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert body["detail"]


def stored_count(server, bundle_id: str) -> int:
    with server.service.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(bundles_table).where(bundles_table.c.id == bundle_id)
        ).scalar_one()


def test_upload_is_stored_indexed_and_blob_is_content_addressed(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, code="A0", cause="security.keys_out_of_sync", category="security", verdict="remote")
    response = server.upload(token, body, bundle_id)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["id"] == bundle_id
    assert (record["terminal_id"], record["code"], record["scheme"]) == (tid, "A0", "iso8583")
    assert (record["top_cause"], record["top_category"], record["verdict"]) == ("security.keys_out_of_sync", "security", "remote")
    assert record["trigger_kind"] == "error" and record["model"] == "A920" and record["firmware"] == "1.2.3"
    digest = hashlib.sha256(body).hexdigest()
    assert record["sha256"] == digest and record["size"] == len(body)
    assert server.service.blobs.get(digest) == body
    assert stored_count(server, bundle_id) == 1


def test_same_bundle_twice_is_stored_once_and_answers_200(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid)
    first = server.upload(token, body, bundle_id)
    second = server.upload(token, body, bundle_id)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    assert stored_count(server, bundle_id) == 1


def test_same_bundle_at_once_from_many_connections_is_stored_once(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid)
    with ThreadPoolExecutor(12) as pool:
        codes = sorted(pool.map(lambda _: server.upload(token, body, bundle_id).status_code, range(12)))
    assert codes.count(201) == 1 and codes.count(200) == 11, codes
    assert stored_count(server, bundle_id) == 1


def test_bundle_id_of_another_terminal_is_a_conflict(server):
    tid_a, token_a = server.terminal()
    tid_b, token_b = server.terminal()
    bundle_id, body_a = make_bundle(token_a, tid_a)
    _, body_b = make_bundle(token_b, tid_b, bundle_id=bundle_id)
    assert server.upload(token_a, body_a, bundle_id).status_code == 201
    assert_error(server.upload(token_b, body_b, bundle_id), 409, "bundle_id_taken")


@pytest.mark.parametrize("token", [None, "pdt_nonsense", ""])
def test_missing_or_unknown_token_is_401(server, token):
    tid, real = server.terminal()
    _, body = make_bundle(real, tid)
    headers = {"Content-Type": "application/gzip"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = requests.post(server.url + "/api/v1/bundles", data=body, headers=headers, timeout=10)
    assert_error(response, 401, "bad_token")


def test_revoked_token_is_401(server):
    from remote.server import store

    tid, token = server.terminal()
    store.revoke_terminal(server.service.engine, tid)
    bundle_id, body = make_bundle(token, tid)
    assert_error(server.upload(token, body, bundle_id), 401, "bad_token")


def test_another_terminals_bundle_is_refused_by_signature_or_terminal(server):
    tid_a, token_a = server.terminal()
    _, token_b = server.terminal()
    # The signature is checked before the manifest is even parsed: another terminal's
    # bundle under this token fails it; one this token signed but naming another terminal is 403.
    bundle_id, body = make_bundle(token_a, tid_a)
    assert_error(server.upload(token_b, body, bundle_id), 422, "bad_signature")
    bundle_id, body = make_bundle(token_b, tid_a)
    assert_error(server.upload(token_b, body, bundle_id), 403, "wrong_terminal")
    assert_serving(server)


def test_wrong_signature_is_422(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle("pdt_some_other_key", tid)
    assert_error(server.upload(token, body, bundle_id), 422, "bad_signature")
    assert stored_count(server, bundle_id) == 0
    assert_serving(server)


def test_truncated_gzip_is_400(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid)
    assert_error(server.upload(token, body[: len(body) // 2], bundle_id), 400, "not_tar")
    assert_serving(server)


def test_not_gzip_is_400(server):
    _, token = server.terminal()
    assert_error(server.upload(token, b"PK\x03\x04 a zip, not a tar.gz"), 400, "not_gzip")
    assert_error(server.upload(token, b""), 400, "not_gzip")


def test_gzip_of_something_not_tar_is_400(server):
    _, token = server.terminal()
    assert_error(server.upload(token, gzip.compress(b"hello " * 1000)), 400, "not_tar")


def _signed_members(token: str, tid: str, extra: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A valid manifest + sig around `extra` members, so only the member itself is wrong."""
    _, body = make_bundle(token, tid)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    return [members[0], *extra, *members[1:]]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "logs/../../x", "./manifest.json"])
def test_unsafe_member_path_is_400(server, name):
    tid, token = server.terminal()
    body = tar_gz(_signed_members(token, tid, [(name, b"x")]))
    assert_error(server.upload(token, body), 400, "unsafe_member")
    assert_serving(server)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE])
def test_link_device_or_directory_member_is_400(server, kind):
    tid, token = server.terminal()
    members = _signed_members(token, tid, [])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for i, (name, data) in enumerate(members):
            if i == 1:
                odd = tarfile.TarInfo("logs/evil.log")
                odd.type = kind
                odd.linkname = "/etc/shadow"
                tar.addfile(odd)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert_error(server.upload(token, out.getvalue()), 400, "unsafe_member")
    assert_serving(server)


def test_too_many_members_is_400(server):
    _, token = server.terminal()
    many = [(f"logs/{i}.log", b"") for i in range(server.service.settings.max_members + 1)]
    assert_error(server.upload(token, tar_gz(many)), 400, "too_many_members")


def _tar_header(name: str, size: int, kind: bytes = b"0") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _streamed_gzip(header: bytes, zeros: int) -> bytes:
    """gzip(header + `zeros` zero bytes + end blocks), built 1 MiB at a time: the ~1 MB
    result is all that is ever held in memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(header)]
    chunk = bytes(1 << 20)
    left = zeros
    while left:
        step = min(left, len(chunk))
        out.append(packer.compress(chunk[:step] if step < len(chunk) else chunk))
        left -= step
    out.append(packer.compress(bytes(1024)))
    out.append(packer.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    return _streamed_gzip(_tar_header("manifest.json", 1 << 30), 1 << 30)


@pytest.fixture(scope="module")
def pax_bomb() -> bytes:
    """A pax extended header that claims 1 GiB: tarfile would read it all into memory; the
    server's header budget (1 MiB between two members) stops it."""
    return _streamed_gzip(_tar_header("././@PaxHeader", 1 << 30, tarfile.XHDTYPE), 1 << 30)


def test_gigabyte_gzip_bomb_is_400(server, gigabyte_bomb):
    _, token = server.terminal()
    assert len(gigabyte_bomb) < 2 << 20
    assert_error(server.upload(token, gigabyte_bomb), 400, "too_large_unpacked")
    assert_serving(server)


def test_pax_header_bomb_is_400(server, pax_bomb):
    _, token = server.terminal()
    assert_error(server.upload(token, pax_bomb), 400, "too_large_header")
    assert_serving(server)


def raw_post(url: str, headers: dict[str, str], body: bytes, chunked: bool = False) -> tuple[int, dict]:
    """POST over a plain socket, sending the body from a thread while reading the answer:
    a server that answers 413 early stops reading, and a client that only reads after
    sending everything would never see the answer."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")

    def send() -> None:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            step = 64 * 1024
            for i in range(0, len(body), step):
                piece = body[i : i + step]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: expected once it has answered

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, "connection closed before an answer"
        data += piece
    head_bytes, rest = data.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
    while len(rest) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        rest += piece
    sock.close()
    sender.join(10)
    return status, json.loads(rest[:length])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_ten_megabyte_body_over_the_cap_is_413(server, chunked):
    _, token = server.terminal()
    body = bytes(10 * 1024 * 1024)
    assert len(body) > server.service.settings.max_bundle_bytes
    status, answer = raw_post(
        server.url + "/api/v1/bundles",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"},
        body,
        chunked=chunked,
    )
    assert (status, answer["error"]) == (413, "too_large")
    assert_serving(server)


def _rebuild(token: str, tid: str, change) -> bytes:
    """A bundle whose manifest (then re-signed) or members `change(manifest, members)` edits."""
    _, body = make_bundle(token, tid)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    manifest = json.loads(members[0][1])
    inner = members[1:-1]
    inner = change(manifest, inner) or inner
    raw = json.dumps(manifest).encode()
    return tar_gz([("manifest.json", raw), *inner, ("manifest.sig", sign(token, raw))])


def _drop(path):
    return lambda m, inner: [(n, d) for n, d in inner if n != path]


def _tamper(path):
    return lambda m, inner: [(n, d + b" " if n == path else d) for n, d in inner]


def _unlisted(m, inner):
    return [*inner, ("logs/extra.log", b"x")]


def _schema(m, inner):
    m["schema"] = "posdiag.bundle/9"


def _no_terminal(m, inner):
    del m["terminal"]


def _bad_time(m, inner):
    m["created_at"] = "yesterday"


def _bad_trigger(m, inner):
    m["trigger"]["kind"] = "whim"


def _not_object(m, inner):
    m.clear()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (_drop("probes.json"), "missing_member"),
        (_tamper("logs/payment.log"), "hash_mismatch"),
        (_unlisted, "unlisted_member"),
        (_schema, "bad_manifest"),
        (_no_terminal, "bad_manifest"),
        (_bad_time, "bad_manifest"),
        (_bad_trigger, "bad_manifest"),
        (_not_object, "bad_manifest"),
    ],
    ids=["missing", "hash", "unlisted", "schema", "no-terminal", "time", "trigger", "empty"],
)
def test_manifest_problems_are_422(server, change, code):
    tid, token = server.terminal()
    assert_error(server.upload(token, _rebuild(token, tid, change)), 422, code)


def test_manifest_must_come_first_and_signature_last(server):
    tid, token = server.terminal()
    _, body = make_bundle(token, tid)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    assert_error(server.upload(token, tar_gz(members[1:] + members[:1])), 422, "bad_layout")
    assert_error(server.upload(token, tar_gz(members[:-1])), 422, "bad_layout")


def test_idempotency_key_must_match_the_manifest(server):
    tid, token = server.terminal()
    _, body = make_bundle(token, tid)
    assert_error(server.upload(token, body, str(uuid.uuid4())), 422, "idempotency_key_mismatch")


def test_metrics_count_received_rejected_and_latency(server):
    tid, token = server.terminal()
    before = requests.get(server.url + "/metrics", timeout=10).text
    bundle_id, body = make_bundle(token, tid)
    server.upload(token, body, bundle_id)
    server.upload(token, body[:100], bundle_id)
    text = requests.get(server.url + "/metrics", timeout=10).text

    def value(series: str, text: str) -> float:
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    assert value('posdiag_bundles_received_total{outcome="new"}', text) == value('posdiag_bundles_received_total{outcome="new"}', before) + 1
    assert value('posdiag_bundles_rejected_total{reason="not_tar"}', text) >= 1
    server.upload("pdt_wrong", body, bundle_id)
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert value('posdiag_bundles_rejected_total{reason="bad_token"}', text) >= 1
    assert value("posdiag_ingest_seconds_count", text) == value("posdiag_ingest_seconds_count", before) + 3
    assert '# TYPE posdiag_ingest_seconds histogram' in text and 'le="+Inf"' in text


def test_nul_and_lone_surrogates_from_a_terminal_are_cleaned_not_a_500(server):
    tid, token = server.terminal()
    bundle_id, body = make_bundle(token, tid, cause="x\ud800y", code="5\x001")
    response = server.upload(token, body, bundle_id)
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["top_cause"], record["code"]) == ("x?y", "51")
    assert server.get(f"/bundles/{bundle_id}").status_code == 200
    # A model is shown on every page that lists the terminal: a NUL there is refused (issue 21).
    bundle_id, body = make_bundle(token, tid, model="A\x00B")
    assert_error(server.upload(token, body, bundle_id), 400, "bad_text")


def _with_diagnosis(document: bytes):
    def swap(m, inner):
        for entry in m["files"]:
            if entry["path"] == "diagnosis.json":
                entry["size"], entry["sha256"] = len(document), hashlib.sha256(document).hexdigest()
        return [(n, document if n == "diagnosis.json" else d) for n, d in inner]

    return swap


@pytest.mark.parametrize(
    "document",
    [b"[" * 100000, b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}", b"[1, 2]", b"{'a': 1}"],
    ids=["stack-deep", "deeper-than-64", "not-object", "not-json"],
)
def test_diagnosis_that_is_not_a_json_object_is_422(server, document):
    tid, token = server.terminal()
    assert_error(server.upload(token, _rebuild(token, tid, _with_diagnosis(document))), 422, "bad_member")


def test_nan_infinity_and_overflow_are_read_as_null(server):
    """Python's json (which the agent uses) writes NaN; the bundle is kept, the value is null."""
    tid, token = server.terminal()
    document = b'{"causes": [{"id": "x.y", "category": "x", "confidence": NaN}], "t": -Infinity, "big": 1e999}'
    response = server.upload(token, _rebuild(token, tid, _with_diagnosis(document)))
    assert response.status_code == 201, response.text
    assert response.json()["top_confidence"] is None
    detail = server.get(f"/api/v1/bundles/{response.json()['id']}").json()
    assert detail["diagnosis"] == {"causes": [{"id": "x.y", "category": "x", "confidence": None}], "t": None, "big": None}
