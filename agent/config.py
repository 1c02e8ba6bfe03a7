"""Load, merge and validate the configuration.

The packaged config/posdiag.toml holds every default. One operator file (from --config,
else $POSDIAG_CONFIG, else /etc/posdiag/posdiag.toml when it exists) overrides it key by
key, so a terminal's file names only what differs. Every key is checked against the typed
settings classes; an error names the file the bad value came from and the key path, and one
pass reports every error of the file at once (ConfigErrors).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, ConfigErrors
from agent.settings import SECTIONS, ProbeSettings

SYSTEM_CONFIG = Path("/etc/posdiag/posdiag.toml")
DEFAULT_NAME = "posdiag.toml"


def packaged_default_text() -> str:
    """The packaged defaults (read from the package directory, not through importlib.resources,
    whose zip support the agent would carry in memory for nothing)."""
    import config as packaged

    return Path(packaged.__file__).with_name(DEFAULT_NAME).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Config:
    source: str
    data: dict[str, Any]
    sections: dict[str, Any]
    probes: dict[str, ProbeSettings]

    def section(self, name: str) -> Any:
        return self.sections[name]


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


def load(path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The effective config: packaged defaults, the operator file, then overrides
    (the simulated terminal's device paths)."""
    chosen = resolve_path(path)
    operator = (str(chosen), read_toml(chosen)) if chosen is not None else None
    return load_layers(operator, overrides)


def load_text(text: str, name: str) -> Config:
    """The effective config with `text` as the operator file (`config check -` reads stdin)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"not valid TOML ({exc})") from None
    return load_layers((name, data), None)


def load_layers(operator: tuple[str, dict[str, Any]] | None, overrides: dict[str, Any] | None) -> Config:
    default_name = f"packaged {DEFAULT_NAME}"
    data = tomllib.loads(packaged_default_text())
    layers = [(default_name, data)]
    if operator is not None:
        layers.append(operator)
    if overrides:
        layers.append(("--simulate", overrides))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = merge(merged, layer)

    def origin(keypath: str) -> str:
        for name, layer in reversed(layers):
            node: Any = layer
            for part in keypath.split("[", 1)[0].split("."):  # a list item comes from the layer that set the list
                if not isinstance(node, dict) or part not in node:
                    node = None
                    break
                node = node[part]
            if node is not None:
                return name
        return layers[-1][0]

    source = layers[1][0] if operator is not None else default_name
    return build(merged, origin, source)


def build(merged: dict[str, Any], origin: typing.Callable[[str], str], source: str) -> Config:
    """Every section checked; all problems found are raised together."""
    from probes import probe_modules

    problems: list[ConfigError] = []
    modules = probe_modules()
    known = set(SECTIONS) | {"probes"}
    check_keys(merged, known, "", origin, problems)
    sections = {name: convert(cls, merged.get(name, {}), name, origin, problems) for name, cls in SECTIONS.items()}
    probe_tables = merged.get("probes", {})
    if not isinstance(probe_tables, dict):
        problems.append(ConfigError(origin("probes"), "probes", "expected a table of probe sections"))
        probe_tables = {}
    check_keys(probe_tables, set(modules), "probes.", origin, problems)
    probes = {
        name: convert(module.SETTINGS, probe_tables.get(name, {}), f"probes.{name}", origin, problems)
        for name, module in modules.items()
    }
    if problems:
        raise ConfigErrors(problems)
    return Config(source=source, data=merged, sections=sections, probes=probes)


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
            import difflib

            guess = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            error = ConfigError(
                origin(prefix + key), prefix + key, f"unknown key{hint}; expected one of: {', '.join(sorted(known))}"
            )
            if problems is None:
                raise error
            problems.append(error)


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
    return cls(**values)


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


def dump(data: dict[str, Any]) -> str:
    """The effective config as TOML (for `posdiag config show`)."""
    lines: list[str] = []
    emit_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def emit_table(table: dict[str, Any], prefix: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not is_table_list(v)}
    if prefix and (scalars or not table):  # an empty table keeps its header
        lines.append(f"\n[{'.'.join(prefix)}]")
    for key, value in scalars.items():
        lines.append(f"{key} = {toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            emit_table(value, [*prefix, key], lines)
        elif is_table_list(value):
            for item in value:
                lines.append(f"\n[[{'.'.join([*prefix, key])}]]")
                for k, v in item.items():
                    lines.append(f"{k} = {toml_value(v)}")


def is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
