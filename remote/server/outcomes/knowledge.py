"""What the server needs of the knowledge base to check and learn from outcomes: the cause ids
with their dispatch class, each code's prior weights (open, host answer) and engine.open_prior.

Read from the same TOML files as the terminal's loader (agent/knowledge.py, which checks
their shape; the server may not import agent/): the packaged config/knowledge/*.toml, then
[server.outcomes] knowledge_extra_paths, whose entries replace packaged ones as on a
terminal. tests/server/test_outcomes_knowledge.py holds the two readers to the same answers.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote.outcome_wire import code_key

VERDICT_RANKS = {"none": 0, "merchant": 1, "remote": 2, "onsite": 3}


class KnowledgeError(Exception):
    """A knowledge-base file the server cannot read."""


@dataclass(frozen=True)
class CodeView:
    key: str  # scheme:folded code
    host_answer: bool
    open: bool
    causes: dict[str, float]  # cause id -> prior weight


@dataclass(frozen=True)
class KnowledgeView:
    dispatch: dict[str, str]  # cause id -> none | merchant | remote | onsite
    codes: dict[str, CodeView]
    open_prior: float

    def code(self, scheme: str | None, code: str | None) -> CodeView | None:
        key = code_key(scheme, code)
        return self.codes.get(key) if key else None


def packaged_dir() -> Path:
    import config

    return Path(config.__file__).with_name("knowledge")


@functools.lru_cache(maxsize=4)
def load(extra_paths: tuple[str, ...] = ()) -> KnowledgeView:
    dispatch: dict[str, str] = {}
    codes: dict[str, CodeView] = {}
    open_prior = 0.1
    for path in _files([str(packaged_dir()), *extra_paths]):
        data = _read(path)
        for cause_id, cause in data.get("causes", {}).items():
            if isinstance(cause, dict) and cause.get("dispatch") in VERDICT_RANKS:
                dispatch[cause_id] = cause["dispatch"]
        scheme = data.get("scheme")
        for name, entry in data.get("codes", {}).items():
            key = code_key(scheme, name)
            if key and isinstance(entry, dict):
                weights = {c: float(w) for c, w in entry.get("causes", {}).items()}
                codes[key] = CodeView(key, bool(entry.get("host_answer")), bool(entry.get("open")), weights)
        engine = data.get("engine", {})
        if isinstance(engine.get("open_prior"), int | float):
            open_prior = float(engine["open_prior"])
    return KnowledgeView(dispatch, codes, open_prior)


def _files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.toml")))
        elif path.is_file():
            files.append(path)
        else:
            raise KnowledgeError(f"{path}: knowledge-base path not found ([server.outcomes] knowledge_extra_paths)")
    return files


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KnowledgeError(f"{path}: cannot read ({exc})") from None
