import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSDIAG = Path(sys.executable).parent / "posdiag"


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch):
    """Tests never read the machine's /etc/posdiag or the caller's $POSDIAG_CONFIG."""
    monkeypatch.delenv("POSDIAG_CONFIG", raising=False)
    monkeypatch.setattr("agent.config.SYSTEM_CONFIG", Path("/nonexistent/posdiag.toml"))


def run_cli(*args: str, timeout: float = 60, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "POSDIAG_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [str(POSDIAG), *args], capture_output=True, text=True, timeout=timeout, input=input, env=full_env, cwd=ROOT
    )
