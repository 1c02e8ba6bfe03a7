"""One module per probe; the package is scanned, there is no registry to edit.

A probe module declares:
    NAME: str                      the probe's name and its [probes.NAME] config section
    SETTINGS: type                 a frozen dataclass extending probes.contract.settings.ProbeSettings
    FINDINGS: tuple[str, ...]      every finding id it can report
    def run(settings, ctx: ProbeContext) -> Observation

Helper modules that are not probes start with an underscore (probes/_sysfs.py).

A probe never raises on purpose: a missing device, a permission error, garbage on the
line become a status and findings. Every blocking call it makes is bounded by
ctx.remaining(), because the runner cannot kill a thread.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from probes.contract.settings import AppSettings, HostSettings


@dataclass(frozen=True)
class ProbeContext:
    host: HostSettings
    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    model: str = ""  # the terminal's model (config, else what the OS reports); "" when unknown
    app: AppSettings = AppSettings("")  # the [app] section: where the payment app writes its state

    def remaining(self, floor: float = 0.05) -> float:
        """Seconds left before the runner gives up on this probe (never below `floor`)."""
        return max(floor, self.started + self.timeout_s - time.monotonic())

    def sys(self, *parts: str) -> Path:
        return Path(self.host.sysfs_root, *parts)

    def proc(self, *parts: str) -> Path:
        return Path(self.host.procfs_root, *parts)


_modules: dict[str, ModuleType] | None = None


def probe_modules() -> dict[str, ModuleType]:
    global _modules
    if _modules is None:
        found = {}
        for info in pkgutil.iter_modules(__path__):
            if info.ispkg or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            if not hasattr(module, "NAME"):
                raise TypeError(f"{module.__name__} declares no NAME: helper modules in probes/ start with '_'")
            found[module.NAME] = module
        _modules = dict(sorted(found.items()))
    return _modules


def all_finding_ids() -> set[str]:
    return {fid for module in probe_modules().values() for fid in module.FINDINGS}
