"""Locate, read, merge and type-check posdiag.toml tables.

Shared by the terminal's whole-file loader (agent/config.py) and the support server's
[server] section (remote/server/cli.py), so it sits in the lowest package. A settings class
is a frozen dataclass; `bounded` (settings.py) and a field's `check` metadata say
what each key must be, and `convert` enforces it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from probes.contract.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/posdiag/posdiag.toml")
DEFAULT_NAME = "posdiag.toml"
# Keys a release moved: still an error (a file is never half-read), but one that says where.
MOVED = {"server.fleet.max_clock_ahead_seconds": "[server] clock_ahead_seconds"}


def packaged_default_text() -> str:
    """The packaged defaults (read from the package directory, not through importlib.resources,
    whose zip support the agent would carry in memory for nothing)."""
    import config as packaged

    return Path(packaged.__file__).with_name(DEFAULT_NAME).read_text(encoding="utf-8")


def resolve_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("POSDIAG_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except PermissionError:
        raise ConfigError(str(path), "", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML ({exc})") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def check_keys(
    table: dict[str, Any],
    known: set[str],
    prefix: str,
    origin: typing.Callable[[str], str],
    problems: list[ConfigError] | None = None,
) -> None:
    """Unknown keys are errors; with `problems`, each is appended there instead of raised."""
    for key in table:
        if key not in known:
            error = ConfigError(origin(prefix + key), prefix + key, unknown_key_problem(prefix, key, known))
            if problems is None:
                raise error
            problems.append(error)


def unknown_key_problem(prefix: str, key: str, known: set[str]) -> str:
    if prefix + key in MOVED:
        return f"this key has moved: set {MOVED[prefix + key]} instead"
    import difflib

    guess = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"unknown key{hint}; expected one of: {', '.join(sorted(known))}"


def convert(
    cls: type, raw: Any, keypath: str, origin: typing.Callable[[str], str], problems: list[ConfigError] | None = None
) -> Any:
    """`raw` checked against the settings class `cls`. With `problems`, every bad key is
    appended there (its default, or None, stands in) and checking goes on; else the first raises."""
    if not isinstance(raw, dict):
        error = ConfigError(origin(keypath), keypath, f"expected a table, got {describe(raw)}")
        if problems is None:
            raise error
        problems.append(error)
        raw = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(raw, set(fields), keypath + ".", origin, problems)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, fld in fields.items():
        path = f"{keypath}.{name}"
        default = None if fld.default is dataclasses.MISSING else fld.default
        try:
            if name not in raw:
                if fld.default is dataclasses.MISSING:
                    raise ConfigError(origin(keypath), path, "missing key")
                values[name] = default
                continue
            values[name] = check_value(hints[name], raw[name], path, origin, fld.metadata, problems)
        except ConfigError as error:
            if problems is None:
                raise
            problems.append(error)
            values[name] = default
    made = cls(**values)
    # Keys that depend on each other: a settings class may say what is wrong with the whole table.
    problem = made.table_problem() if hasattr(made, "table_problem") else None
    if problem:
        error = ConfigError(origin(keypath), keypath, problem)
        if problems is None:
            raise error
        problems.append(error)
    return made


def check_value(
    hint: Any,
    value: Any,
    path: str,
    origin: typing.Callable[[str], str],
    meta: typing.Mapping[str, Any],
    problems: list[ConfigError] | None = None,
) -> Any:
    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(origin(path), path, f"expected {expected}, got {describe(value)}")

    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or value == "":
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        for alternative in inner[:-1]:  # bool | str: true, false or a word such as "auto"
            try:
                return check_value(alternative, value, path, origin, meta)
            except ConfigError:
                continue
        return check_value(inner[-1], value, path, origin, meta, problems)
    if dataclasses.is_dataclass(hint):
        return convert(hint, value, path, origin, problems)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            fail("a list")
        item_meta = {"check": meta["check"]} if "check" in meta else {}
        return [check_value(args[0], item, f"{path}[{i}]", origin, item_meta, problems) for i, item in enumerate(value)]
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            fail("a table")
        table = {str(k): check_value(args[1], v, f"{path}.{k}", origin, {}) for k, v in value.items()}
        problem = meta["check"](table) if "check" in meta else None
        if problem:
            raise ConfigError(origin(path), path, problem)
        return table
    if hint is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(range_text("an integer", meta))
        return check_range(value, path, origin, meta, "an integer")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not finite(value):
            fail(range_text("a number", meta))
        return check_range(float(value), path, origin, meta, "a number")
    if hint is str:
        if not isinstance(value, str):
            fail("a string")
        choices = meta.get("choices") or ()
        if choices and value not in choices:
            fail(f"one of {', '.join(choices)}")
        problem = meta["check"](value) if "check" in meta else None
        if problem:
            raise ConfigError(origin(path), path, problem)
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def finite(value: float) -> bool:
    """TOML has nan and inf (and ints of any size); no bound check can catch nan."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_range(value: float, path: str, origin: typing.Callable[[str], str], meta: typing.Mapping[str, Any], kind: str) -> Any:
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(origin(path), path, f"expected {range_text(kind, meta)}, got {value}")
    return value


def range_text(kind: str, meta: typing.Mapping[str, Any]) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        return f"{kind} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{kind} of at least {lo:g}"
    if hi is not None:
        return f"{kind} of at most {hi:g}"
    return kind


def describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict | list) else ""
    return f"{kind} {shown}".strip()
