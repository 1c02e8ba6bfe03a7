"""Reading kernel attribute files: absent attributes are None, never an exception."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def read_number(path: Path) -> float | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
