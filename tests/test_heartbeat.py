"""What the agent tells the fleet: heartbeat payloads, labels, and fleet incidents that
change what a diagnosis advises."""

import json

import pytest

from agent import config
from agent.heartbeat import Counters, payload
from agent.history import snapshot
from agent.incidents import IncidentMemory, advice
from agent.labels import labels_for, seen_in
from agent.outbox import Outbox
from probes.contract import config_file
from probes.emulators import SimulatedTerminal

pytestmark = pytest.mark.clock  # the date matters: tests/clock/run.py runs this module at midnight

HEALTH_KEYS = {
    "battery_pct", "battery_wear_ratio", "battery_cycle_count", "emmc_life_used_pct",
    "free_mib", "signal_dbm", "max_temp_c", "memory_available_mib",
}
COUNTER_KEYS = {"errors", "diagnoses", "bundles_waiting", "bundles_dead", "uptime_s"}


@pytest.fixture
def simulated(tmp_path):
    with SimulatedTerminal.from_spec("wifi") as sim:  # a healthy terminal on Wi-Fi: its level is the signal
        overrides = config_file.merge(sim.overrides, {
            "terminal": {"id": "HB-1", "model": "A920", "firmware": "2.1", "app_version": "5.0",
                         "labels": {"acquirer": "B", "region": "north"}},
            "daemon": {"state_dir": str(tmp_path / "state")},
            "outbox": {"dir": str(tmp_path / "outbox")},
        })
        yield config.load(overrides=overrides)


def test_a_heartbeat_follows_the_contract_from_the_newest_snapshot(simulated):
    snap = snapshot(simulated)
    body = payload(simulated, snap, Counters(errors=3, diagnoses=2), Outbox.from_config(simulated), labels_for(simulated))
    assert set(body) == {"terminal_id", "sent_at", "model", "firmware", "app_version", "agent_version", "labels", "learned_hash", "health", "counters"}
    assert (body["terminal_id"], body["model"], body["firmware"], body["app_version"]) == ("HB-1", "A920", "2.1", "5.0")
    assert body["sent_at"].endswith("Z")
    assert set(body["health"]) == HEALTH_KEYS and set(body["counters"]) == COUNTER_KEYS
    health = body["health"]
    # the simulated battery: 80 %, worn to charge_full / charge_full_design; eMMC level 2 -> 20 %
    assert health["battery_pct"] == snap["battery_pct"] and 0 < health["battery_wear_ratio"] <= 1
    assert health["emmc_life_used_pct"] == snap["emmc_life_used_pct"] > 0
    assert health["signal_dbm"] == snap["wifi_level_dbm"]
    assert health["free_mib"] > 0 and health["memory_available_mib"] > 0
    assert body["counters"]["errors"] == 3 and body["counters"]["diagnoses"] == 2
    assert body["counters"]["bundles_waiting"] == 0 and body["counters"]["uptime_s"] > 0
    json.dumps(body)  # it travels as JSON


def test_missing_health_is_null_not_absent(simulated):
    body = payload(simulated, None, Counters(), Outbox.from_config(simulated), {})
    assert set(body["health"]) == HEALTH_KEYS and all(v is None for v in body["health"].values())


def test_labels_add_what_the_probes_saw_unless_the_operator_set_it(simulated, tmp_path):
    seen = seen_in([
        {"name": "network", "metrics": {"link": "cellular"}},
        {"name": "modem", "metrics": {"operator": "China Mobile"}},
    ])
    assert seen == {"link": "cellular", "carrier": "China Mobile"}
    labels = labels_for(simulated, seen)
    assert labels == {"acquirer": "B", "region": "north", "link": "cellular", "carrier": "China Mobile"}
    # remembered for the next heartbeat, which sees no probe results
    assert labels_for(simulated) == labels
    operator_says = config.load(overrides=config_file.merge(simulated.data, {"terminal": {"labels": {"link": "ethernet"}}}))
    assert labels_for(operator_says)["link"] == "ethernet"


def test_the_snapshot_names_the_link_of_the_default_route(simulated):
    assert snapshot(simulated)["link"] == "wifi"  # this simulated terminal routes through wlan0


OUTAGE = {
    "id": "inc-7", "kind": "outage", "scope": {"acquirer": "B"}, "categories": ["host"],
    "summary": {"zh": "收单机构 B 主机故障", "en": "acquirer B host outage"},
}


def test_an_open_outage_in_the_category_of_the_top_cause_advises_holding(tmp_path):
    memory = IncidentMemory(tmp_path)
    memory.replace([OUTAGE, "junk", {"no": "id"}])
    assert memory.open() == [OUTAGE]
    held = advice(memory.open(), "host")
    assert held["incident_id"] == "inc-7"
    assert held["message"]["en"] == "acquirer B host outage: in progress, do not call a technician"
    assert "请勿派技术员" in held["message"]["zh"]
    assert advice(memory.open(), "printer") is None  # a paper-out terminal still needs its paper
    assert advice([{**OUTAGE, "kind": "regression"}], "host") is None
    memory.replace([])
    assert memory.open() == [] and advice(memory.open(), "host") is None


def test_incidents_are_written_only_when_they_change(tmp_path):
    memory = IncidentMemory(tmp_path)
    memory.replace([OUTAGE])
    stamp = (tmp_path / "incidents.json").stat().st_mtime_ns
    memory.replace([OUTAGE])
    assert (tmp_path / "incidents.json").stat().st_mtime_ns == stamp


def test_diagnose_tells_the_technician_not_to_come_during_an_outage(tmp_path):
    from tests.conftest import run_cli

    state = tmp_path / "state"
    IncidentMemory(state).replace([{**OUTAGE, "categories": ["host", "network"]}])
    conf = tmp_path / "posdiag.toml"
    conf.write_text(f'[terminal]\nid = "HB-2"\n[daemon]\nstate_dir = "{state}"\n')
    shown = run_cli("diagnose", "--code", "96", "--simulate", "healthy", "--config", str(conf), "--lang", "en")
    assert "acquirer B host outage: in progress, do not call a technician" in shown.stdout
    doc = json.loads(run_cli("diagnose", "--code", "96", "--simulate", "healthy", "--config", str(conf), "--json").stdout)
    assert doc["causes"][0]["category"] == "host" and doc["fleet"]["incident_id"] == "inc-7"
    # a printer fault on the same terminal is its own: no fleet advice
    paper = json.loads(run_cli("diagnose", "--code", "3000", "--simulate", "printer.paper_out", "--config", str(conf), "--json").stdout)
    assert paper["causes"][0]["category"] == "printer" and paper["fleet"] is None


def test_a_running_agent_reports_to_the_fleet_and_takes_probe_requests_with_its_heartbeat(agent):
    """A real `posdiag run` and a real support server: the heartbeat reaches the inventory with
    the terminal's labels and health, and a probe request waiting on the server is carried
    out from the heartbeat's answer (no separate poll: polls are an hour apart here)."""
    import time

    import requests
    from server_bundles import PASSWORD  # tests/server, on the path once a server runs

    a = agent(heartbeat_seconds=2.0, command_poll_seconds=3600.0)
    a.write_config('[terminal.labels]\nacquirer = "B"\nregion = "north"\n')  # the terminal's claim: a hint
    # The labels outages are cut by are the operator's (docs/fleet.md, which labels are trusted).
    owned = requests.patch(
        f"{a.server.url}/api/v1/terminals/{a.terminal}/labels", json={"acquirer": "B", "region": "north"},
        auth=("admin", PASSWORD), timeout=30,
    )  # fmt: skip
    assert owned.status_code == 200, owned.text
    command = a.server.post(f"/api/v1/terminals/{a.terminal}/commands", json={"probes": ["power"], "code": None}).json()
    a.start()
    deadline = time.monotonic() + 20
    while True:
        items = a.server.get(f"/api/v1/terminals?label.acquirer=B").json()["items"]
        mine = [t for t in items if t["id"] == a.terminal]
        if mine and "link" in mine[0]["labels"] and a.bundles():  # link: from the first health snapshot
            break
        assert time.monotonic() < deadline, (items, a.stderr.read_text())
        time.sleep(0.2)
    assert mine[0]["labels"]["region"] == "north" and mine[0]["labels"]["link"] == "cellular"
    assert {k: mine[0]["claimed_labels"][k] for k in ("acquirer", "region")} == {"acquirer": "B", "region": "north"}
    assert mine[0]["model"] == "SIM-POS" and mine[0]["status"] == "ok"
    (done,) = a.bundles()
    assert done["command_id"] == command["id"] and done["trigger_kind"] == "remote"
    assert a.stop() < 2.0
