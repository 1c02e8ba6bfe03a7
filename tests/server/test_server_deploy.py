"""`posdiag-support serve`, `check` and `gc` as real processes: what serve refuses to start
on, one /metrics for all workers, what check prints, what gc would remove and removes, the
port serve prints and the metrics directories it leaves (none)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from server_bundles import make_bundle
from server_harness import fresh_pg_database

from remote.server import db, preflight, store
from remote.server.blobs import DirectoryBlobs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
from server_kit import Serve, serving_port  # noqa: E402

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight

SUPPORT = Path(sys.executable).parent / "posdiag-support"


def support(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SUPPORT), *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def enrol(url: str) -> tuple[str, str]:
    engine = db.make_engine(url)
    db.create_schema(engine)
    tid = f"D-{uuid.uuid4().hex[:6]}"
    token = store.add_terminal(engine, tid)
    engine.dispose()
    return tid, token


def upload(base: str, token: str, tid: str) -> str:
    bundle_id, body = make_bundle(token, tid)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"}
    assert requests.post(f"{base}/api/v1/bundles", data=body, headers=headers, timeout=30).status_code == 201
    return bundle_id


def test_second_server_on_one_sqlite_database_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    first = Serve(f"sqlite:///{tmp_path / 'data' / 'posdiag-support.db'}", tmp_path / "data", tmp_path / "logs")
    first.start()
    try:
        second = support("--data", str(tmp_path / "data"), "serve", "--port", "0")
    finally:
        first.stop()
    assert second.returncode == 2
    assert "refusing to start" in second.stderr and "SQLite serves one server" in second.stderr
    assert "Traceback" not in second.stderr


def test_server_on_an_unshared_directory_is_refused_and_the_shared_one_starts(tmp_path):
    with fresh_pg_database() as url:
        first = Serve(url, tmp_path / "a", tmp_path / "logs")
        first.start()
        try:
            other = support("--db", url, "--data", str(tmp_path / "b"), "serve", "--port", "0")
            assert other.returncode == 2, other.stderr
            assert "is not the one this database's bundles are in" in other.stderr
            shared = Serve(url, tmp_path / "b", tmp_path / "logs", extra=("--blobs", str(tmp_path / "a" / "blobs")))
            shared.start()  # the same directory (as a shared mount would be): it starts
            tid, token = enrol(url)
            bundle_id = upload(shared.url, token, tid)
            got = requests.get(f"{first.url}/api/v1/bundles/{bundle_id}/download", auth=("admin", "x"), timeout=10)
            assert got.status_code == 401  # no user here; the row is what matters:
            engine = db.make_engine(url)
            with engine.connect() as conn:
                digest = conn.execute(sa.select(db.bundles.c.sha256).where(db.bundles.c.id == bundle_id)).scalar_one()
            engine.dispose()
            assert (tmp_path / "a" / "blobs" / digest[:2] / digest).exists()
            shared.stop()
        finally:
            first.stop()


class _SlowMarkerStore(DirectoryBlobs):
    """A directory store whose marker write takes `delay`: servers starting together all
    find no marker, then each writes its own at another moment (the race a CI run met once:
    one server then found another's id recorded and refused to start)."""

    def __init__(self, root, delay):
        super().__init__(root)
        self.delay = delay
        self.first_look = True

    def _read_marker(self):
        if self.first_look:  # each server looks before any has written
            self.first_look = False
            time.sleep(0.3)
        return super()._read_marker()

    def _write_marker(self, value):
        time.sleep(self.delay)
        super()._write_marker(value)


def test_servers_starting_together_on_a_new_store_agree_on_its_id(tmp_path):
    with fresh_pg_database() as url:
        engines = [db.make_engine(url) for _ in range(3)]
        db.create_schema(engines[0])
        stores = [_SlowMarkerStore(tmp_path / "shared", 0.3 * i) for i, _ in enumerate(engines)]
        with ThreadPoolExecutor(3) as pool:
            marks = list(pool.map(preflight.verify_store, engines, stores))
        assert len(set(marks)) == 1 and preflight.recorded_store(engines[0]) == marks[0]
        for engine in engines:
            engine.dispose()


def test_metrics_are_one_view_over_all_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'data' / 'posdiag-support.db'}"
    (tmp_path / "data").mkdir()
    tid, token = enrol(url)
    server = Serve(url, tmp_path / "data", tmp_path / "logs", workers=3)
    server.start(timeout=60)
    try:
        for _ in range(9):
            upload(server.url, token, tid)
        seen = set()
        for _ in range(8):  # answered by whichever worker takes the connection
            text = requests.get(server.url + "/metrics", timeout=10).text
            seen.add([line for line in text.splitlines() if line.startswith('posdiag_bundles_received_total{outcome="new"}')][0])
            assert "posdiag_ingest_seconds_count 9.0" in text
    finally:
        server.stop()
    assert seen == {'posdiag_bundles_received_total{outcome="new"} 9.0'}


def test_check_prints_what_it_found_and_fails_on_an_unreachable_store(tmp_path, seaweedfs):
    data = tmp_path / "data"
    data.mkdir()
    enrol(f"sqlite:///{data / 'posdiag-support.db'}")
    good = support("--data", str(data), "check")
    assert good.returncode == 0, good.stdout + good.stderr
    for what in ("config", "database", "schema", "bundles", "blob store", "blob write/read"):
        assert any(line.startswith(what) for line in good.stdout.splitlines()), good.stdout
    url = seaweedfs.s3_url()
    s3 = support("--data", str(data), "check", "--json", "--blobs", url, env=seaweedfs.env())
    found = json.loads(s3.stdout)
    assert s3.returncode == 0 and found["ok"], s3.stdout
    assert found["found"]["blob store"].startswith(f"s3 {url} at {seaweedfs.endpoint}")
    env = dict(seaweedfs.env(), AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    bad = support("--data", str(data), "check", "--blobs", url, env=env)
    assert bad.returncode == 1 and "1 problem(s)" in bad.stdout
    assert "blob write/read  s3 blob store:" in bad.stdout


def test_gc_dry_run_says_what_it_would_remove_and_gc_removes_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'posdiag-support.db'}"
    tid, token = enrol(url)
    server = Serve(url, data, tmp_path / "logs")
    server.start()
    try:
        ids = [upload(server.url, token, tid) for _ in range(4)]
    finally:
        server.stop()
    config = tmp_path / "posdiag.toml"
    config.write_text("[server.retention]\nmax_per_terminal = 1\n")
    common = ("--data", str(data), "--config", str(config))
    dry = support(*common, "gc", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) | {"errors": []} == {
        "by_age": 0, "by_count": 3, "rows": 3, "blobs": 3, "bytes": json.loads(dry.stdout)["bytes"],
        "audit_entries": 0, "errors": [], "dry_run": True,
    }  # fmt: skip
    assert json.loads(dry.stdout)["bytes"] > 0
    assert len(list((data / "blobs").glob("*/*"))) == 4
    done = support(*common, "gc")
    assert done.returncode == 0 and done.stdout.startswith("removed 3 bundles"), done.stdout + done.stderr
    engine = db.make_engine(url)
    with engine.connect() as conn:
        left = conn.execute(sa.select(db.bundles.c.id)).scalars().all()
    engine.dispose()
    assert left == [ids[-1]] and len(list((data / "blobs").glob("*/*"))) == 1


@pytest.mark.parametrize("bad", ["s3://", "s3:///prefix"])
def test_serve_with_a_malformed_s3_url_is_a_one_line_error(tmp_path, bad):
    result = support("--data", str(tmp_path), "serve", "--blobs", bad, "--port", "0")
    assert result.returncode == 2 and "not an s3://BUCKET[/PREFIX] URL" in result.stderr
    assert "Traceback" not in result.stderr


def removed_total(servers: list[Serve]) -> dict[str, float]:
    """posdiag_retention_removed_total by kind, summed over `servers`."""
    removed = {"rows": 0.0, "blobs": 0.0}
    for s in servers:
        for line in requests.get(s.url + "/metrics", timeout=10).text.splitlines():
            for kind in removed:
                if line.startswith(f'posdiag_retention_removed_total{{kind="{kind}"}}'):
                    removed[kind] += float(line.split()[-1])
    return removed


def test_two_servers_run_retention_in_the_background_and_count_each_removal_once(tmp_path):
    with fresh_pg_database() as url:
        tid, token = enrol(url)
        config = tmp_path / "posdiag.toml"
        config.write_text("[server.retention]\ndays = 30\ninterval_minutes = 0.05\n")
        extra = ("--config", str(config), "--blobs", str(tmp_path / "blobs"))
        servers = [Serve(url, tmp_path / f"d{i}", tmp_path / "logs", extra=extra) for i in range(2)]
        try:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda s: s.start(timeout=90), servers))
            ids = [upload(servers[i % 2].url, token, tid) for i in range(6)]
            engine = db.make_engine(url)
            with engine.begin() as conn:
                conn.execute(db.bundles.update().where(db.bundles.c.id.in_(ids[:4])).values(received_at="2020-01-01T00:00:00.000000Z"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    left = conn.execute(sa.select(db.bundles.c.id)).scalars().all()
                if len(left) == 2:
                    break
                time.sleep(0.5)
            engine.dispose()
            assert sorted(left) == sorted(ids[4:])
            deadline = time.monotonic() + 30  # each pass counts what it removed after its commit
            while (removed := removed_total(servers)) != {"rows": 4.0, "blobs": 4.0} and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            for s in servers:
                s.stop()
    assert removed == {"rows": 4.0, "blobs": 4.0}
    assert len(list((tmp_path / "blobs").glob("*/*"))) == 2


def serve_in(tmp: Path, data: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """`serve --port 0` with its own temp directory; the process and the port it printed."""
    err = data.parent / f"{data.name}-stderr.log"
    proc = subprocess.Popen(
        [str(SUPPORT), "--data", str(data), "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL, stderr=err.open("wb"), env=dict(os.environ, TMPDIR=str(tmp)), cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (port := serving_port(err.read_text(errors="replace"))):
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc, port
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_port_0_prints_the_port_it_got_and_sigterm_leaves_no_metrics_directory(tmp_path, workers):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, port = serve_in(scratch, tmp_path / "data", "--workers", workers)
    assert port != 0
    (mine,) = scratch.glob("posdiag-metrics-*")
    assert mine.name.startswith(f"posdiag-metrics-{proc.pid}-")
    assert "posdiag_bundles_received_total" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert list(scratch.iterdir()) == []


def test_serve_removes_the_metrics_directories_of_servers_that_are_gone(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    ended = subprocess.Popen(["true"])
    ended.wait()
    gone, alive = ended.pid, os.getpid()
    old = scratch.stat().st_mtime - 2 * 3600  # by the file system's clock, as serve measures
    made = {  # name: (files in it, modified at)
        f"posdiag-metrics-{gone}-a1b2c3d4": ([], None),  # its serve was SIGKILLed
        f"posdiag-metrics-{alive}-e5f6g7h8": ([], None),  # its serve runs
        "posdiag-metrics-k9l0m1n2": ([f"counter_{gone}.db", f"histogram_{gone}.db"], None),  # an older release's
        "posdiag-metrics-o3p4q5r6": ([f"counter_{alive}.db"], old),
        "posdiag-metrics-s7t8u9v0": ([], old),  # nobody ever wrote in it, two hours ago
        "posdiag-metrics-w1x2y3z4": ([], None),  # nobody wrote in it yet
    }
    for name, (files, modified) in made.items():
        (scratch / name).mkdir()
        for file in files:
            (scratch / name / file).write_bytes(b"\0" * 64)
        if modified:
            os.utime(scratch / name, (modified, modified))
    (scratch / "posdiag-metrics-not-a-directory").write_text("")
    kept = {f"posdiag-metrics-{alive}-e5f6g7h8", "posdiag-metrics-o3p4q5r6", "posdiag-metrics-w1x2y3z4", "posdiag-metrics-not-a-directory"}

    proc, _ = serve_in(scratch, tmp_path / "data")
    running = {p.name for p in scratch.iterdir()}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    (own,) = running - kept
    assert own.startswith(f"posdiag-metrics-{proc.pid}-")
    assert {p.name for p in scratch.iterdir()} == kept
