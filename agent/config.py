"""Load, merge and validate the configuration.

The packaged config/posdiag.toml holds every default. One operator file (from --config,
else $POSDIAG_CONFIG, else /etc/posdiag/posdiag.toml when it exists) overrides it key by
key, so a terminal's file names only what differs. Every key is checked against the typed
settings classes; an error names the file the bad value came from and the key path, and one
pass reports every error of the file at once (ConfigErrors). Reading and checking one table
is probes/contract/config_file.py's job, shared with the support server.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass
from typing import Any

from agent.settings import SECTIONS
from probes.contract import config_file
from probes.contract.errors import ConfigError, ConfigErrors
from probes.contract.settings import ProbeSettings


@dataclass(frozen=True)
class Config:
    source: str
    data: dict[str, Any]
    sections: dict[str, Any]
    probes: dict[str, ProbeSettings]

    def section(self, name: str) -> Any:
        return self.sections[name]


def load(path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The effective config: packaged defaults, the operator file, then overrides
    (the simulated terminal's device paths)."""
    return load_operator(operator_text(path), overrides)


def operator_text(path: str | None) -> tuple[str, str] | None:
    """(name, text) of the operator file `load(path)` reads; None when there is none. The
    agent keeps the text it accepted, so its workers read that, not a file edited since."""
    chosen = config_file.resolve_path(path)
    if chosen is None:
        return None
    try:
        return str(chosen), chosen.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(chosen), "", "file not found") from None
    except PermissionError:
        raise ConfigError(str(chosen), "", "permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(chosen), "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_operator(operator: tuple[str, str] | None, overrides: dict[str, Any] | None) -> Config:
    """The effective config with `operator` = (name, text) as the operator file, if any."""
    if operator is None:
        return load_layers(None, overrides)
    name, text = operator
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"not valid TOML ({exc})") from None
    return load_layers((name, data), overrides)


def load_text(text: str, name: str) -> Config:
    """The effective config with `text` as the operator file (`config check -` reads stdin)."""
    return load_operator((name, text), None)


def load_layers(operator: tuple[str, dict[str, Any]] | None, overrides: dict[str, Any] | None) -> Config:
    default_name = f"packaged {config_file.DEFAULT_NAME}"
    data = tomllib.loads(config_file.packaged_default_text())
    layers = [(default_name, data)]
    if operator is not None:
        layers.append(operator)
    if overrides:
        layers.append(("--simulate", overrides))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = config_file.merge(merged, layer)

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
    return build(country_scheme_order(merged, origin(KNOWLEDGE_ORDER) == default_name), origin, source)


KNOWLEDGE_ORDER = "knowledge.scheme_order"


def country_scheme_order(merged: dict[str, Any], order_is_default: bool) -> dict[str, Any]:
    """[terminal] country chooses [knowledge] scheme_order (scheme_order_by_country: a terminal
    in CN reads a bare 22 as UnionPay's) unless a file names scheme_order itself."""
    terminal, knowledge = merged.get("terminal"), merged.get("knowledge")
    if not order_is_default or not isinstance(terminal, dict) or not isinstance(knowledge, dict):
        return merged
    by_country, country = knowledge.get("scheme_order_by_country"), terminal.get("country")
    chosen = by_country.get(country) if isinstance(by_country, dict) and isinstance(country, str) else None
    if not isinstance(chosen, list):  # a wrong shape is reported by the checks at its own key
        return merged
    return config_file.merge(merged, {"knowledge": {"scheme_order": chosen}})


def build(merged: dict[str, Any], origin: typing.Callable[[str], str], source: str) -> Config:
    """Every section checked; all problems found are raised together."""
    from probes import probe_modules

    problems: list[ConfigError] = []
    modules = probe_modules()
    known = set(SECTIONS) | {"probes"}
    config_file.check_keys(merged, known, "", origin, problems)
    sections = {
        name: config_file.convert(cls, merged.get(name, {}), name, origin, problems) for name, cls in SECTIONS.items()
    }
    probe_tables = merged.get("probes", {})
    if not isinstance(probe_tables, dict):
        problems.append(ConfigError(origin("probes"), "probes", "expected a table of probe sections"))
        probe_tables = {}
    config_file.check_keys(probe_tables, set(modules), "probes.", origin, problems)
    probes = {
        name: config_file.convert(module.SETTINGS, probe_tables.get(name, {}), f"probes.{name}", origin, problems)
        for name, module in modules.items()
    }
    if problems:
        raise ConfigErrors(problems)
    return Config(source=source, data=merged, sections=sections, probes=probes)


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
