"""The words a person reads live in one catalogue (config/catalogue/), in every language."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from probes.contract import catalogue
from tests.conftest import ROOT

CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
# Areas with no [en] table: their English is what the probes write (agent/i18n.py).
CHINESE_ONLY = {"probes"}
SCANNED = ("agent", "probes", "remote")
# Chinese in code that is not a word of the program's own, by file: None allows the whole file.
ALLOWED: dict[str, str | None] = {
    "agent/cli.py": "签到",  # an example search term in the help text: what a user types
    "remote/redact.py": None,  # labels of card data in Chinese logs: patterns read, never shown
    # Not yet moved: the bilingual summaries the fleet detectors write into incidents and
    # trends (the words of their own pages' areas once those files settle).
    "remote/server/fleet/incidents.py": None,
    "remote/server/fleet/inventory.py": None,
    "remote/server/fleet/outage.py": None,
    "remote/server/fleet/regression.py": None,
}


def keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key of a table, nested ones as dotted paths."""
    found = set()
    for key, value in table.items():
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= keys(value, f"{prefix}{key}.")
    return found


def user_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def chinese_outside_catalogue(root: Path) -> list[str]:
    problems = []
    for path in sorted(p for package in SCANNED for p in (root / package).rglob("*.py")):
        name = path.relative_to(root).as_posix()
        allowed = ALLOWED.get(name, "")
        for line, text in [] if name in ALLOWED and allowed is None else user_strings(path):
            if CJK.search(text.replace(allowed, "") if allowed else text):
                problems.append(f"{name}:{line}: {text[:60]!r}")
    return problems


@pytest.mark.parametrize("area", catalogue.area_names())
def test_every_word_is_in_both_languages(area):
    tables = catalogue.area(area)
    if area in CHINESE_ONLY:
        assert set(tables) == {"zh"}
        return
    assert set(tables) == set(catalogue.LANGS)
    assert keys(tables["en"]) == keys(tables["zh"])


@pytest.mark.parametrize("area", sorted(set(catalogue.area_names()) - CHINESE_ONLY))
def test_placeholders_match_across_languages(area):
    """A template fills the same fields in every language, or one of them fails at run time."""
    tables = catalogue.area(area)

    def fields(table: dict[str, Any]) -> dict[str, set[str]]:
        flat: dict[str, set[str]] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                flat |= {f"{key}.{k}": v for k, v in fields(value).items()}
            elif isinstance(value, str):
                flat[key] = set(re.findall(r"\{(\w+)", value))
        return flat

    assert fields(tables["en"]) == fields(tables["zh"])


def test_no_module_holds_chinese_words():
    assert chinese_outside_catalogue(ROOT) == []


def test_the_scan_sees_inline_chinese(tmp_path):
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "shown.py").write_text(
        '"""Docstrings may name 打印纸."""\n\ndef f(zh):\n    return "正常" if zh else "ok"\n', encoding="utf-8"
    )
    assert chinese_outside_catalogue(tmp_path) == ["agent/shown.py:4: '正常'"]


def test_an_area_missing_a_language_reads_as_english():
    assert catalogue.words("cli", "fr") == catalogue.words("cli", "en")
