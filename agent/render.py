"""Readable output for people: a live progress line, tables, and lines wrapped to the screen."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from typing import TextIO

from agent.i18n import finding_detail, phrase
from agent.knowledge import finding_title
from agent.model import ProbeResult, Sweep
from probes.contract import catalogue

MIN_WIDTH = 40


def screen_width() -> int:
    """Columns to fit: $COLUMNS, else the terminal's, else 80 (a pipe or a file)."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)


class Progress:
    """One line naming the probes still running, rewritten as each finishes; silent when
    not on a terminal."""

    def __init__(self, stream: TextIO, names: Iterable[str], lang: str = "en") -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.running = list(names)
        self.lang = lang

    def __call__(self, result: ProbeResult, done: int, total: int) -> None:
        if result.name in self.running:
            self.running.remove(result.name)
        if self.live:
            self.stream.write("\r\033[K" + truncate(self.text(done, total), screen_width() - 1))
            self.stream.flush()

    def text(self, done: int, total: int) -> str:
        said = catalogue.words("cli", self.lang)
        return said["running"].format(done=done, total=total, names=said["separator"].join(self.running))

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


def sweep_table(sweep: Sweep, lang: str = "en", width: int | None = None) -> str:
    """One row per probe, its findings indented under it, then its reason or figures."""
    width = width or screen_width()
    labels = catalogue.words("cli", lang)
    head = tuple(labels["headers"])
    rows = [head] + [
        (r.name, labels["status"][r.status], f"{r.duration_ms:.0f} ms", str(len(r.findings))) for r in sweep.results
    ]
    widths = [max(display_width(row[i]) for row in rows) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(pad(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip()

    lines = [line(head), "  ".join("-" * w for w in widths)]
    for row, r in zip(rows[1:], sweep.results, strict=True):
        lines.append(line(row))
        for f in r.findings:
            mark = "✗" if f.severity == "fail" else "!"
            lines.append(f"    {mark} {f.id} ({finding_title(f.id, lang)}): {finding_detail(f, lang)}")
        metrics = dict(r.metrics)
        reason = metrics.pop("reason", None)
        if reason is not None:
            lines.append(f"      {labels['reason']}: {phrase(str(reason), lang)}")
        if metrics:
            lines.append(f"      {labels['metrics']}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    lines.append(f"{labels['sweep']} {sweep.wall_ms:.0f} ms")
    return "\n".join(fit(lines, width))


def fit(lines: Iterable[str], width: int) -> list[str]:
    """Each line wrapped to `width` columns; a continuation is indented 2 past its line."""
    out: list[str] = []
    for text in lines:
        out.extend(wrap(text, width))
    return out


def wrap(text: str, width: int) -> list[str]:
    if display_width(text) <= width:
        return [text]
    indent = " " * (len(text) - len(text.lstrip(" ")) + 2)
    lines: list[str] = []
    current = ""
    for word in split_words(text):
        if current.strip() and display_width(current + word.rstrip()) > width:
            lines.append(current.rstrip())
            current = indent + word.lstrip()
        else:
            current += word
        while display_width(current.rstrip()) > width:  # a word longer than a line is cut
            cut = cut_at(current, width)
            lines.append(current[:cut])
            current = indent + current[cut:]
    if current.strip():
        lines.append(current.rstrip())
    return lines


def split_words(text: str) -> list[str]:
    """Break points: after a space, and between wide (CJK) characters."""
    words: list[str] = []
    current = ""
    for ch in text:
        current += ch
        if ch == " " or display_width(ch) == 2:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return words


def cut_at(text: str, width: int) -> int:
    used = 0
    for i, ch in enumerate(text):
        used += display_width(ch)
        if used > width:
            return max(i, 1)
    return len(text)


def truncate(text: str, width: int) -> str:
    return text if display_width(text) <= width else text[: cut_at(text, width - 1)] + "…"


def display_width(text: str) -> int:
    """Columns a string takes on a terminal: CJK characters are two wide."""
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))
