"""`posdiag-support demo-fleet`: a newcomer gets a fleet to look at, an outage going on,
missing and at-risk terminals, and a sign-in that opens the pages on it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from server_harness import start_server
from test_server_pages import csrf_of

pytestmark = [pytest.mark.timeout(600), pytest.mark.clock]  # clock: event time ends now (tests/clock/run.py)
SUPPORT = Path(sys.executable).parent / "posdiag-support"


def test_demo_fleet_fills_a_directory_and_prints_a_working_sign_in(tmp_path):
    data = tmp_path / "fleet"
    done = subprocess.run([str(SUPPORT), "--data", str(data), "demo-fleet", "--terminals", "40", "--days", "1.5"],
                          capture_output=True, text=True, timeout=500)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"^40 terminals, \d+ heartbeats, \d+ bundles; open: outage acquirer=B", done.stdout, re.M), done.stdout
    assert f"serve:       posdiag-support --data {data} serve --port 8080" in done.stdout
    user, password = re.search(r"sign in:\s+(\S+) / (\S+)", done.stdout).groups()

    servers = start_server(f"sqlite:///{data / 'posdiag-support.db'}", data, "demo", users=False)
    server = next(servers)
    try:
        auth = (user, password)
        outage = requests.get(f"{server.url}/api/v1/incidents", params={"status": "open"}, auth=auth, timeout=30).json()["items"]
        assert [(i["kind"], i["scope"]) for i in outage] == [("outage", {"acquirer": "B"})]
        held = requests.get(f"{server.url}/api/v1/bundles", params={"verdict": "hold", "limit": 500}, auth=auth, timeout=30).json()["items"]
        assert len(held) >= 10 and {b["code"] for b in held} == {"96"}
        for status in ("missing", "at_risk"):
            listed = requests.get(f"{server.url}/api/v1/terminals", params={"status": status}, auth=auth, timeout=30).json()["items"]
            assert listed, status
        session = requests.Session()
        token = csrf_of(session.get(f"{server.url}/login", timeout=30).text)
        home = session.post(f"{server.url}/login", data={"csrf": token, "name": user, "password": password, "next": "/"}, timeout=30)
        assert home.url == f"{server.url}/" and f'href="/incidents/{outage[0]["id"]}"' in home.text
    finally:
        servers.close()

    again = subprocess.run([str(SUPPORT), "--data", str(data), "demo-fleet", "--terminals", "5"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "empty data directory" in again.stderr
