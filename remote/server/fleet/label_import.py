"""The operator's labels from a CSV file, as a terminal management system (TMS) exports it.

The header is `terminal_id,KEY,KEY,...`; each row sets those keys of one terminal (an empty
cell removes the key; keys not in the header are left as they are). The file is checked
whole before anything is written, and written in one transaction: an import is all or none.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote import wire
from remote.server import db
from remote.server.db import terminals
from remote.server.fleet import inventory, labels
from remote.server.fleet.schema import fleet_terminals, operator_labels
from remote.server_settings import FleetSettings

MAX_ERRORS = 20
ID_COLUMN = "terminal_id"


class BadFile(ValueError):
    """The file breaks the format: every problem found, each as FILE:LINE:COLUMN: why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0] if problems else "bad file")
        self.problems = problems


@dataclass
class Summary:
    file: str
    rows: int = 0
    changed: int = 0
    unchanged: int = 0
    labels_set: int = 0
    labels_removed: int = 0
    not_enrolled: list[str] = field(default_factory=list)
    dry_run: bool = False


def parse(path: Path) -> list[tuple[str, dict[str, str | None]]]:
    """(terminal id, {key: value, or None to remove}) per row; BadFile naming file, line and column."""
    name = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise BadFile([f"{name}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BadFile([f"{name}:{line}: not UTF-8 text (byte {exc.start + 1}); export the file as UTF-8"]) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[str] = []
    try:
        header = [c.strip() for c in next(reader)]
    except StopIteration:
        raise BadFile([f"{name}:1: empty file; the first line is the header {ID_COLUMN},KEY,..."]) from None
    except csv.Error as exc:
        raise BadFile([f"{name}:1: {exc}"]) from None
    if header[:1] != [ID_COLUMN]:
        problems.append(f"{name}:1:1: the first column is {ID_COLUMN}, not {header[0][:40]!r}")
    if len(header) < 2:
        problems.append(f"{name}:1: no label columns; the header is {ID_COLUMN},KEY,...")
    for col, key in enumerate(header[1:], start=2):
        if not wire.LABEL_KEY.fullmatch(key):
            problems.append(f"{name}:1:{col}: {key[:40]!r}: label keys are 1-32 lower-case letters, digits or '_', starting with a letter")
        elif key in header[1 : col - 1]:
            problems.append(f"{name}:1:{col}: {key!r} is already column {header.index(key) + 1}")
    if problems:
        raise BadFile(problems)
    keys = header[1:]
    rows: list[tuple[str, dict[str, str | None]]] = []
    first_line: dict[str, int] = {}
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            problems.extend(_row_problems(name, line, cells, header, first_line))
            if len(problems) > MAX_ERRORS:
                break
            terminal_id = cells[0].strip()
            first_line.setdefault(terminal_id, line)
            rows.append((terminal_id, {k: (v.strip() or None) for k, v in zip(keys, cells[1:], strict=False)}))
    except csv.Error as exc:
        problems.append(f"{name}:{reader.line_num}: {exc}")
    if problems:
        more = len(problems) - MAX_ERRORS
        raise BadFile(problems[:MAX_ERRORS] + ([f"{name}: ... and more problems after these"] if more > 0 else []))
    return rows


def _row_problems(name: str, line: int, cells: list[str], header: list[str], first_line: dict[str, int]) -> list[str]:
    out = []
    if len(cells) != len(header):
        col = min(len(cells), len(header)) + 1
        out.append(f"{name}:{line}:{col}: {len(cells)} cells, the header has {len(header)}")
    terminal_id = cells[0].strip()
    problem = wire.terminal_id_problem(terminal_id) if terminal_id else "empty"
    if problem:
        out.append(f"{name}:{line}:1 ({ID_COLUMN}): a terminal id is {problem}")
    elif terminal_id in first_line:
        out.append(f"{name}:{line}:1 ({ID_COLUMN}): {terminal_id!r} is already on line {first_line[terminal_id]}")
    for col, (key, value) in enumerate(zip(header[1:], cells[1:], strict=False), start=2):
        if value.strip():
            why = wire.label_problem(key, value.strip())
            if why:
                out.append(f"{name}:{line}:{col} ({key}): {why}")
    return out


def apply(
    engine: Engine, name: str, rows: list[tuple[str, dict[str, str | None]]], settings: FleetSettings, dry_run: bool,
) -> Summary:  # fmt: skip
    """Write the rows' labels (source "import") in one transaction; what changed, or would."""
    summary = Summary(file=name, rows=len(rows), dry_run=dry_run)
    changing = []
    with db.writing(engine) as conn:
        enrolled = _enrolled(conn, [t for t, _ in rows])
        for i in range(0, len(rows), inventory.RELABEL_CHUNK):
            chunk = rows[i : i + inventory.RELABEL_CHUNK]
            before = labels.operator_of_many(conn, [t for t, _ in chunk])
            for terminal_id, changes in chunk:
                had = before.get(terminal_id, {})
                sets = sum(1 for k, v in changes.items() if v and had.get(k) != v)
                removes = sum(1 for k, v in changes.items() if not v and k in had)
                summary.labels_set += sets
                summary.labels_removed += removes
                if sets or removes:
                    summary.changed += 1
                    changing.append((terminal_id, changes))
                else:
                    summary.unchanged += 1
                if terminal_id not in enrolled:
                    summary.not_enrolled.append(terminal_id)
        if not dry_run:
            inventory.relabel_many(conn, changing, "import", settings)
    return summary


def _enrolled(conn: sa.Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 1000):
        found.update(r[0] for r in conn.execute(sa.select(terminals.c.id).where(terminals.c.id.in_(ids[i : i + 1000]))))
    return found


def claims_csv(engine: Engine, settings: FleetSettings) -> str:
    """What terminals claim of the operator's keys, in the import format: for review before
    importing (the migration of a database from before operator labels). A cell is the
    terminal's claim, else the operator's value, so importing the file as written changes
    only what the terminals claim differently."""
    f = fleet_terminals.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(f.id, f.claimed_labels).where(f.claimed_labels.is_not(None)).order_by(f.id)).all()
        claims = {r.id: {k: v for k, v in json.loads(r.claimed_labels).items() if k not in settings.observed_label_keys} for r in rows}
        claims = {t: c for t, c in claims.items() if c}
        o = operator_labels.c
        operator: dict[str, dict[str, str]] = {}
        for r in conn.execute(sa.select(o.terminal_id, o.key, o.value).where(o.terminal_id.in_(sa.select(f.id).where(f.claimed_labels.is_not(None))))):
            operator.setdefault(r.terminal_id, {})[r.key] = r.value
    keys = sorted({k for c in claims.values() for k in c})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([ID_COLUMN, *keys])
    for terminal_id, claimed in claims.items():
        writer.writerow([terminal_id, *(claimed.get(k) or operator.get(terminal_id, {}).get(k, "") for k in keys)])
    return out.getvalue()
