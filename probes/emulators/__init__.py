"""The simulated terminal: emulated devices the probes talk to through their real code.

Each module here is one emulator and declares:
    FAULTS: frozenset[str]       the fault ids it plays (most are the finding id they produce)
    def start(state: TerminalState, workdir: Path) -> ContextManager[dict]
        starts the device (a pty, a sysfs tree, a loopback server) as the device model
        (_model.py) evaluated for the requested faults says it is: its own faults, and the
        parts that are down because something they need broke. It yields config overrides
        that point the probes at it; leaving the context stops it and removes what it made.

Emulators never touch the real machine's devices and send traffic only to loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pkgutil
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from probes.contract.config_file import merge
from probes.contract.errors import UsageError
from probes.emulators._model import BEARERS, TerminalState, evaluate

T = TypeVar("T")


def emulator_modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    ]


def known_faults() -> set[str]:
    return {fault for module in emulator_modules() for fault in module.FAULTS}


def parse_spec(spec: str) -> tuple[frozenset[str], frozenset[str]]:
    """`healthy`, `wifi`, `cellular` and fault ids, comma-separated: (faults, bearers asked for)."""
    names = {part.strip() for part in spec.split(",") if part.strip()}
    names.discard("healthy")
    bearers = frozenset(names & set(BEARERS))
    unknown = names - bearers - known_faults()
    if unknown:
        raise UsageError(
            f"unknown fault {', '.join(sorted(unknown))}; 'healthy', 'wifi', 'cellular' or any of: "
            f"{', '.join(sorted(known_faults()))}"
        )
    return frozenset(names - bearers), bearers


def parse_faults(spec: str) -> frozenset[str]:
    return parse_spec(spec)[0]


def with_faults(default: T, overrides: dict[str, dict[str, Any]], faults: frozenset[str]) -> T:
    """An emulator's device state (a frozen dataclass) with the fields each requested fault sets."""
    state = default
    for fault in sorted(faults & overrides.keys()):
        state = dataclasses.replace(state, **overrides[fault])
    return state


class SimulatedTerminal:
    """Context manager: all emulators up, `overrides` ready to merge into the config."""

    def __init__(self, faults: frozenset[str], bearers: frozenset[str] = frozenset()) -> None:
        self.faults = faults
        self.state: TerminalState = evaluate(faults, bearers)
        self.overrides: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()
        self.workdir: Path | None = None

    @classmethod
    def from_spec(cls, spec: str) -> SimulatedTerminal:
        return cls(*parse_spec(spec))

    def __enter__(self) -> SimulatedTerminal:
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="posdiag-sim-"))
            self._stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
            for module in emulator_modules():
                area = self.workdir / module.__name__.rsplit(".", 1)[1]
                area.mkdir()
                overrides = self._stack.enter_context(module.start(self.state, area))
                self.overrides = merge(self.overrides, overrides)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
