"""The words a person reads, in every language, from one place: config/catalogue/.

One TOML file per area (cli, explain, receipt, codes, visit, probes, pages, admin), one
table per language in it ([en], [zh]) with the same keys. The agent and the support
server both read their words here; this module sits under probes/contract so that both
may import it. The `probes` area is Chinese only: its English is what the probes write.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

LANGS = ("en", "zh")
DEFAULT_LANG = "en"


def directory() -> Traversable:
    return resources.files("config").joinpath("catalogue")


def area_names() -> list[str]:
    """Every area the catalogue holds, by file name."""
    return sorted(p.name.removesuffix(".toml") for p in directory().iterdir() if p.name.endswith(".toml"))


@functools.cache
def area(name: str) -> dict[str, dict[str, Any]]:
    """An area's words, one table per language: {"en": {...}, "zh": {...}}."""
    return tomllib.loads(directory().joinpath(f"{name}.toml").read_text(encoding="utf-8"))


def words(name: str, lang: str) -> dict[str, Any]:
    """An area's words in `lang`; English for a language the area does not have."""
    tables = area(name)
    return tables[lang] if lang in tables else tables[DEFAULT_LANG]
