"""What ingest does to cost less (issue 22) still does what it did: SQLite writers of several
processes take turns on a lock file, JSON depth read from the text is the depth of the parsed
value, masked texts are remembered only when masking left them as they were, and a request's
statement timeout on PostgreSQL holds for every transaction of a pooled connection while
background work on the same connection has none."""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import time

import pytest
import sqlalchemy as sa
from server_harness import fresh_pg_database

from remote.server import budgets, db, ingest


def test_a_sqlite_writer_waits_for_another_process_holding_the_lock_file(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    db.create_schema(engine)
    other = os.open(f"{tmp_path / 'w.db'}-writer.lock", os.O_RDWR | os.O_CREAT)  # another process's descriptor
    fcntl.flock(other, fcntl.LOCK_EX)
    wrote = threading.Event()

    def write() -> None:
        with db.writing(engine) as conn:
            conn.execute(db.server_keys.insert().values(name="k", value="v"))
        wrote.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not wrote.wait(0.5)  # waits its turn
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    writer.join(10)
    assert wrote.is_set()
    engine.dispose()


def _random_json(rng: random.Random, depth: int = 0):
    if depth > 7 or rng.random() < 0.3:
        return rng.choice([1, 2.5, None, True, 's]{\\"', "\\", "[{", "é ✓"])
    if rng.random() < 0.5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[{{": _random_json(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_json_depth_from_the_text_is_the_depth_of_the_value():
    rng = random.Random(22)
    for _ in range(400):
        value = _random_json(rng)
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
            data = text.encode()
            assert ingest._text_depth(data) == ingest._depth(json.loads(data)), text


def test_json_nested_past_the_bound_is_refused():
    assert ingest.load_json(b"[" * ingest.MAX_JSON_DEPTH + b"]" * ingest.MAX_JSON_DEPTH) is not None
    with pytest.raises(ValueError, match="nested"):
        ingest.load_json(b"[" * (ingest.MAX_JSON_DEPTH + 1) + b"]" * (ingest.MAX_JSON_DEPTH + 1))
    deep_in_a_string = json.dumps({"a": "[" * 500}).encode()
    assert ingest.load_json(deep_in_a_string) == {"a": "[" * 500}


def test_a_text_masking_changes_is_masked_every_time_it_comes():
    card = "model 4111111111111111"
    first, second = ingest.shown(card), ingest.shown(card)
    assert first == second and "4111111111111111" not in second
    assert card not in ingest._SHOWN_AS_IS
    assert ingest.shown("A920") == "A920" and "A920" in ingest._SHOWN_AS_IS


def test_the_statement_timeout_holds_in_every_transaction_of_a_request_not_in_background_work():
    with fresh_pg_database() as url:
        engine = db.make_engine(url)
        settings = type("S", (), {"max_concurrent_reads": 6, "read_wait_seconds": 1.0})()
        budgets.install(engine, settings)
        seen = []

        def request() -> None:
            budgets.REQUEST_STATEMENT_SECONDS.set(0.3)
            for _ in range(3):  # one pooled connection, several transactions
                with engine.begin() as conn:
                    seen.append(conn.execute(sa.text("SHOW statement_timeout")).scalar())
            with engine.connect() as conn, pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("SELECT pg_sleep(1)"))

        thread = threading.Thread(target=request)  # a context of its own, as a request's threads have
        thread.start()
        thread.join(30)
        assert seen == ["300ms"] * 3
        started = time.monotonic()
        with engine.connect() as conn:  # background work, same pool: no timeout
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "0"
            conn.execute(sa.text("SELECT pg_sleep(0.5)"))
        assert time.monotonic() - started >= 0.5
        engine.dispose()
