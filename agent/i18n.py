"""Which language a person reads, and the Chinese wording of what probes say in English.

A probe writes a finding's detail in English (it travels in bundles as written). The
catalogue's `probes` area (config/catalogue/probes.toml) holds, per finding id, Chinese
templates over the finding's `data` fields, and the Chinese form of the short phrases
probes write as reasons and data values (why a probe was skipped, why a printer is
offline). Shown in Chinese, a finding whose data fit none of its templates reads as its
title, never as English.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

from probes.contract import catalogue
from probes.contract.records import Finding

LOCALE_VARS = ("LC_ALL", "LC_MESSAGES", "LANG")  # POSIX precedence for message language


def locale_lang(environ: Mapping[str, str] = os.environ) -> str:
    """zh when the locale's message language is Chinese (zh_CN.UTF-8, zh_TW, zh), else en."""
    for name in LOCALE_VARS:
        value = environ.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def choose_lang(requested: str | None, configured: str, environ: Mapping[str, str] = os.environ) -> str:
    """--lang wins, then terminal.lang when it names a language, else the locale."""
    if requested:
        return requested
    return configured if configured in ("zh", "en") else locale_lang(environ)


def zh_messages() -> dict[str, Any]:
    """The Chinese of what probes say: templates per finding id, and short phrases."""
    return catalogue.words("probes", "zh")


def finding_detail(finding: Finding, lang: str) -> str:
    """The finding's detail in `lang`: the probe's own words in English, a template in Chinese."""
    if lang != "zh":
        return finding.detail
    from agent.knowledge import finding_title

    return zh_detail(finding) or finding_title(finding.id, lang)


def zh_detail(finding: Finding) -> str | None:
    """The first of the finding's Chinese templates its data fill, or None."""
    templates = zh_messages()["findings"].get(finding.id, [])
    values = {key: _localized(value) for key, value in finding.data.items()}
    for template in [templates] if isinstance(templates, str) else templates:
        try:
            return template.format(**values)
        except (KeyError, ValueError, IndexError):
            continue
    return None


def _localized(value: Any) -> Any:
    if isinstance(value, list):
        return catalogue.words("cli", "zh")["separator"].join(str(_localized(v)) for v in value)
    return phrase(value, "zh") if isinstance(value, str) else value


def phrase(text: str, lang: str) -> str:
    """A short English phrase (a probe's reason for not running, a printer's offline cause, an
    upload's outcome) in `lang`; a phrase with no Chinese form yet is shown as written."""
    if lang != "zh":
        return text
    for english, chinese in zh_messages()["phrases"].items():
        match = _phrase_pattern(english).fullmatch(text)
        if match:  # what a placeholder stands for may itself be a phrase: "upload failed: {why}"
            return chinese.format(**{k: phrase(v, lang) for k, v in match.groupdict().items()})
    return text


@functools.cache
def _phrase_pattern(english: str) -> re.Pattern[str]:
    """`payment app holds {file}` matches any text where {file} stands."""
    parts = re.split(r"\{(\w+)\}", english)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)))
