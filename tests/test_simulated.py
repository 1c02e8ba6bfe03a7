"""Every fault the simulated terminal knows produces exactly its finding through the
probes' real code paths; a healthy terminal produces none."""

import json
from pathlib import Path

import pytest

from agent import config
from agent.i18n import zh_detail
from agent.runner import run_probes
from probes.contract.errors import UsageError
from probes.contract.records import Status
from probes.emulators import SimulatedTerminal, known_faults, parse_faults
from tests.conftest import run_cli


def sweep_for(spec: str):
    with SimulatedTerminal.from_spec(spec) as terminal:
        return run_probes(config.load(None, terminal.overrides)), terminal.workdir


def test_healthy_terminal_is_all_ok():
    sweep, _ = sweep_for("healthy")
    assert {r.name: r.status for r in sweep.results} == {r.name: Status.OK for r in sweep.results}
    assert not sweep.findings()
    keys = {key for r in sweep.results for key in r.metrics}  # plain names: no path or endpoint inside a key
    assert {"latency_ms", "latency_endpoint", "wifi_level_dbm", "wifi_interface", "used_pct", "mount"} <= keys
    assert not [key for key in keys if "[" in key or "/" in key]


@pytest.mark.parametrize("fault", sorted(known_faults()))
def test_each_fault_produces_its_finding(fault):
    sweep, _ = sweep_for(fault)
    ids = {f.id for f in sweep.findings()}
    assert fault in ids
    probe = fault.split(".")[0].replace("reader", "card_reader")
    unrelated = {i for i in ids if not i.startswith(fault.split(".")[0] + ".")}
    assert not unrelated, f"{fault} also produced {unrelated} (probe {probe})"
    for finding in sweep.findings():  # shown in Chinese by its own template, not by its bare title
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
