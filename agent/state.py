"""Small JSON state files, written atomically (temp, fsync, rename) so a crash or power
cut leaves the old state or the new one, never half of either."""

from __future__ import annotations

import json
from pathlib import Path

from agent.outbox import write_atomic

TYPE_CHECKING = False  # typing's, without importing typing (0.4 MB): agent/resident.py says why
if TYPE_CHECKING:
    from typing import Any


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def save(self, value: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(value, ensure_ascii=False).encode("utf-8"))
