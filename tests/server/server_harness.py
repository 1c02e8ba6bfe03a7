"""Start a real support server (uvicorn on a loopback port) for tests; fresh PostgreSQL databases."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from server_bundles import PASSWORD

from remote.server import store
from remote.server.app import create_app
from remote.server.embedded import serving
from remote.server.service import Service

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_reachable() -> str | None:
    """None when PostgreSQL answers, else why not (the skip reason)."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) unreachable: {exc}"


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new database; its URL. Dropped at the end."""
    reason = pg_reachable()
    if reason:
        pytest.skip(reason)
    import psycopg

    name = f"posdiag_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class RunningServer:
    url: str
    service: Service
    backend: str
    tokens: dict[str, str] = field(default_factory=dict)

    def terminal(self, prefix: str = "T") -> tuple[str, str]:
        """A newly enrolled terminal: (id, token)."""
        terminal_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        token = store.add_terminal(self.service.engine, terminal_id)
        self.tokens[terminal_id] = token
        return terminal_id, token

    def upload(self, token: str, body: bytes, bundle_id: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"}
        if bundle_id:
            headers["Idempotency-Key"] = bundle_id
        return requests.post(f"{self.url}/api/v1/bundles", data=body, headers=headers, timeout=30, **kw)

    def get(self, path: str, user: str = "support", **kw) -> requests.Response:
        self.counted()
        return requests.get(self.url + path, auth=(user, PASSWORD), timeout=30, **kw)

    def post(self, path: str, user: str = "support", **kw) -> requests.Response:
        self.counted()
        return requests.post(self.url + path, auth=(user, PASSWORD), timeout=30, **kw)

    def counted(self) -> None:
        """Wait until the fleet has counted every upload and heartbeat answered so far (its
        queue's worker counts them after the answer): what a support user reads next shows them."""
        assert self.service.fleet_queue.wait_drained(60), "the fleet queue did not drain"


def browser_env() -> dict[str, str]:
    """Chromium's environment. The browser is a support person's, on its own clock: a clock
    run (tests/clock/run.py) moves the servers' and the tests' clocks, not the browser's
    (Chromium hangs at start under libfaketime)."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def default_settings():
    """The packaged [server] defaults, never the machine's /etc file."""
    import tomllib

    from probes.contract import config_file
    from remote.server_settings import ServerSettings

    data = tomllib.loads(config_file.packaged_default_text())["server"]
    return config_file.convert(ServerSettings, data, "server", lambda _key: "packaged posdiag.toml")


def start_server(
    db_url: str, data_dir: Path, backend: str, settings=None, users: bool = True
) -> Iterator[RunningServer]:
    """A generator: yields the running server once, stops it when resumed or closed."""
    app = create_app(db_url, data_dir, settings or default_settings())
    service: Service = app.state.service
    for role in ("support", "technician", "admin") if users else ():
        store.add_user(service.engine, role, role, PASSWORD)
    try:
        with serving(app) as url:
            yield RunningServer(url, service, backend)
    finally:
        service.close()
