"""The learned table from the support server, as the terminal keeps it: `learned.json` in the
state directory, checked before it is kept (docs/outcomes.md). Light on purpose: the agent's
heartbeat reads the held table's hash while the agent idles; applying a table to a diagnosis
is agent/learned.py's.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.state import StateFile
from remote.outcome_wire import LEARNED_SCHEMA, MAX_LEARNED_BYTES, canonical, table_hash

FILE_NAME = "learned.json"
MAX_FACTOR = 1000.0  # far beyond any server's max_factor: a table past it is not one a server made
log = logging.getLogger(__name__)


class TableError(ValueError):
    """A learned table this terminal will not keep, and why."""


@dataclass(frozen=True)
class Entry:
    n: int  # visits of the code on this model
    N: int  # visits of the code on the fleet
    factors: dict[str, float]


@dataclass(frozen=True)
class LearnedTable:
    model: str  # "*": the fleet-wide table
    version: int
    hash: str
    codes: dict[str, Entry]


def parse(raw: bytes) -> LearnedTable:
    """A table as the server sends it, checked: schema, size, content hash, finite factors."""
    if len(raw) > MAX_LEARNED_BYTES:
        raise TableError(f"a learned table is at most {MAX_LEARNED_BYTES} bytes, got {len(raw)}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise TableError("a learned table is JSON") from None
    if not isinstance(doc, dict) or doc.get("schema") != LEARNED_SCHEMA:
        raise TableError(f"not a {LEARNED_SCHEMA} document")
    model, version, digest, codes = doc.get("model"), doc.get("version"), doc.get("hash"), doc.get("codes")
    if not isinstance(model, str) or not isinstance(version, int) or not isinstance(codes, dict):
        raise TableError("a learned table has a model, a version and codes")
    if digest != table_hash(model, codes):
        raise TableError("the table's hash does not match its content")
    return LearnedTable(model, version, digest, {key: _entry(key, value) for key, value in codes.items()})


def _entry(key: str, value: Any) -> Entry:
    if not isinstance(value, dict) or not isinstance(value.get("f"), dict):
        raise TableError(f"codes.{key}: an entry is {{n, N, f}}")
    factors = value["f"]
    for cause, factor in factors.items():
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor <= MAX_FACTOR or not math.isfinite(factor):
            raise TableError(f"codes.{key}.f.{cause}: a factor is a number in (0, {MAX_FACTOR:g}]")
    return Entry(int(value.get("n", 0)), int(value.get("N", 0)), {c: float(f) for c, f in factors.items()})


def store(state_dir: str | Path, received: bytes | dict[str, Any]) -> LearnedTable:
    """Keep a table received from the server, as bytes or as the parsed document of an answer
    that carried it (checked first: a bad one leaves the old in place)."""
    raw = canonical(received) if isinstance(received, dict) else received
    table = parse(raw)
    StateFile(Path(state_dir) / FILE_NAME).save(json.loads(raw))
    return table


def load(state_dir: str | Path, model: str) -> LearnedTable | None:
    """The kept table if it is for `model` (or the fleet's), else None; a damaged file is
    logged and ignored (the knowledge base alone decides)."""
    path = Path(state_dir) / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("learned table %s not read: %s", path, exc.strerror)
        return None
    try:
        table = parse(raw)
    except TableError as exc:
        log.warning("learned table %s ignored: %s", path, exc)
        return None
    return table if table.model in (model, "*") else None


def held_hash(state_dir: str | Path) -> str | None:
    """The hash of the table kept, for the server to tell whether to send another; None when
    none is kept (or it is damaged)."""
    try:
        doc = json.loads((Path(state_dir) / FILE_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    digest = doc.get("hash") if isinstance(doc, dict) else None
    return digest if isinstance(digest, str) else None
