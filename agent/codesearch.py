"""`codes search`: the codes a person means by a few words, in Chinese or English, or by
the start of a code.

Each term of the query must match a code's meaning, the title or id of one of its causes, or
the title of a finding that supports one of them; a generic code (E3, 3000) has every cause
the probes can bring, so it matches whatever a cause or finding matches:
- a Latin word matches by its Snowball stem, so `timeouts` finds "timeout" and `declined`
  finds "decline"; two adjacent words also count joined, so `timeout` finds "timed out";
  a stem of four letters or more also matches the start of a longer one (`insuff`);
- a Chinese term matches as a substring (Chinese has no word stems): `打印` finds 打印纸;
- a query that is the start of a code finds that code (`5` finds 51, 54, 55).
Codes found by their code come first, then by their meaning, then by a cause's title, then by
a finding's, then the generic codes.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import snowballstemmer

if TYPE_CHECKING:
    from agent.knowledge import Code, KnowledgeBase

WORD = re.compile(r"[a-z0-9]+")
CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff]")
MIN_PREFIX_STEM = 4


@functools.cache
def _stemmer() -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer("english")


def stems(text: str) -> set[str]:
    """Stems of the words in `text`, and each pair of adjacent stems written as one word."""
    words = _stemmer().stemWords(WORD.findall(text.casefold()))
    return set(words) | {a + b for a, b in zip(words, words[1:], strict=False)}


def term_matches(term: str, zh: str, en_stems: set[str]) -> bool:
    if CJK.search(term):
        return term in zh
    wanted = stems(term)
    return all(
        stem in en_stems or (len(stem) >= MIN_PREFIX_STEM and any(s.startswith(stem) for s in en_stems)) for stem in wanted
    ) and bool(wanted)


def text_matches(terms: list[str], zh: str, en: str) -> bool:
    en_stems = stems(en)
    return all(term_matches(term, zh, en_stems) for term in terms)


def search(kb: KnowledgeBase, query: str, order: list[str] | None = None) -> list[Code]:
    terms = query.casefold().split()
    if not terms:
        return []
    prefix = query.strip().casefold()
    ranked: list[tuple[int, int, str, Code]] = []
    schemes = order or []
    by_title = {cid for cid, c in kb.causes.items() if text_matches(terms, c.title.zh, f"{c.title.en} {cid}")}
    titles = {fid: kb.findings[fid] for c in kb.causes.values() for fid in c.support if fid in kb.findings}
    found = {fid for fid, t in titles.items() if text_matches(terms, t.zh, f"{t.en} {fid}")}
    by_finding = {cid for cid, c in kb.causes.items() if found & c.support.keys()}
    for code in kb.codes.values():
        if code.code.casefold().startswith(prefix):
            tier = 0
        elif text_matches(terms, code.meaning.zh, code.meaning.en):
            tier = 1
        elif by_title & code.causes.keys():
            tier = 2
        elif by_finding & code.causes.keys():
            tier = 3
        elif code.open and (by_title or by_finding):
            tier = 4
        else:
            continue
        place = schemes.index(code.scheme) if code.scheme in schemes else len(schemes)
        ranked.append((tier, place, code.code.casefold(), code))
    ranked.sort(key=lambda item: item[:3])
    return [item[3] for item in ranked]


def suggestions(kb: KnowledgeBase, code: str) -> list[str]:
    """Codes a person may have meant: the same code with or without leading zeros (`5` is 05)."""
    asked = code.strip().casefold()
    found = {c.code for c in kb.codes.values() if c.code.casefold() != asked and c.code.casefold().lstrip("0") == asked.lstrip("0")}
    return sorted(found)
