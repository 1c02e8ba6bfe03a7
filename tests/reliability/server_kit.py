"""Shared by the server-side reliability tests: `posdiag-support serve` as a real subprocess,
bundles rebuilt with changed members (re-hashed and re-signed), and a signed-in web session."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "server"))

from server_bundles import PASSWORD, make_bundle, sign, tar_gz  # noqa: E402
from server_harness import browser_env, fresh_pg_database, pg_reachable, start_server  # noqa: E402

SUPPORT = Path(sys.executable).parent / "posdiag-support"
__all__ = ["PASSWORD", "browser_env", "make_bundle", "fresh_pg_database", "pg_reachable", "sign", "start_server"]


SERVES = itertools.count(1)


def serving_port(stderr: str) -> int | None:
    """The port in serve's `serving on http://HOST:PORT/` line, once it is printed."""
    found = re.search(r"serving on http://\S+?:(\d+)/", stderr)
    return int(found.group(1)) if found else None


class Serve:
    """One `posdiag-support serve` process; restartable on the same port, database and data.
    The first start listens on a port the system picks (`--port 0`, read from what serve
    prints), so parallel tests never race for one; a restart asks for the same port again."""

    def __init__(
        self, db_url: str, data: Path, logs: Path, access_log: bool = False, workers: int = 1,
        config: Path | None = None, files_limit: int | None = None,
        extra: tuple[str, ...] = (), env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """`extra`: more serve options; `env`: more variables; `prefix`: a command that runs
        serve (bench/cluster.py's CPU quota); `files_limit` as `LimitNOFILE=` would set it."""
        self.db_url, self.data, self.logs = db_url, data, logs
        self.access_log, self.workers = access_log, workers
        self.config, self.files_limit = config, files_limit
        self.extra, self.env, self.prefix = list(extra), env, list(prefix)
        self.port = 0
        self.name = f"serve-{next(SERVES)}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        assert self.port, "not started yet"
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.starts += 1
        cmd = [*self.prefix, str(SUPPORT), "--db", self.db_url, "--data", str(self.data), "serve", "--port", str(self.port)]
        cmd += ["--workers", str(self.workers)] + (["--access-log"] if self.access_log else []) + self.extra
        cmd += ["--config", str(self.config)] if self.config else []
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{self.name}-{self.starts}-stdout.log", "wb")  # noqa: SIM115 (kept by the child)
        err_path = self.logs / f"{self.name}-{self.starts}-stderr.log"
        err = open(err_path, "wb")  # noqa: SIM115
        env = dict(os.environ, **self.env) if self.env else None
        limit = self.files_limit

        def lower_files_limit() -> None:  # as `LimitNOFILE=` in a systemd unit would
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, env=env, preexec_fn=lower_files_limit
        )
        out.close()
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.output()[-2000:]}")
            if not self.port:
                self.port = serving_port(err_path.read_text(errors="replace")) or 0
            else:
                try:
                    if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"serve did not come up: {self.output()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no WAL checkpoint."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob(f"{self.name}-*.log")))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh database for a `Serve`: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'support.db'}"
        return
    with fresh_pg_database() as url:
        yield url


def rebuild(token: str, body: bytes, change: dict[str, bytes] | None = None, manifest: dict[str, Any] | None = None) -> bytes:
    """`body` with members replaced or added (`change`) and manifest keys set (`manifest`),
    its file list re-hashed and signed again with `token`: a valid bundle again, unless the
    changes themselves break it."""
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    members.update(change or {})
    doc = json.loads(members.pop("manifest.json"))
    members.pop("manifest.sig")
    doc["files"] = [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members.items()]
    doc.update(manifest or {})
    raw = json.dumps(doc, sort_keys=True).encode()
    return tar_gz([("manifest.json", raw), *members.items(), ("manifest.sig", sign(token, raw))])


def signed_in(base: str, user: str) -> requests.Session:
    """A browser-like session signed in through the login form (CSRF cookie and token)."""
    session = requests.Session()
    page = session.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = session.post(
        base + "/login", data={"csrf": token, "name": user, "password": PASSWORD, "next": "/"},
        allow_redirects=False, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 303, answer.text[:300]
    return session


def prepare(db_url: str, terminal_ids: list[str], users: bool = True) -> dict[str, str]:
    """Schema, the three test users and enrolled terminals, written before any server
    starts; returns {terminal id: token}."""
    from remote.server import db, store

    engine = db.make_engine(db_url)
    try:
        db.create_schema(engine)
        for role in ("support", "technician", "admin") if users else ():
            store.add_user(engine, role, role, PASSWORD)
        return {tid: store.add_terminal(engine, tid) for tid in terminal_ids}
    finally:
        engine.dispose()
