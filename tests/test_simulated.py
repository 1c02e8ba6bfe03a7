"""The simulated terminal as a device model: every fault changes what its own probe finds, a
fault that breaks a part changes every probe that looks at a part downstream of it (no SIM: no
link, no route, no DNS), and probes that look at nothing it broke stay healthy. Everything runs
through the probes' real code paths; a healthy terminal finds nothing."""

import json
from pathlib import Path

import pytest

from agent import config
from agent.i18n import zh_detail
from agent.runner import run_probes
from probes import all_finding_ids, probe_modules
from probes.contract.errors import UsageError
from probes.contract.records import Finding, Severity, Status
from probes.emulators import SimulatedTerminal, known_faults, parse_faults
from probes.emulators._model import FAULTS, PARTS, TerminalState, downstream, evaluate, first_seen
from tests.conftest import run_cli


def sweep_for(spec: str):
    with SimulatedTerminal.from_spec(spec) as terminal:
        return run_probes(config.load(None, terminal.overrides)), terminal.workdir


def findings_for(fault: str) -> dict[str, list[Finding]]:
    """probe name -> its findings with this one fault. PC/SC faults run in a posdiag process of
    their own: pcsc-lite's client reads its socket's name once per process, and this test
    process may already have talked to another pcscd (tests/test_pcsc.py)."""
    if evaluate(frozenset({fault})).uses_pcsc:
        result = run_cli("probe", "--simulate", fault, "--json")
        assert result.returncode in (0, 1), result.stderr
        return {
            p["name"]: [Finding(f["id"], Severity(f["severity"]), f["detail"], f["data"]) for f in p["findings"]]
            for p in json.loads(result.stdout)["probes"]
        }
    sweep, _ = sweep_for(fault)
    return {r.name: r.findings for r in sweep.results}


def test_healthy_terminal_is_all_ok():
    sweep, _ = sweep_for("healthy")
    assert {r.name: r.status for r in sweep.results} == {r.name: Status.OK for r in sweep.results}
    assert not sweep.findings()
    keys = {key for r in sweep.results for key in r.metrics}  # plain names: no path or endpoint inside a key
    assert {"latency_ms", "latency_endpoint", "rssi_dbm", "operator", "used_pct", "mount", "sign_in_age_h"} <= keys
    assert not [key for key in keys if "[" in key or "/" in key]


def test_every_fault_has_its_place_in_the_device_model():
    assert set(FAULTS) == known_faults()
    assert {p.probe for p in PARTS.values()} - {None} <= set(probe_modules())
    for part in PARTS.values():
        assert set(part.seen_as) <= all_finding_ids()


def test_the_model_chains_sim_to_host_and_keys_to_the_host_answer():
    assert downstream("sim")[:4] == ["registration", "data_session", "cellular_link", "private_apn"]
    assert {"route", "dns", "host", "tls", "host_answer"} <= set(downstream("sim"))
    assert {"master_key", "working_keys", "mac", "host_answer"} <= set(downstream("secure_module"))
    no_sim = evaluate(frozenset({"modem.sim_absent"}))
    assert {part for part, root in no_sim.down.items() if root == "modem.sim_absent"} >= {"cellular_link", "route", "dns", "tls"}
    assert no_sim.host_answer() == ""  # no answer comes back: the app shows a communication error
    assert evaluate(frozenset({"app.keys_out_of_step"})).host_answer() == "A0"


def probe_of(part: str) -> str | None:
    return PARTS[part].probe


@pytest.mark.parametrize("fault", sorted(known_faults()))
def test_each_fault_changes_what_the_device_model_says_it_breaks(fault):
    state: TerminalState = evaluate(frozenset({fault}))
    found = findings_for(fault)
    ids = {name: {f.id for f in findings} for name, findings in found.items()}
    home = probe_of(FAULTS[fault].part)
    assert ids[home], f"{fault}: its own probe {home} found nothing"
    assert (FAULTS[fault].shows or fault) in ids[home]  # most fault ids are the finding they produce
    touched = {home}
    for part, root in state.down.items():
        probe = probe_of(part)
        if probe is None or not state.has(part):
            continue
        touched.add(probe)
        assert ids[probe], f"{fault} breaks {part}, but {probe} found nothing"
        if FAULTS[root].part != part and first_seen(state, part):
            assert set(PARTS[part].seen_as) <= ids[probe], f"{fault} breaks {part}: {probe} found {ids[probe]}"
    # a TLS handshake on a machine shared by many jobs may pass the 250 ms latency mark: load, not the fault
    noise = {"network.high_latency"} - {fault}
    quiet = {name: found_ids - noise for name, found_ids in ids.items() if name not in touched and found_ids - noise}
    assert not quiet, f"{fault} touches {sorted(touched)} only, yet {quiet}"
    for finding in (f for findings in found.values() for f in findings):  # shown in Chinese by its own template
        assert zh_detail(finding), f"no Chinese template of {finding.id} fits its data {finding.data}"


def test_faults_combine():
    sweep, _ = sweep_for("power.battery_low,network.dns_failed,storage.emmc_eol")
    assert {"power.battery_low", "network.dns_failed", "storage.emmc_eol"} <= {f.id for f in sweep.findings()}


def test_emulators_clean_up_after_themselves():
    _, workdir = sweep_for("storage.readonly")
    assert workdir is not None and not Path(workdir).exists()


def test_unknown_fault_lists_the_known_ones():
    with pytest.raises(UsageError) as err:
        parse_faults("printer.on_fire")
    assert "printer.on_fire" in str(err.value) and "network.dns_failed" in str(err.value)


def test_cli_simulated_sweep_json_shape_and_exit_codes():
    result = run_cli("probe", "--simulate", "healthy", "--json", "--only", "power,storage,network,system")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {p["name"]: p["status"] for p in doc["probes"]} == dict.fromkeys(["network", "power", "storage", "system"], "ok")
    assert doc["sweep"]["wall_ms"] > 0 and doc["sweep"]["started_at"]
    failing = run_cli("probe", "--simulate", "storage.readonly", "--json", "--only", "storage")
    assert failing.returncode == 1
    assert json.loads(failing.stdout)["probes"][0]["findings"][0]["id"] == "storage.readonly"
    warning_only = run_cli("probe", "--simulate", "power.battery_low", "--json", "--only", "power")
    assert warning_only.returncode == 0


def test_cli_unknown_fault_is_usage_error_and_leaves_no_temp_dirs(tmp_path):
    # A temp directory of the test's own: other processes' posdiag-sim-* in /tmp do not count.
    result = run_cli("probe", "--simulate", "nosuch.fault", env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 2 and "unknown fault nosuch.fault" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_table_for_people():
    fault = "printer.paper_out" if "printer.paper_out" in known_faults() else "power.battery_low"
    result = run_cli("probe", "--simulate", fault, env={"LC_ALL": "", "LC_MESSAGES": "", "LANG": "zh_CN.UTF-8"})
    assert "全部检测耗时" in result.stdout and "检测项" in result.stdout
    english = run_cli("probe", "--simulate", "power.battery_low", "--only", "power", "--lang", "en")
    assert "sweep" in english.stdout and "power.battery_low (battery low)" in english.stdout
