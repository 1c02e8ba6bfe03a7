import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from agent import bundle
from agent.outbox import Outbox
from agent.upload import flush
from remote.client import Client, Halt, parse_retry_after
from tests.conftest import ROOT, run_cli
from tests.uploadserver import UploadServer, free_port

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight

TOKEN = "upload-token"


def upload_settings(url: str, **over) -> SimpleNamespace:
    values = {
        "server_url": url,
        "token": TOKEN,
        "ca_file": "",
        "connect_timeout_seconds": 0.5,
        "read_timeout_seconds": 1.0,
        "max_attempts": 8,
        "backoff_initial_seconds": 0.02,
        "backoff_max_seconds": 0.1,
        "retry_after_max_seconds": 5.0,
    }
    values.update(over)
    return SimpleNamespace(**values)


def fill(outbox: Outbox, count: int, token: str = TOKEN) -> list[str]:
    ids = []
    for n in range(count):
        inp = bundle.BundleInput({"id": "T-1"}, bundle.Trigger("scheduled"), {"n": n}, {}, {})
        built = bundle.build(inp, bundle.Limits(), token)
        outbox.put(built.data, built.bundle_id)
        ids.append(built.bundle_id)
    return ids


@pytest.fixture
def outbox(tmp_path):
    return Outbox(tmp_path / "outbox", 1 << 30)


def test_delivers_in_order_exactly_once_with_the_agreed_headers(outbox):
    ids = fill(outbox, 4)
    with UploadServer(TOKEN) as server:
        report = flush(outbox, Client(upload_settings(server.url)))
    assert report.sent == ids and report.remaining == 0 and not report.stopped
    assert server.store_order == ids
    assert outbox.entries() == []
    headers = server.seen[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/gzip"
    assert headers["Idempotency-Key"] == ids[0]


def test_server_down_then_up(outbox):
    ids = fill(outbox, 3)
    port = free_port()
    settings = upload_settings(f"http://127.0.0.1:{port}", max_attempts=3)
    report = flush(outbox, Client(settings))
    assert report.sent == [] and report.remaining == 3 and report.stopped == f"connection refused by 127.0.0.1:{port}"
    with UploadServer(TOKEN, port=port) as server:
        report = flush(outbox, Client(settings))
    assert report.sent == ids and server.store_order == ids


def test_server_comes_up_while_retrying(outbox):
    ids = fill(outbox, 2)
    port = free_port()
    server = UploadServer(TOKEN, port=port)
    threading.Timer(0.4, server.start).start()
    try:
        report = flush(outbox, Client(upload_settings(server.url, max_attempts=40)))
    finally:
        server.stop()
    assert report.sent == ids and server.store_order == ids


def test_5xx_burst(outbox):
    ids = fill(outbox, 3)
    with UploadServer(TOKEN) as server:
        server.faults.extend(["500", "502", "503", "504", "500", "408"])
        report = flush(outbox, Client(upload_settings(server.url)))
    assert report.sent == ids and server.store_order == ids
    assert server.requests == 3 + 6


def test_retry_after_is_honoured_in_seconds_and_as_a_date(outbox):
    ids = fill(outbox, 2)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with UploadServer(TOKEN) as server:
        server.faults.extend(["429:1", "", "429:date:2"])
        report = flush(outbox, Client(upload_settings(server.url), sleep=sleep))
    assert report.sent == ids
    assert len(slept) == 2
    assert 1.0 <= slept[0] <= 1.2  # the server's word, plus at most a tenth of it as jitter
    assert 0.9 <= slept[1] <= 2.3  # an HTTP date has whole seconds


def test_a_server_shedding_load_is_waited_out_as_it_asks_with_jitter(outbox):
    """503 + Retry-After (a server shedding load after an outage) is honoured as 429 is, each
    terminal adding up to a tenth: a fleet told the same does not come back at once."""
    ids = fill(outbox, 1)
    slept: list[float] = []
    with UploadServer(TOKEN) as server:
        server.faults.extend(["503:4"] * 3)
        report = flush(outbox, Client(upload_settings(server.url, retry_after_max_seconds=10.0), sleep=slept.append))
    assert report.sent == ids
    assert len(slept) == 3 and all(4.0 <= s <= 4.4 for s in slept) and len(set(slept)) == 3


def test_retry_after_is_capped(outbox):
    fill(outbox, 1)
    slept: list[float] = []
    with UploadServer(TOKEN) as server:
        server.faults.append("429:3600")
        flush(outbox, Client(upload_settings(server.url, retry_after_max_seconds=0.2), sleep=slept.append))
    assert slept and slept[0] <= 0.2 * 1.1


def test_connection_cut_mid_body_and_lost_answer(outbox):
    ids = fill(outbox, 3)
    with UploadServer(TOKEN) as server:
        server.faults.extend(["cut-body", "", "cut-after-store"])
        report = flush(outbox, Client(upload_settings(server.url)))
    assert server.store_order == ids
    assert report.duplicates == [ids[1]]  # stored, answer lost, sent again: the server said 200
    assert sorted(report.sent + report.duplicates) == sorted(ids)
    assert server.answers.count((ids[1], 200)) == 1


def test_slow_answer_times_out_and_is_not_stored_twice(outbox):
    ids = fill(outbox, 1)
    with UploadServer(TOKEN) as server:
        server.faults.append("slow:1.5")
        report = flush(outbox, Client(upload_settings(server.url, read_timeout_seconds=0.5)))
    assert report.duplicates == ids and server.store_order == ids


def test_refused_bundles_go_to_dead_letter_and_the_rest_goes_on(outbox):
    bad = fill(outbox, 1, token="someone-else")
    good = fill(outbox, 2)
    with UploadServer(TOKEN) as server:
        report = flush(outbox, Client(upload_settings(server.url)))
    assert report.dead == bad and report.sent == good
    assert server.store_order == good
    dead = outbox.dead_entries()
    assert [d.bundle_id for d in dead] == bad
    reason = json.loads(dead[0].path.with_name(dead[0].name[:-7] + ".reason.json").read_text())
    assert reason["status"] == 422 and reason["error"] == "bad_bundle" and "signature" in reason["detail"]


def test_too_large_is_dead_lettered(outbox):
    fill(outbox, 1)
    with UploadServer(TOKEN) as server:
        server.max_bytes = 100
        report = flush(outbox, Client(upload_settings(server.url)))
    assert len(report.dead) == 1 and json.loads(next(outbox.dead.glob("*.json")).read_text())["status"] == 413


def test_revoked_token_halts_and_keeps_every_bundle(outbox):
    ids = fill(outbox, 2)
    with UploadServer("the-new-token") as server:
        report = flush(outbox, Client(upload_settings(server.url)))
    assert report.remaining == 2 and report.dead == [] and "401" in report.stopped
    assert server.requests == 1  # not retried: waiting will not make the token valid
    assert [e.bundle_id for e in outbox.entries()] == ids


@pytest.mark.parametrize("status", [404, 405])
def test_a_wrong_server_url_halts_and_keeps_every_bundle(outbox, status):
    """404 (no such path) and 405 (a path that takes no POST) mean server_url is wrong: retrying or
    dead-lettering would lose bundles that a corrected URL delivers."""
    ids = fill(outbox, 2)
    with UploadServer(TOKEN) as server, MethodNotAllowed() as other:
        url = server.url + "/wrong" if status == 404 else other.url
        report = flush(outbox, Client(upload_settings(url)))
        assert report.remaining == 2 and report.dead == [] and report.stopped.startswith(f"HTTP {status}: ")
        assert "server_url" in report.stopped
        assert server.requests + other.requests == 1
        assert [e.bundle_id for e in outbox.entries()] == ids
        assert flush(outbox, Client(upload_settings(server.url))).sent == ids


class MethodNotAllowed:
    """A real HTTP server whose only resource takes GET, as a web server at a wrong URL does."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                owner.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(405)
                self.send_header("Allow", "GET")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_retries_are_told_as_they_happen(outbox):
    fill(outbox, 1)
    port = free_port()
    notes = []
    report = flush(outbox, Client(upload_settings(f"http://127.0.0.1:{port}", max_attempts=3)), lambda e, s: notes.append(s))
    retries = [n for n in notes if n.startswith("attempt ")]
    assert retries == [
        f"attempt 1/3 failed: connection refused by 127.0.0.1:{port}; retrying in " + retries[0].rsplit(" in ", 1)[1],
        f"attempt 2/3 failed: connection refused by 127.0.0.1:{port}; retrying in " + retries[1].rsplit(" in ", 1)[1],
    ]
    assert report.stopped == f"connection refused by 127.0.0.1:{port}"


def test_requeue_moves_refused_bundles_back(outbox):
    ids = fill(outbox, 2)
    with UploadServer(TOKEN) as server:
        server.max_bytes = 100
        assert flush(outbox, Client(upload_settings(server.url))).dead == ids
        assert outbox.entries() == []
        back = outbox.requeue(outbox.dead_entries()[0])
        assert [e.bundle_id for e in outbox.entries()] == [ids[0]] == [back.bundle_id]
        assert list(outbox.dead.glob("*.reason.json")) and len(list(outbox.dead.glob("*.reason.json"))) == 1
        server.max_bytes = 8 << 20
        assert flush(outbox, Client(upload_settings(server.url))).sent == [ids[0]]


def put_record(outbox: Outbox) -> str:
    """A visit outcome record (agent/visits.py) as the stand-in server takes it."""
    outcome_id = str(uuid.uuid4())
    outbox.put_outcome(json.dumps({"outcome_id": outcome_id}).encode(), outcome_id)
    return outcome_id


def test_outcome_records_go_with_the_flush_after_the_bundles_once_retry_after_honoured(outbox):
    ids = fill(outbox, 2)
    record = put_record(outbox)
    slept: list[float] = []
    with UploadServer(TOKEN) as server:
        server.faults.extend(["", "", "429:1"])
        report = flush(outbox, Client(upload_settings(server.url), sleep=slept.append))
        assert server.store_order == ids + [record]
        assert server.seen[-1]["Content-Type"] == "application/json" and server.seen[-1]["Idempotency-Key"] == record
        assert report.sent == ids and report.outcomes.sent == [record] and report.outcomes.remaining == 0
        assert len(slept) == 1 and 1.0 <= slept[0] <= 1.2
        outbox.put_outcome(server.stored[record], record)  # the answer was lost: sent again, stored once
        again = flush(outbox, Client(upload_settings(server.url)))
    assert again.outcomes.duplicates == [record] and server.store_order == ids + [record]
    assert outbox.outcome_entries() == [] and report.to_dict()["outcomes"]["sent"] == [record]


def test_outcome_records_wait_while_the_bundles_cannot_go(outbox):
    fill(outbox, 1)
    put_record(outbox)
    with UploadServer("the-new-token") as server:
        report = flush(outbox, Client(upload_settings(server.url)))
    assert server.requests == 1  # the bundle's only: the record would hear the same
    assert report.outcomes.remaining == 1 and report.outcomes.stopped == report.stopped and "401" in report.stopped


def test_a_refused_outcome_record_goes_to_dead_letter_with_the_answer(outbox):
    record = put_record(outbox)
    with UploadServer(TOKEN) as server:
        server.faults.append("422")
        report = flush(outbox, Client(upload_settings(server.url)))
    assert report.outcomes.dead == [record] and [e.bundle_id for e in outbox.dead_outcome_entries()] == [record]
    reason = json.loads(next(outbox.dead.glob("*.reason.json")).read_text())
    assert reason["status"] == 422 and reason["bundle_id"] == record


def test_no_server_configured():
    with pytest.raises(Halt):
        Client(upload_settings(""))


def test_parse_retry_after():
    now = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Mon, 23 Nov 2026 08:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 07:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


DRIVER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from types import SimpleNamespace
from agent.outbox import Outbox
from agent.upload import flush
from remote.client import Client

# KILL_AT=point:n makes this process SIGKILL itself at the n-th time it reaches `point`:
# post (bundle read, nothing sent yet), remove (server confirmed, file not yet unlinked),
# removed (file unlinked, next bundle not started). Only the moment is arranged; the kill is real.
point, _, count = os.environ.get("KILL_AT", "none:0").partition(":")
calls = {{}}

def deadly(name, fn, after=False):
    def wrapped(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        hit = point == name and calls[name] == int(count)
        if hit and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = fn(*args, **kwargs)
        if hit and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped

Client.post = deadly("post", Client.post)
Outbox.remove = deadly("remove", deadly("removed", Outbox.remove, after=True))
settings = SimpleNamespace(server_url={url!r}, token={token!r}, ca_file="", connect_timeout_seconds=0.5,
    read_timeout_seconds=2.0, max_attempts=5, backoff_initial_seconds=0.02, backoff_max_seconds=0.1,
    retry_after_max_seconds=1.0)
report = flush(Outbox({path!r}, 1 << 30), Client(settings))
print(report.remaining, flush=True)
"""
PHASES = ("headers", "body", "stored", "answered")


def test_sigkill_at_many_points_loses_nothing_and_stores_nothing_twice(tmp_path):
    """A real uploader process is SIGKILLed at every phase of an exchange as the server sees
    it, at exact points of its own loop, and at random moments during a run."""
    outbox = Outbox(tmp_path / "outbox", 1 << 30)
    ids = fill(outbox, 64)  # enough that no kill point finds the outbox already empty
    target: dict = {"pid": None, "at": None, "random": False}
    rng = random.Random(5)

    def hook(phase: str, number: int) -> None:
        if target["pid"] and target["at"] == (number, phase):
            os.kill(target["pid"], signal.SIGKILL)
        if target["pid"] and target["random"] and phase == "headers":
            target["random"] = False
            threading.Timer(rng.uniform(0, 0.01), os.kill, (target["pid"], signal.SIGKILL)).start()

    killed = 0
    with UploadServer(TOKEN) as server:
        server.hook = hook
        script = DRIVER.format(root=str(ROOT), url=server.url, token=TOKEN, path=str(outbox.root))
        plan = [("server", i) for i in range(12)] + [("self", i) for i in range(9)] + [("random", i) for i in range(6)]
        for kind, i in plan:
            env = dict(os.environ)
            if kind == "self":
                env["KILL_AT"] = f"{('post', 'remove', 'removed')[i % 3]}:{1 + i // 3}"
            proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
            if kind == "server":
                target.update(pid=proc.pid, at=(server.requests + 1 + i % 3, PHASES[i % 4]))
            elif kind == "random":
                target.update(pid=proc.pid, random=True)
            proc.wait(timeout=30)
            target.update(pid=None, at=None, random=False)
            killed += proc.returncode == -signal.SIGKILL
        server.hook = None
        for _ in range(3):
            finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
            if finished.stdout.strip() == "0":
                break
    assert killed >= 21  # a random kill may come after its run has finished
    assert outbox.entries() == [] and not list(outbox.root.glob(".tmp-*"))
    assert server.store_order == ids  # every bundle, once, in creation order
    assert server.duplicates() <= killed  # a resend only where a kill cut an exchange short


def test_cli_diagnose_upload_goes_through_the_outbox(tmp_path):
    with UploadServer(TOKEN) as server:
        config = tmp_path / "posdiag.toml"
        config.write_text(
            f'[outbox]\ndir = "{tmp_path / "outbox"}"\n'
            f'[upload]\nserver_url = "{server.url}"\ntoken = "{TOKEN}"\nbackoff_initial_seconds = 0.05\n'
        )
        server.faults.append("503")
        done = run_cli("diagnose", "--code", "96", "--simulate", "healthy", "--upload", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert len(server.store_order) == 1 and f"bundle {server.store_order[0]} uploaded" in done.stderr
    manifest, content = bundle.read(server.stored[server.store_order[0]])
    assert json.loads(content["diagnosis.json"]) == json.loads(done.stdout)
    assert manifest["trigger"]["kind"] == "manual" and manifest["trigger"]["code"] == "96"
    assert Outbox(tmp_path / "outbox", 1 << 30).entries() == []


def cli_config(tmp_path, url: str, **upload) -> str:
    path = tmp_path / "posdiag.toml"
    extra = "".join(f"{k} = {v}\n" for k, v in upload.items())
    path.write_text(
        f'[outbox]\ndir = "{tmp_path / "outbox"}"\n'
        f'[upload]\nserver_url = "{url}"\ntoken = "{TOKEN}"\nbackoff_initial_seconds = 0.05\n{extra}'
    )
    return str(path)


def test_cli_diagnose_upload_prints_the_diagnosis_then_fails_in_one_line(tmp_path):
    port = free_port()
    proc = run_cli(
        "diagnose", "--code", "96", "--simulate", "healthy", "--upload", "--lang", "en",
        "--config", cli_config(tmp_path, f"http://127.0.0.1:{port}", max_attempts=3),
    )
    assert proc.returncode == 3
    assert proc.stdout.startswith("Error 96") and "Dispatch:" in proc.stdout  # the diagnosis is whole
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("upload ") and "retrying in" in line][1].count("attempt 2/3") == 1
    final = lines[-1]
    assert final.startswith(f"posdiag: upload failed: connection refused by 127.0.0.1:{port}; bundle ")
    assert "Traceback" not in proc.stderr and "HTTPConnectionPool" not in proc.stderr and "Errno" not in proc.stderr
    assert len(Outbox(tmp_path / "outbox", 1 << 30).entries()) == 1
    assert "3 when --upload could not deliver the bundle" in " ".join(run_cli("diagnose", "--help").stdout.split())


def test_cli_diagnose_upload_in_chinese(tmp_path):
    port = free_port()
    proc = run_cli(
        "diagnose", "--code", "96", "--simulate", "healthy", "--upload", "--lang", "zh",
        "--config", cli_config(tmp_path, f"http://127.0.0.1:{port}", max_attempts=2),
    )
    assert proc.returncode == 3 and proc.stdout.startswith("错误码 96")
    retry, final = proc.stderr.splitlines()[-2:]
    assert retry.startswith("上传 ") and f"第 1/2 次尝试失败：127.0.0.1:{port} 拒绝连接；" in retry
    assert final.startswith(f"posdiag: 上传失败：127.0.0.1:{port} 拒绝连接；诊断包 ")


def test_cli_diagnose_upload_with_a_revoked_token_says_so(tmp_path):
    with UploadServer("the-new-token") as server:
        proc = run_cli("diagnose", "--code", "96", "--simulate", "healthy", "--upload", "--json", "--config", cli_config(tmp_path, server.url))
    assert proc.returncode == 3 and json.loads(proc.stdout)["error"]["code"] == "96"
    assert proc.stderr.splitlines()[-1].startswith("posdiag: upload failed: HTTP 401: the server does not accept this terminal's token")


def test_cli_outbox_requeue(tmp_path):
    with UploadServer(TOKEN) as server:
        server.max_bytes = 100
        config = cli_config(tmp_path, server.url)
        refused = run_cli("diagnose", "--code", "96", "--simulate", "healthy", "--upload", "--config", config)
        assert refused.returncode == 3 and "refused by the server" in refused.stderr
        box = Outbox(tmp_path / "outbox", 1 << 30)
        dead_id = box.dead_entries()[0].bundle_id
        listing = run_cli("outbox", "list", "--config", config).stdout
        assert "refused  " in listing and "HTTP 413: too_large" in listing
        assert max(len(line) for line in listing.splitlines()) <= 80
        assert run_cli("outbox", "requeue", "--config", config).returncode == 2  # ID or --all is required
        assert run_cli("outbox", "requeue", "nosuch", "--config", config).returncode == 1
        moved = run_cli("outbox", "requeue", dead_id[:8], "--config", config)
        assert moved.returncode == 0 and moved.stdout == f"{dead_id} back in the outbox\n"
        assert [e.bundle_id for e in box.entries()] == [dead_id] and box.dead_entries() == []
        assert run_cli("outbox", "requeue", "--all", "--config", config).returncode == 1  # none left
        server.max_bytes = 8 << 20
        assert run_cli("outbox", "flush", "--config", config).returncode == 0
    assert server.store_order == [dead_id]


def test_tls_verified_against_the_configured_ca(outbox, tmp_path):
    import ssl

    from probes.emulators import _ca

    backend = _ca.available_backend()
    ca = _ca.make_ca("posdiag test support CA", tmp_path, backend)
    cert, key = _ca.issue(ca, datetime.now(UTC) + timedelta(days=30), tmp_path, backend)
    (tmp_path / "server.pem").write_bytes(cert + key)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "other-ca.pem").write_bytes(_ca.make_ca("someone else", tmp_path, backend).cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    ids = fill(outbox, 2)
    with UploadServer(TOKEN, tls=context) as server:
        wrong = flush(outbox, Client(upload_settings(server.url, ca_file=str(tmp_path / "other-ca.pem"), max_attempts=2)))
        assert wrong.sent == [] and wrong.remaining == 2 and wrong.stopped.startswith("TLS: certificate of 127.0.0.1:")
        right = flush(outbox, Client(upload_settings(server.url, ca_file=str(tmp_path / "ca.pem"))))
    assert right.sent == ids and server.store_order == ids
