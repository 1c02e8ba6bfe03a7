"""Problems separate faults from business and issuer outcomes: the default view lists the
problems whose bundles ask for an action (a verdict above none), a tab the card's and
issuer's answers; a verdict filter; the page in the reader's language."""

from __future__ import annotations

import uuid

from server_bundles import make_bundle
from test_server_pages import signed_in


def test_faults_by_default_outcomes_on_their_tab(server):
    model = f"M{uuid.uuid4().hex[:6]}"  # this test's problems alone, whatever else the server holds
    fault, outcome = f"F{uuid.uuid4().hex[:5]}", f"O{uuid.uuid4().hex[:5]}"
    tid, token = server.terminal("PR")
    for code, cause, category, verdict in ((fault, "printer.mechanism_fault", "printer", "onsite"), (outcome, "card.insufficient_funds", "card", "none")):
        for _ in range(2):
            bundle_id, body = make_bundle(token, tid, code=code, cause=cause, category=category, verdict=verdict, model=model)
            assert server.upload(token, body, bundle_id).status_code == 201
    server.counted()  # the pages read what the fleet queue's worker has counted
    session = signed_in(server)
    page = lambda **q: session.get(f"{server.url}/problems", params=dict(q, model=model), timeout=30).text  # noqa: E731
    default = page()
    assert fault in default and outcome not in default and 'id="tab-faults" class="on"' in default
    outcomes = page(kind="outcomes")
    assert outcome in outcomes and fault not in outcomes
    assert fault in page(kind="all") and outcome in page(kind="all")
    assert fault in page(kind="all", verdict="onsite") and outcome not in page(kind="all", verdict="onsite")
    listed = server.get("/api/v1/problems", params={"model": model, "kind": "faults"}).json()["items"]
    assert [(p["code"], p["verdict"], p["bundles"]) for p in listed] == [(fault, "onsite", 2)]
    one = session.get(f"{server.url}/problems/{listed[0]['id']}", timeout=30)
    assert one.status_code == 200 and fault in one.text and 'id="kind-tabs"' not in one.text
    assert session.get(f"{server.url}/problems/{'0' * 32}", timeout=30).status_code == 404
    chinese = session.get(f"{server.url}/problems", params={"model": model}, headers={"Accept-Language": "zh"}, timeout=30).text
    assert "业务与发卡行结果" in chinese and "Problems, ranked" not in chinese and "现场处理" in chinese


def test_a_database_made_before_problem_verdicts_gets_them_on_start(tmp_path):
    import sqlalchemy as sa

    from remote.server import db
    from remote.server.fleet.schema import bundle_fleet, problems

    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    db.create_schema(engine)
    stamp = "2026-01-01T00:00:00.000000Z"
    with engine.begin() as conn:
        for i, verdict in enumerate(("merchant", "onsite", "none")):
            conn.execute(db.bundles.insert().values(
                id=f"00000000-0000-0000-0000-00000000000{i}", terminal_id="T", serial="S", model="M", firmware="F", app_version="A",
                agent_version="0", trigger_kind="error", verdict=verdict, created_at=stamp, received_at=stamp, sha256="0" * 64, size=1,
            ))  # fmt: skip
            conn.execute(bundle_fleet.insert().values(
                bundle_id=f"00000000-0000-0000-0000-00000000000{i}", terminal_id="T", event_at=stamp, problem_id="p1" if i < 2 else "p2",
                model="M", firmware="F", app_version="A",
            ))  # fmt: skip
        for pid in ("p1", "p2"):
            conn.execute(problems.insert().values(id=pid, signature=pid, first_seen=stamp, last_seen=stamp, bundles=1, terminals_affected=1))
        conn.execute(sa.text("ALTER TABLE problems DROP COLUMN verdict_rank"))
    db.create_schema(engine)  # the next start
    with engine.connect() as conn:
        assert dict(conn.execute(sa.select(problems.c.id, problems.c.verdict_rank)).all()) == {"p1": 3, "p2": 0}
