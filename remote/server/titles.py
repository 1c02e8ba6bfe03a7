"""Cause titles for the pages: the packaged knowledge base's `title` of each cause id, so a
list can show "printer.paper_out — 打印机缺纸" from the id alone that the index keeps."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path


@functools.cache
def cause_titles() -> dict[str, dict[str, str]]:
    import config

    titles: dict[str, dict[str, str]] = {}
    for path in sorted(Path(config.__file__).with_name("knowledge").glob("*.toml")):
        causes = tomllib.loads(path.read_text(encoding="utf-8")).get("causes", {})
        for cause_id, cause in causes.items():
            title = cause.get("title") if isinstance(cause, dict) else None
            if isinstance(title, dict):
                titles[cause_id] = {k: str(v) for k, v in title.items()}
    return titles
