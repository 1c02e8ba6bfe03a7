import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `make soak` sets this: fuzz examples and kill rounds are multiplied by it.
SOAK = max(1, int(os.environ.get("POSDIAG_SOAK", "1")))
POSDIAG = Path(sys.executable).parent / "posdiag"


# Modules whose tests assert a latency or a timeout window (the agent's 3 s from log line to
# stored bundle, a reader's or printer's timeout, the server's header timeout, a linear-time
# bound): `make test` runs them after the parallel part, one at a time, so that the other
# workers' load does not decide them.
SERIAL = {
    "test_daemon.py", "test_card_reader.py", "test_printer.py", "test_modem.py", "test_pcsc.py",
    "test_runner.py", "test_probe_trees.py", "test_redact.py",
    "reliability/test_slow_clients.py", "reliability/test_terminal_faults.py",
    "reliability/test_blob_store_hangs.py", "reliability/test_signin_flood.py", "server/test_ingest_floor.py",
    "reliability/test_herd.py", "server/test_server_query_budgets.py",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(ROOT / "tests").as_posix() in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session", autouse=True)
def _own_temp_directory(tmp_path_factory):
    """TMPDIR of the test processes, and so of every program they start (servers, agents,
    simulated terminals, the docs' `mktemp -d`), is a directory of this run: what earlier
    runs or other programs left in /tmp is never seen, and nothing is left there."""
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmpdir"))
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch):
    """Tests never read the machine's /etc/posdiag or the caller's $POSDIAG_CONFIG."""
    monkeypatch.delenv("POSDIAG_CONFIG", raising=False)
    monkeypatch.setattr("probes.contract.config_file.SYSTEM_CONFIG", Path("/nonexistent/posdiag.toml"))


def run_cli(*args: str, timeout: float = 60, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "POSDIAG_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [str(POSDIAG), *args], capture_output=True, text=True, timeout=timeout, input=input, env=full_env, cwd=ROOT
    )


def run_example(script: str, tmp: Path) -> subprocess.CompletedProcess:
    """A ```sh block of the docs as a reader runs it: bash, from the repository root, with the
    venv first on PATH. Its `mktemp -d` directories (every example makes its own) go under
    `tmp`, so runs neither collide nor leave anything behind."""
    env = {k: v for k, v in os.environ.items() if k != "POSDIAG_CONFIG"}
    env.update(PATH=f"{POSDIAG.parent}:{os.environ['PATH']}", TMPDIR=str(tmp))
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def support_server(tmp_path_factory):
    """A real support server (uvicorn, SQLite) on a loopback port, one per test module."""
    sys.path.insert(0, str(ROOT / "tests" / "server"))
    from server_harness import start_server

    data = tmp_path_factory.mktemp("support")
    running = start_server(f"sqlite:///{data}/support.db", data / "blobs", "sqlite")
    yield next(running)
    next(running, None)


@pytest.fixture
def agent(support_server, tmp_path):
    """Makes `posdiag run` agents (tests.agent_harness.Agent) enrolled at the support server;
    any still running at the end is killed."""
    from tests.agent_harness import Agent

    made = []

    def make(env=None, **daemon):
        made.append(Agent(support_server, tmp_path / f"a{len(made)}", env, **daemon))
        return made[-1]

    yield make
    for a in made:
        if a.proc and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
