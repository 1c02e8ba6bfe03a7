"""Readable output for people: a live progress line and tables."""

from __future__ import annotations

from typing import TextIO

from agent.knowledge import finding_title
from agent.model import ProbeResult, Status, Sweep

STATUS_WORDS = {
    "en": {s: s.value for s in Status},
    "zh": {
        Status.OK: "正常",
        Status.WARN: "警告",
        Status.FAIL: "故障",
        Status.ABSENT: "未检测到",
        Status.ERROR: "出错",
        Status.TIMEOUT: "超时",
        Status.SKIPPED: "跳过",
    },
}
SWEEP_WORD = {"en": "sweep", "zh": "全部检测耗时"}
HEADERS = {
    "en": ("probe", "status", "time", "findings"),
    "zh": ("检测项", "状态", "耗时", "发现"),
}


class Progress:
    """One line, rewritten as each probe finishes; silent when not on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def __call__(self, result: ProbeResult, done: int, total: int) -> None:
        if self.live:
            self.stream.write(f"\r\033[K[{done}/{total}] {result.name}: {result.status.value}")
            self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


def sweep_table(sweep: Sweep, lang: str = "en") -> str:
    """One row per probe, its findings indented under it, then its metrics."""
    words = STATUS_WORDS.get(lang, STATUS_WORDS["en"])
    head = HEADERS.get(lang, HEADERS["en"])
    rows = [head] + [
        (r.name, words[r.status], f"{r.duration_ms:.0f} ms", str(len(r.findings))) for r in sweep.results
    ]
    widths = [max(display_width(row[i]) for row in rows) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(pad(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip()

    lines = [line(head), "  ".join("-" * w for w in widths)]
    for row, r in zip(rows[1:], sweep.results, strict=True):
        lines.append(line(row))
        for f in r.findings:
            mark = "✗" if f.severity == "fail" else "!"
            lines.append(f"    {mark} {f.id} ({finding_title(f.id, lang)}): {f.detail}")
        if r.metrics:
            lines.append("      " + ", ".join(f"{k}={v}" for k, v in r.metrics.items()))
    lines.append(f"{SWEEP_WORD.get(lang, 'sweep')} {sweep.wall_ms:.0f} ms")
    return "\n".join(lines)


def display_width(text: str) -> int:
    """Columns a string takes on a terminal: CJK characters are two wide."""
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))
