"""The support server inside another program, on a loopback port: `posdiag demo` and tests.

uvicorn runs in a thread; it installs no signal handlers there, so Ctrl-C stays with the
host program, which leaves the `with` block and the server stops.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI


@contextlib.contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", tls: tuple[str, str] | None = None) -> Iterator[str]:
    """Serve `app` on a free port of `host` until the block ends; yields the base URL.
    `tls` is (certificate file, key file) to serve HTTPS."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    from remote.server.connections import GuardedProtocol

    certfile, keyfile = tls or (None, None)
    config = uvicorn.Config(  # a browser's open connection holds no stop for long
        app, log_level="warning", access_log=False, lifespan="on", http=GuardedProtocol,
        ssl_certfile=certfile, ssl_keyfile=keyfile, timeout_graceful_shutdown=5,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="support-server")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            sock.close()
            raise RuntimeError("the support server did not start")
        time.sleep(0.02)
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass(frozen=True)
class DemoServer:
    url: str
    user: str
    password: str
    terminal_id: str
    token: str

    def agent_overrides(self, workdir: Path) -> dict[str, Any]:
        """Config for an agent enrolled here, with its outbox and state under `workdir`."""
        return {
            "terminal": {"id": self.terminal_id, "model": "SIM-POS", "firmware": "sim-1.0"},
            "upload": {"server_url": self.url, "token": self.token},
            "outbox": {"dir": str(workdir / "outbox")},
            "daemon": {"state_dir": str(workdir / "state")},
        }


@contextlib.contextmanager
def demo_server(workdir: Path, terminal_id: str = "DEMO-0001") -> Iterator[DemoServer]:
    """A throw-away server: SQLite in `workdir`, one support user with a random password,
    one enrolled terminal."""
    from remote.server import store
    from remote.server.app import create_app
    from remote.server.cli import server_settings

    app = create_app(f"sqlite:///{workdir / 'support.db'}", workdir / "data", server_settings(None))
    engine = app.state.service.engine
    password = secrets.token_urlsafe(9)
    store.add_user(engine, "demo", "support", password)
    token = store.add_terminal(engine, terminal_id)
    with serving(app) as url:
        yield DemoServer(url, "demo", password, terminal_id, token)
