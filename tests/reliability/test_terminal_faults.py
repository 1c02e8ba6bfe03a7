"""Terminal-side faults: a full or read-only disk under the outbox, the wall clock jumping,
devices vanishing mid-sweep, and a support server with the wrong certificate.

Expected everywhere: a clear finding or log line, no crash, no loss, no duplicate.
Disk faults mount a small tmpfs (root only: skipped otherwise); clock jumps use
libfaketime (Debian package faketime) on the agent process only.
"""

import contextlib
import glob
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent import config
from agent.runner import run_probes
from probes.contract.records import Status
from probes.emulators import SimulatedTerminal

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
CLOCK_SHIM = Path(__file__).resolve().parents[1] / "clock"


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill or freeze a filesystem needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


def wait_for_text(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def test_disk_full_under_the_outbox_is_logged_retried_and_loses_nothing(agent):
    a = agent(upload_retry_seconds=1.0)
    with tmpfs(a.outbox, 256):
        (a.outbox / "dead").mkdir()
        filler = fill(a.outbox)
        a.start()
        a.write("txn 1 response code: 96")
        assert wait_for_text(a.stderr, "failed, retrying", 5.0), a.stderr.read_text()
        assert "No space left on device" in a.stderr.read_text()
        assert a.proc.poll() is None
        assert not [p for p in a.outbox.iterdir() if p.name.startswith(".tmp")], "a half-written bundle was left"
        filler.unlink()
        found = a.wait_for(1, 6.0)
        a.wait_idle(6.0)
        assert [b["code"] for b in a.bundles()] == ["96"] == [b["code"] for b in found]
        a.stop()


def test_read_only_outbox_is_logged_and_recovers_when_writable_again(agent):
    a = agent(upload_retry_seconds=1.0)
    with tmpfs(a.outbox, 1024):
        (a.outbox / "dead").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(a.outbox)], check=True)
        a.start()
        a.write("txn 2 response code: 05")
        assert wait_for_text(a.stderr, "Read-only file system", 5.0), a.stderr.read_text()
        assert a.proc.poll() is None
        subprocess.run(["mount", "-o", "remount,rw", str(a.outbox)], check=True)
        assert [b["code"] for b in a.wait_for(1, 6.0)] == ["05"]
        a.stop()


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime not installed (Debian package faketime)")
def test_wall_clock_jumping_back_and_forward_loses_and_duplicates_nothing(agent, tmp_path):
    offset = tmp_path / "faketime"
    offset.write_text("+0d\n")
    env = {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # an NTP step moves the wall clock only
        "PYTHONPATH": str(CLOCK_SHIM),  # time.sleep as without libfaketime (tests/clock/sitecustomize.py)
    }
    a = agent(env=env, settle_seconds=0.2, max_wait_seconds=0.5)
    a.start()
    codes = []
    for jump, code in (("+0d", "51"), ("-3d", "05"), ("+400d", "96"), ("-1y", "14"), ("+0d", "55")):
        offset.write_text(jump + "\n")
        a.write(f"txn response code: {code}")
        codes.append(code)
        a.wait_idle(15.0)  # diagnosed and uploaded under this clock before it jumps again
    found = a.wait_for(len(codes), 8.0)
    assert sorted(b["code"] for b in a.bundles()) == sorted(codes) == sorted(b["code"] for b in found)
    assert a.proc.poll() is None
    assert a.stop() < 2.0


def test_devices_vanishing_mid_sweep_become_findings_and_the_next_sweep_works():
    results = {}
    with SimulatedTerminal.from_spec("network.high_latency") as terminal:
        cfg = config.load(None, terminal.overrides)
        worker = threading.Thread(target=lambda: results.update(sweep=run_probes(cfg)))
        worker.start()
        time.sleep(0.1)  # the TLS handshake is held back 0.4 s: pull everything away meanwhile
        shutil.rmtree(terminal.overrides["host"]["sysfs_root"])
        shutil.rmtree(terminal.overrides["host"]["procfs_root"])
    worker.join(10)
    sweep = results["sweep"]
    statuses = {r.name: r.status for r in sweep.results}
    assert Status.ERROR not in statuses.values() and Status.TIMEOUT not in statuses.values(), statuses
    with SimulatedTerminal.from_spec("healthy") as terminal:
        again = run_probes(config.load(None, terminal.overrides))
    assert {r.status for r in again.results} == {Status.OK}


def test_each_probe_with_its_device_gone_before_the_sweep():
    with SimulatedTerminal.from_spec("healthy") as terminal:
        cfg = config.load(None, terminal.overrides)
    sweep = run_probes(cfg)  # every emulator stopped and its files removed
    statuses = {r.name: r.status for r in sweep.results}
    assert Status.ERROR not in statuses.values() and Status.TIMEOUT not in statuses.values(), statuses
    ids = {f.id for f in sweep.findings()}
    assert {"printer.absent", "reader.absent", "network.connect_refused"} <= ids, ids


class TlsUploadServer:
    """The tests' upload server behind TLS with a certificate of our choosing."""

    def __init__(self, token: str, cert_and_key: Path) -> None:
        import ssl
        from http.server import ThreadingHTTPServer

        from uploadserver import Handler, UploadServer

        self.inner = UploadServer(token)
        handler = type("Handler", (Handler,), {"owner": self.inner})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_and_key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pki(tmp_path):
    import datetime as dt

    from probes.emulators import _ca

    backend = _ca.available_backend()
    trusted, stranger = _ca.make_ca("posdiag test CA", tmp_path, backend), _ca.make_ca("a stranger's CA", tmp_path, backend)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    files = {}
    for name, ca in (("good", trusted), ("wrong", stranger)):
        cert, key = _ca.issue(ca, later, tmp_path, backend)
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(cert + key)
    files["ca"] = tmp_path / "ca.pem"
    files["ca"].write_bytes(trusted.cert_pem)
    return files


def test_server_with_a_wrong_certificate_keeps_bundles_and_says_why(tmp_path, pki):
    from types import SimpleNamespace

    from agent import bundle
    from agent.outbox import Outbox
    from agent.upload import flush
    from remote.client import Client

    outbox = Outbox(tmp_path / "outbox", 1 << 20)
    built = bundle.build(bundle.BundleInput({"id": "T-1"}, bundle.Trigger("manual"), {}, {}, {}), bundle.Limits(), "tok")
    outbox.put(built.data, built.bundle_id)

    def settings(url):
        return SimpleNamespace(
            server_url=url, token="tok", ca_file=str(pki["ca"]), connect_timeout_seconds=1.0, read_timeout_seconds=2.0,
            max_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.02, retry_after_max_seconds=1.0,
        )

    impostor = TlsUploadServer("tok", pki["wrong"])
    try:
        report = flush(outbox, Client(settings(impostor.url)))
    finally:
        impostor.close()
    assert report.stopped and "certificate" in report.stopped.lower(), report.stopped
    assert [e.bundle_id for e in outbox.entries()] == [built.bundle_id] and not outbox.dead_entries()
    assert impostor.inner.stored == {}

    genuine = TlsUploadServer("tok", pki["good"])
    try:
        report = flush(outbox, Client(settings(genuine.url)))
    finally:
        genuine.close()
    assert report.sent == [built.bundle_id] and list(genuine.inner.stored) == [built.bundle_id]
    assert outbox.entries() == []


def test_plain_http_answering_an_https_url_is_a_tls_error_not_a_crash(tmp_path):
    from types import SimpleNamespace

    from agent import bundle
    from agent.outbox import Outbox
    from agent.upload import flush
    from remote.client import Client
    from uploadserver import UploadServer

    outbox = Outbox(tmp_path / "outbox", 1 << 20)
    built = bundle.build(bundle.BundleInput({"id": "T-1"}, bundle.Trigger("manual"), {}, {}, {}), bundle.Limits(), "tok")
    outbox.put(built.data, built.bundle_id)
    with UploadServer("tok") as plain:
        settings = SimpleNamespace(
            server_url=plain.url.replace("http://", "https://"), token="tok", ca_file="", connect_timeout_seconds=1.0,
            read_timeout_seconds=1.0, max_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.02,
            retry_after_max_seconds=1.0,
        )
        report = flush(outbox, Client(settings))
    assert report.stopped and ("ssl" in report.stopped.lower() or "tls" in report.stopped.lower()), report.stopped
    assert len(outbox.entries()) == 1
