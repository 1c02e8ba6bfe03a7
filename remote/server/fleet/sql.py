"""Insert-or-update the same way on SQLite and PostgreSQL (both speak ON CONFLICT)."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def least(conn: sa.Connection, a: Any, b: Any) -> Any:
    return sa.func.least(a, b) if conn.dialect.name == "postgresql" else sa.func.min(a, b)


def greatest(conn: sa.Connection, a: Any, b: Any) -> Any:
    return sa.func.greatest(a, b) if conn.dialect.name == "postgresql" else sa.func.max(a, b)


def add_counts(conn: sa.Connection, table: sa.Table, keys: list[str], rows: list[dict[str, Any]], *columns: str) -> None:
    """Insert rows, or add their `columns` to the stored ones."""
    if not rows:
        return
    conn.execute(_adding(conn.dialect.name, table, tuple(keys), columns), rows)


@functools.lru_cache(maxsize=256)
def _adding(dialect: str, table: sa.Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """Made once: building an upsert costs more Python than SQLite takes to run it (an
    upload and every bundle the fleet counts run several)."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: table.c[c] + stmt.excluded[c] for c in columns})


def move_counts(conn: sa.Connection, table: sa.Table, keys: list[str], rows: list[dict[str, Any]], column: str) -> None:
    """add_counts for changes that may be negative: a row counted down to nothing is removed.
    Rows should come in one order for every writer (sorted by key), so that two
    transactions never wait on each other's rows crosswise."""
    add_counts(conn, table, keys, rows, column)
    down = [tuple(r[k] for k in keys) for r in rows if r[column] < 0]
    if down:
        conn.execute(table.delete().where(table.c[column] <= 0, sa.tuple_(*(table.c[k] for k in keys)).in_(down)))


def insert_new(conn: sa.Connection, table: sa.Table, keys: list[str], rows: list[dict[str, Any]]) -> int:
    """Insert rows not there yet; how many were new."""
    if not rows:
        return 0
    stmt = _inserting_new(conn.dialect.name, table, tuple(keys))
    return sum(len(conn.execute(stmt, row).all()) for row in rows)


@functools.lru_cache(maxsize=256)
def _inserting_new(dialect: str, table: sa.Table, keys: tuple[str, ...]) -> Any:
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT DO NOTHING
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_(table).on_conflict_do_nothing(index_elements=list(keys)).returning(sa.literal(1))
