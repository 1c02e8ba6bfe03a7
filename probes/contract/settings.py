"""The base of every settings class: `bounded` fields and the keys every probe has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def bounded(lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A settings field with the range or choices the loader (config_file.py) checks."""
    return field(metadata={"lo": lo, "hi": hi, "choices": choices})


@dataclass(frozen=True)
class HostSettings:
    """Roots the probes read the kernel's view from (psutil's PROCFS_PATH idea)."""

    sysfs_root: str
    procfs_root: str


@dataclass(frozen=True)
class AppSettings:
    """What the terminal knows of its payment app: [app] state_file is a JSON file the app (or an
    integration beside it) writes with its keys, batch, trace and parameters (docs/probes.md);
    empty: none is written, and the payment_app probe is skipped."""

    state_file: str


@dataclass(frozen=True)
class ProbeSettings:
    """Keys every [probes.NAME] section has; a probe's own settings extend this."""

    enabled: bool
    timeout_seconds: float = bounded(0.05, 300)
