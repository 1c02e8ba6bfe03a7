"""Probe modules made on the fly, for runner tests and the sweep benchmark.

They are real modules registered in the scanned registry (probes._modules), so the
runner and the config loader treat them exactly as shipped probes.
"""

from __future__ import annotations

import contextlib
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import probes
from probes.contract.records import Finding, Observation
from probes.contract.settings import ProbeSettings


@dataclass(frozen=True)
class FakeSettings(ProbeSettings):
    pass


def make(name: str, behaviour: Callable[[], Observation]) -> types.ModuleType:
    module = types.ModuleType(f"probes.{name}")
    module.NAME = name
    module.SETTINGS = FakeSettings
    module.FINDINGS = (f"{name}.seen",)
    module.run = lambda settings, ctx: behaviour()
    return module


def sleeper(seconds: float) -> Callable[[], Observation]:
    def behaviour() -> Observation:
        time.sleep(seconds)
        return Observation([Finding.warn("slow.seen", f"slept {seconds} s")])

    return behaviour


def hang(release: threading.Event) -> Callable[[], Observation]:
    def behaviour() -> Observation:
        release.wait()
        return Observation()

    return behaviour


@contextlib.contextmanager
def registered(*modules: types.ModuleType) -> Iterator[dict]:
    """Adds the modules to the probe registry; yields the config sections they need."""
    registry = probes.probe_modules()
    for module in modules:
        registry[module.NAME] = module
    try:
        yield {"probes": {m.NAME: {"enabled": True, "timeout_seconds": 1.0} for m in modules}}
    finally:
        for module in modules:
            registry.pop(module.NAME, None)
