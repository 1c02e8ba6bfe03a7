"""`battery_expected = "auto"`: a countertop terminal on mains is no "no battery" fault, a
portable one is; power_supply trees built in tmp_path, the model from config through the runner."""

from dataclasses import replace
from pathlib import Path

import pytest

from agent import config
from agent.runner import run_probes
from probes import ProbeContext, power
from probes.contract.errors import ConfigError
from probes.contract.settings import HostSettings

MAINS = {"sys/class/power_supply/AC/type": "Mains\n", "sys/class/power_supply/AC/online": "1\n"}
EMPTY_BAY = {"sys/class/power_supply/BAT0/type": "Battery\n", "sys/class/power_supply/BAT0/present": "0\n"}


def tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def observe(tmp_path: Path, files: dict[str, str], model: str = "", **changes):
    tree(tmp_path, files)
    settings = replace(config.load().probes["power"], **changes)
    ctx = ProbeContext(HostSettings(str(tmp_path / "sys"), str(tmp_path / "proc")), 2.0, model=model)
    return power.run(settings, ctx)


def test_the_default_is_auto():
    assert config.load().probes["power"].battery_expected == "auto"


def test_a_countertop_terminal_on_mains_without_a_battery_is_fine(tmp_path):
    out = observe(tmp_path, MAINS)
    assert out.findings == [] and out.metrics["external_power_online"] == 1


def test_an_empty_battery_bay_is_a_missing_battery_and_says_how_to_declare_a_countertop(tmp_path):
    (finding,) = observe(tmp_path, {**MAINS, **EMPTY_BAY}).findings
    assert finding.id == "power.no_battery" and finding.severity == "fail"
    assert "battery_expected = false" in finding.detail and "[probes.power]" in finding.detail


def test_a_model_declared_portable_expects_a_battery(tmp_path):
    out = observe(tmp_path, MAINS, model="PAX A920", portable_models=["pax a920"])
    assert [f.id for f in out.findings] == ["power.no_battery"]
    assert observe(tmp_path, MAINS, model="PAX Q20", portable_models=["pax a920"]).findings == []


@pytest.mark.parametrize(("expected", "ids"), [(True, ["power.no_battery"]), (False, [])])
def test_true_and_false_decide_outright(tmp_path, expected, ids):
    assert [f.id for f in observe(tmp_path, MAINS, battery_expected=expected).findings] == ids
    assert [f.id for f in observe(tmp_path, EMPTY_BAY, battery_expected=expected).findings] == ids


@pytest.mark.parametrize("value", ['"yes"', "1"])
def test_a_bad_value_names_the_key(tmp_path, value):
    conf = tmp_path / "posdiag.toml"
    conf.write_text(f"[probes.power]\nbattery_expected = {value}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(str(conf))
    assert caught.value.key == "probes.power.battery_expected"


def test_the_runner_hands_the_configured_model_to_the_probe(tmp_path):
    tree(tmp_path, MAINS)
    conf = tmp_path / "posdiag.toml"
    conf.write_text(
        f'[terminal]\nmodel = "N910"\n[host]\nsysfs_root = "{tmp_path / "sys"}"\nprocfs_root = "{tmp_path / "proc"}"\n'
        '[probes.power]\nportable_models = ["N910"]\n'
    )
    (result,) = run_probes(config.load(str(conf)), ["power"]).results
    assert [f.id for f in result.findings] == ["power.no_battery"]
