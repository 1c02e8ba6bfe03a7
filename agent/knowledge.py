"""The error-code knowledge base: load config/knowledge/*.toml (plus an operator's extra
files), check its shape, and answer look-ups.

Every file may hold any of these top-level keys, so an operator's vendor table is one file:

    scheme = "terminal"          the scheme of this file's [codes.*]
    [codes."3000"]               meaning = {zh, en}, host_answer, open, causes = {cause id = prior}
    [causes."printer.paper_out"] category, dispatch, title, support/weaken = {finding id = weight},
                                 actions.{merchant,technician,support} = [{zh, en}, ...],
                                 unfixed (merchant causes: the verdict when the merchant's fix
                                 did not hold, remote or onsite; default onsite)
    [findings."printer.paper_out"]  zh, en  (the finding's title)
    [categories.printer]         title, probes (whose clean pass weakens causes of the category), ok_weight
    [dispatch.onsite]            rank, reason, escalated, unfixed (remote and onsite: a merchant
                                 fix that did not hold)  (templates with {cause} / {finding})
    [engine]                     open_prior, unexplained_cause
    [explains]                   "root finding" = [findings it explains: its consequences]

Packaged files are read in name order, then `knowledge.extra_paths`; an entry defined twice
in the packaged set is an error, while an operator's entry replaces a packaged one. Every
error names the file and the key (probes.contract.errors.ConfigError).
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from probes.contract.errors import ConfigError

LANGS = ("zh", "en")
ROLES = ("merchant", "technician", "support")
# Dispatch classes from least to most: nobody, the merchant at the counter, support remotely,
# someone on site. The ranks in [dispatch.*] order them.
VERDICTS = ("none", "merchant", "remote", "onsite")
CATEGORIES = (
    "card", "merchant", "operator", "reader", "printer", "power",
    "storage", "network", "software", "host", "security", "transaction",
)  # fmt: skip
# Emitted by the runner itself, not by a probe module.
RUNNER_FINDINGS = frozenset({"probe.timeout", "probe.error"})


@dataclass(frozen=True)
class Text:
    zh: str
    en: str

    def get(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en

    def to_dict(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}

    def format(self, **values: Text) -> Text:
        return Text(
            self.zh.format(**{k: v.zh for k, v in values.items()}),
            self.en.format(**{k: v.en for k, v in values.items()}),
        )


@dataclass(frozen=True)
class Cause:
    id: str
    category: str
    title: Text
    dispatch: str
    support: dict[str, float]
    weaken: dict[str, float]
    actions: dict[str, tuple[Text, ...]]
    unfixed: str = "onsite"  # the verdict when a merchant verdict for this cause did not hold


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    meaning: Text
    host_answer: bool
    open: bool  # a generic code (E3, 3000): any cause the findings support is a candidate
    causes: dict[str, float]  # cause id -> prior weight


@dataclass(frozen=True)
class Category:
    id: str
    title: Text
    probes: tuple[str, ...]
    ok_weight: float


@dataclass(frozen=True)
class Verdict:
    id: str
    rank: int
    reason: Text
    escalated: Text
    unfixed: Text | None = None  # remote, onsite: the merchant was told how to fix it and it still fails


@dataclass(frozen=True)
class KnowledgeBase:
    codes: dict[tuple[str, str], Code]  # (scheme, folded code) -> Code
    causes: dict[str, Cause]
    findings: dict[str, Text]
    categories: dict[str, Category]
    verdicts: dict[str, Verdict]
    open_prior: float
    unexplained_cause: str
    explains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # root finding -> its consequences

    @property
    def schemes(self) -> list[str]:
        return sorted({scheme for scheme, _ in self.codes})

    def lookup(self, code: str, scheme: str | None, order: Iterable[str]) -> Code | None:
        key = fold(code)
        for name in [scheme] if scheme else order:
            found = self.codes.get((name, key))
            if found is not None:
                return found
        return None

    def lookup_all(self, code: str) -> list[Code]:
        key = fold(code)
        return [c for (_, k), c in sorted(self.codes.items()) if k == key]

    def search(self, text: str, order: list[str] | None = None) -> list[Code]:
        """Codes matching words, stems or a code prefix (agent/codesearch.py)."""
        from agent.codesearch import search

        return search(self, text, order)

    def finding_title(self, finding_id: str, lang: str) -> str:
        title = self.findings.get(finding_id)
        return title.get(lang) if title else finding_id


def fold(code: str) -> str:
    return code.strip().casefold()


def packaged_dir() -> Path:
    return Path(str(resources.files("config").joinpath("knowledge")))


def expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.toml")))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(str(path), "", "knowledge-base path not found (knowledge.extra_paths)")
    return files


@functools.lru_cache(maxsize=8)
def load(extra_paths: tuple[str, ...] = ()) -> KnowledgeBase:
    """The checked knowledge base: the packaged files, then the operator's."""
    builder = _Builder()
    for path in expand([packaged_dir()]):
        builder.add_file(path, replace=False)
    for path in expand(extra_paths):
        builder.add_file(path, replace=True)
    return builder.finish()


def load_for(config: Any) -> KnowledgeBase:
    """The knowledge base a config names, with its scheme_order checked against it."""
    settings = config.section("knowledge")
    kb = load(tuple(settings.extra_paths))
    for i, scheme in enumerate(settings.scheme_order):
        if scheme not in kb.schemes:
            raise ConfigError(
                config.source, f"knowledge.scheme_order[{i}]", f"unknown scheme {scheme!r}; known: {', '.join(kb.schemes)}"
            )
    return kb


def finding_title(finding_id: str, lang: str) -> str:
    """A finding's title in `lang` from the packaged knowledge base (the id when it has none)."""
    try:
        return load().finding_title(finding_id, lang)
    except ConfigError:
        return finding_id


_ENTRY_TABLES = ("codes", "causes", "findings", "categories", "dispatch", "explains")
_TOP_KEYS = {"scheme", "engine", *_ENTRY_TABLES}
_ENGINE_KEYS = ("open_prior", "unexplained_cause")


class _Builder:
    """Reads raw TOML tables into typed entries, remembering where each came from."""

    def __init__(self) -> None:
        self.raw: dict[str, dict[Any, tuple[str, Any]]] = {t: {} for t in _ENTRY_TABLES}
        self.engine: dict[str, tuple[str, Any]] = {}

    def add_file(self, path: Path, replace: bool) -> None:
        src = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(src, "", f"cannot read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(src, "", f"not valid TOML ({exc})") from None
        for key in data:
            if key not in _TOP_KEYS:
                raise ConfigError(src, key, f"unknown top-level key; expected one of: {', '.join(sorted(_TOP_KEYS))}")
        scheme = data.get("scheme")
        if "codes" in data and not isinstance(scheme, str):
            raise ConfigError(src, "scheme", "a file with [codes] must name its scheme, e.g. scheme = \"terminal\"")
        for table in _ENTRY_TABLES:
            entries = data.get(table, {})
            if not isinstance(entries, dict):
                raise ConfigError(src, table, "expected a table")
            for name, value in entries.items():
                key = (scheme, fold(name)) if table == "codes" else name
                shown = f"{table}.{name}"
                if key in self.raw[table] and not replace:
                    raise ConfigError(src, shown, f"defined twice (also in {self.raw[table][key][0]})")
                self.raw[table][key] = (src, (name, value))
        for key, value in _table(data.get("engine", {}), src, "engine").items():
            if key not in _ENGINE_KEYS:
                raise ConfigError(src, f"engine.{key}", f"unknown key; expected one of: {', '.join(_ENGINE_KEYS)}")
            self.engine[key] = (src, value)

    def finish(self) -> KnowledgeBase:
        findings = {n: _text(v, s, f"findings.{n}") for s, (n, v) in self.raw["findings"].values()}
        categories = {n: _category(n, v, s) for s, (n, v) in self.raw["categories"].values()}
        verdicts = {n: _verdict(n, v, s) for s, (n, v) in self.raw["dispatch"].values()}
        for name in CATEGORIES:
            if name not in categories:
                raise ConfigError(str(packaged_dir()), f"categories.{name}", "missing category")
        for name in VERDICTS:
            if name not in verdicts:
                raise ConfigError(str(packaged_dir()), f"dispatch.{name}", "missing dispatch verdict")
        ranks = [v.rank for v in verdicts.values()]
        if len(set(ranks)) != len(ranks):
            src = self.raw["dispatch"]["onsite"][0]
            raise ConfigError(src, "dispatch", f"each verdict needs its own rank, got {ranks}")
        known_findings = set(findings) | _probe_finding_ids()
        causes = {n: _cause(n, v, s, known_findings) for s, (n, v) in self.raw["causes"].values()}
        codes = {}
        for (scheme, key), (src, (name, value)) in self.raw["codes"].items():
            codes[(scheme, key)] = _code(name, scheme, value, src, causes)
        open_prior = _engine_number(self.engine, "open_prior")
        unexplained = _engine_str(self.engine, "unexplained_cause")
        if unexplained not in causes:
            raise ConfigError(self.engine["unexplained_cause"][0], "engine.unexplained_cause", f"unknown cause {unexplained!r}")
        explains = {n: _explained(n, v, s, known_findings) for s, (n, v) in self.raw["explains"].values()}
        _check_no_cycle(explains, self.raw["explains"])
        return KnowledgeBase(codes, causes, findings, categories, verdicts, open_prior, unexplained, explains)


def _explained(root: str, value: Any, src: str, known: set[str]) -> tuple[str, ...]:
    key = f"explains.{root}"
    if root not in known:
        raise ConfigError(src, key, "unknown finding id (not in findings.toml nor any probe's FINDINGS)")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(src, key, "expected a list of finding ids")
    for fid in value:
        if fid not in known:
            raise ConfigError(src, f"{key}.{fid}", "unknown finding id")
        if fid == root:
            raise ConfigError(src, key, "a finding cannot explain itself")
    return tuple(value)


def _check_no_cycle(explains: dict[str, tuple[str, ...]], raw: dict[Any, tuple[str, Any]]) -> None:
    """A chain goes one way: a finding that (through others) explains its own root is an error."""
    for root in explains:
        seen, todo = set(), list(explains[root])
        while todo:
            fid = todo.pop()
            if fid == root:
                raise ConfigError(raw[root][0], f"explains.{root}", "a circular chain: it explains itself through others")
            if fid not in seen:
                seen.add(fid)
                todo.extend(explains.get(fid, ()))


def _probe_finding_ids() -> set[str]:
    from probes import all_finding_ids

    return all_finding_ids() | RUNNER_FINDINGS


def _table(value: Any, src: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(src, key, f"expected a table, got {type(value).__name__}")
    return value


def _only(table: dict[str, Any], src: str, key: str, required: set[str], optional: set[str] = frozenset()) -> None:
    for name in table:
        if name not in required | optional:
            raise ConfigError(src, f"{key}.{name}", f"unknown key; expected one of: {', '.join(sorted(required | optional))}")
    for name in sorted(required):
        if name not in table:
            raise ConfigError(src, f"{key}.{name}", "missing key")


def _text(value: Any, src: str, key: str) -> Text:
    table = _table(value, src, key)
    _only(table, src, key, set(LANGS))
    for lang in LANGS:
        if not isinstance(table[lang], str) or not table[lang].strip():
            raise ConfigError(src, f"{key}.{lang}", "expected a non-empty string")
    return Text(table["zh"], table["en"])


def _number(value: Any, src: str, key: str, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise ConfigError(src, key, f"expected a finite number, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(src, key, f"expected a number of at least {lo:g}, got {value!r}")
    return float(value)


def _finite(value: float) -> bool:
    """TOML has nan and inf; nan passes every `<` check and would poison the ranking."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _weights(value: Any, src: str, key: str, known_findings: set[str]) -> dict[str, float]:
    table = _table(value, src, key)
    for fid in table:
        if fid not in known_findings:
            raise ConfigError(src, f"{key}.{fid}", "unknown finding id (not in findings.toml nor any probe's FINDINGS)")
    return {fid: _number(w, src, f"{key}.{fid}", lo=0) for fid, w in table.items()}


def _choice(value: Any, src: str, key: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(src, key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _cause(name: str, value: Any, src: str, known_findings: set[str]) -> Cause:
    key = f"causes.{name}"
    table = _table(value, src, key)
    _only(table, src, key, {"category", "dispatch", "title", "actions"}, {"support", "weaken", "unfixed"})
    category = _choice(table["category"], src, f"{key}.category", CATEGORIES)
    if name.split(".", 1)[0] != category or "." not in name:
        raise ConfigError(src, key, f"a cause id is category.name and its category is {category!r}")
    actions_raw = _table(table["actions"], src, f"{key}.actions")
    _only(actions_raw, src, f"{key}.actions", set(ROLES))
    actions = {}
    for role in ROLES:
        items = actions_raw[role]
        if not isinstance(items, list) or not items:
            raise ConfigError(src, f"{key}.actions.{role}", "expected a non-empty list of {zh, en} actions")
        actions[role] = tuple(_text(item, src, f"{key}.actions.{role}[{i}]") for i, item in enumerate(items))
    return Cause(
        id=name,
        category=category,
        title=_text(table["title"], src, f"{key}.title"),
        dispatch=_choice(table["dispatch"], src, f"{key}.dispatch", VERDICTS),
        support=_weights(table.get("support", {}), src, f"{key}.support", known_findings),
        weaken=_weights(table.get("weaken", {}), src, f"{key}.weaken", known_findings),
        actions=actions,
        unfixed=_choice(table.get("unfixed", "onsite"), src, f"{key}.unfixed", ("remote", "onsite")),
    )


def _code(name: str, scheme: str, value: Any, src: str, causes: dict[str, Cause]) -> Code:
    key = f"codes.{name}"
    table = _table(value, src, key)
    _only(table, src, key, {"meaning", "host_answer", "causes"}, {"open"})
    host_answer, is_open = table["host_answer"], table.get("open", False)
    for flag, val in (("host_answer", host_answer), ("open", is_open)):
        if not isinstance(val, bool):
            raise ConfigError(src, f"{key}.{flag}", f"expected true or false, got {val!r}")
    if host_answer and is_open:
        raise ConfigError(src, f"{key}.open", "a host answer cannot be open: the path to the host worked")
    priors = _table(table["causes"], src, f"{key}.causes")
    if not priors and not is_open:
        raise ConfigError(src, f"{key}.causes", "a code that is not open needs at least one cause")
    for cause_id, prior in priors.items():
        if cause_id not in causes:
            raise ConfigError(src, f"{key}.causes.{cause_id}", "unknown cause id")
        _number(prior, src, f"{key}.causes.{cause_id}", lo=0.001)
    return Code(
        code=name,
        scheme=scheme,
        meaning=_text(table["meaning"], src, f"{key}.meaning"),
        host_answer=host_answer,
        open=is_open,
        causes={c: float(p) for c, p in priors.items()},
    )


def _category(name: str, value: Any, src: str) -> Category:
    key = f"categories.{name}"
    table = _table(value, src, key)
    _only(table, src, key, {"title", "probes", "ok_weight"})
    _choice(name, src, key, CATEGORIES)
    probes = table["probes"]
    if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
        raise ConfigError(src, f"{key}.probes", "expected a list of probe names")
    return Category(name, _text(table["title"], src, f"{key}.title"), tuple(probes), _number(table["ok_weight"], src, f"{key}.ok_weight", lo=0))


def _verdict(name: str, value: Any, src: str) -> Verdict:
    key = f"dispatch.{name}"
    table = _table(value, src, key)
    _only(table, src, key, {"rank", "reason", "escalated"}, {"unfixed"} if name in ("remote", "onsite") else set())
    _choice(name, src, key, VERDICTS)
    rank = table["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ConfigError(src, f"{key}.rank", f"expected an integer, got {rank!r}")
    texts = {}
    for part in ("reason", "escalated", "unfixed"):
        if part not in table:
            continue
        text = _text(table[part], src, f"{key}.{part}")
        try:
            text.format(cause=text, finding=text)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(src, f"{key}.{part}", f"bad template ({exc!r}); use {{cause}} and {{finding}}") from None
        texts[part] = text
    return Verdict(name, rank, texts["reason"], texts["escalated"], texts.get("unfixed"))


def _engine_number(engine: dict[str, tuple[str, Any]], name: str) -> float:
    if name not in engine:
        raise ConfigError(str(packaged_dir()), f"engine.{name}", "missing key")
    src, value = engine[name]
    return _number(value, src, f"engine.{name}", lo=0.001)


def _engine_str(engine: dict[str, tuple[str, Any]], name: str) -> str:
    if name not in engine:
        raise ConfigError(str(packaged_dir()), f"engine.{name}", "missing key")
    src, value = engine[name]
    if not isinstance(value, str):
        raise ConfigError(src, f"engine.{name}", f"expected a string, got {value!r}")
    return value
