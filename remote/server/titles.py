"""Cause and category titles for the pages: the packaged knowledge base's `title` of each
cause id and cause category, so a list can show "printer.paper_out — 打印机缺纸" from the id
alone that the index keeps."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path


@functools.cache
def cause_titles() -> dict[str, dict[str, str]]:
    return _titles("causes")


@functools.cache
def category_titles() -> dict[str, dict[str, str]]:
    return _titles("categories")


def _titles(table: str) -> dict[str, dict[str, str]]:
    import config

    titles: dict[str, dict[str, str]] = {}
    for path in sorted(Path(config.__file__).with_name("knowledge").glob("*.toml")):
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get(table, {})
        for name, entry in entries.items():
            title = entry.get("title") if isinstance(entry, dict) else None
            if isinstance(title, dict):
                titles[name] = {k: str(v) for k, v in title.items()}
    return titles
