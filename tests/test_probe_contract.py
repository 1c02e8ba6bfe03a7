"""Conformance: every module in probes/ declares the contract, and every finding id it
declares can be produced on the simulated terminal."""

import dataclasses
import inspect

import pytest

from agent import config
from probes import probe_modules
from probes.contract.settings import ProbeSettings
from probes.emulators import emulator_modules, known_faults
from probes.emulators._model import FAULTS, PARTS

MODULES = sorted(probe_modules().items())


def test_the_six_probes_of_the_design_are_there():
    assert {"card_reader", "printer", "power", "storage", "network", "system"} <= set(probe_modules())


@pytest.mark.parametrize(("name", "module"), MODULES)
def test_probe_declares_the_contract(name, module):
    assert module.__name__ == f"probes.{name}"
    assert dataclasses.is_dataclass(module.SETTINGS) and issubclass(module.SETTINGS, ProbeSettings)
    assert module.SETTINGS.__dataclass_params__.frozen
    assert list(inspect.signature(module.run).parameters) == ["settings", "ctx"]
    prefix = {"card_reader": "reader", "payment_app": "app"}.get(name, name) + "."
    assert module.FINDINGS and all(fid.startswith(prefix) for fid in module.FINDINGS)
    assert len(set(module.FINDINGS)) == len(module.FINDINGS)


@pytest.mark.parametrize(("name", "module"), MODULES)
def test_every_finding_can_be_simulated(name, module):
    """A fault id is the finding it produces, or names the finding it shows (a suspended SIM
    shows modem.data_rejected), or the finding is how a probe sees a part broken upstream."""
    produced = known_faults() | {f.shows for f in FAULTS.values()} | {fid for p in PARTS.values() for fid in p.seen_as}
    assert set(module.FINDINGS) <= produced


@pytest.mark.parametrize(("name", "module"), MODULES)
def test_default_config_has_the_probe_section(name, module):
    settings = config.load().probes[name]
    assert settings.enabled and settings.timeout_seconds > 0


def test_emulators_declare_disjoint_faults():
    seen: set[str] = set()
    for module in emulator_modules():
        assert not (seen & module.FAULTS), module.__name__
        seen |= module.FAULTS
