"""Scopes the operator owns (issue 21): outages are cut by the operator's labels (enrolment,
`terminals label`, `terminals import`, the API) and the observed carrier and link; what a
terminal claims of the operator's labels is a hint; flapping observed labels are not counted;
a database from before keeps no claim in force. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa
from server_bundles import PASSWORD, make_bundle
from server_harness import default_settings, fresh_pg_database, start_server
from test_server_pages import signed_in

from remote.server import cli, db, store
from remote.server.fleet import baseline, inventory, labels
from remote.server.fleet.schema import operator_labels, scope_members

pytestmark = [pytest.mark.timeout(300), pytest.mark.clock]  # clock: event times near now


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


@pytest.fixture
def server(db_url, tmp_path):
    servers = start_server(db_url, tmp_path / "data", "trust", default_settings())
    try:
        yield next(servers)
    finally:
        servers.close()


def beat(server, token: str, tid: str, when: datetime, labels: dict[str, str]) -> None:
    body = {"terminal_id": tid, "sent_at": db.stamp(when), "model": "A920", "firmware": "1.0", "labels": labels, "health": {}, "counters": {}}
    answer = requests.post(f"{server.url}/api/v1/heartbeats", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 202, answer.text
    server.counted()


def fail(server, token: str, tid: str, when: datetime, labels: dict[str, str], category: str = "host") -> None:
    cause = "host.unreachable" if category == "host" else "network.connect_timeout"
    bundle_id, body = make_bundle(token, tid, code="96", cause=cause, category=category, verdict="remote", created_at=db.stamp(when), labels=labels)
    assert server.upload(token, body, bundle_id).status_code == 201
    server.counted()


def outages(server) -> list[dict]:
    return [i["scope"] for i in server.get("/api/v1/incidents", params={"status": "all"}).json()["items"] if i["kind"] == "outage"]


def terminal(server, tid: str) -> dict:
    (item,) = [t for t in server.get("/api/v1/terminals", params={"limit": 500}).json()["items"] if t["id"] == tid]
    return item


def test_a_terminal_claiming_acquirer_b_but_enrolled_with_a_counts_toward_a_only(server):
    now = datetime.now(UTC)
    fleet: dict[str, list[tuple[str, str]]] = {"A": [], "B": []}
    for acquirer, ids in fleet.items():
        for i in range(8):
            tid = f"{acquirer}-{i}"
            answer = server.post("/api/v1/terminals", user="admin", json={"id": tid, "labels": {"acquirer": acquirer}})
            assert answer.status_code == 201, answer.text
            ids.append((tid, answer.json()["token"]))
    for (tid, token) in fleet["A"] + fleet["B"]:
        for hours in (3, 2, 1):
            beat(server, token, tid, now - timedelta(hours=hours), {"carrier": "X"})
    # seven of A's terminals (stolen, or hostile) say they are acquirer B, and fail
    for i, (tid, token) in enumerate(fleet["A"][:7]):
        fail(server, token, tid, now - timedelta(minutes=20 - i), {"acquirer": "B", "carrier": f"C{i}"})
    server.service.fleet.sweep()
    assert outages(server) == [{"acquirer": "A"}]
    shown = terminal(server, "A-0")
    assert shown["labels"] == {"acquirer": "A", "carrier": "C0"}
    assert shown["claimed_labels"] == {"acquirer": "B", "carrier": "C0"}  # the claim: a hint beside the trusted labels
    page = signed_in(server).get(f"{server.url}/terminals/A-0", timeout=30).text
    assert "acquirer=A carrier=C0" in page and "(the terminal says (a hint, not counted): acquirer=B carrier=C0)" in page
    b_listed = server.get("/api/v1/terminals", params={"label.acquirer": "B", "limit": 500}).json()["items"]
    assert sorted(t["id"] for t in b_listed) == [tid for tid, _ in fleet["B"]]


def test_enrolment_refuses_a_label_a_terminal_would_be_refused_for(server):
    for labels, says in (({"Acquirer": "B"}, "keys are"), ({"acquirer": "B&C"}, "'&'"), ({"site": "a\u202eb"}, "U+202E")):
        answer = server.post("/api/v1/terminals", user="admin", json={"id": "BAD-1", "labels": labels})
        assert answer.status_code == 422 and says in answer.json()["detail"], answer.text
    assert all(t["id"] != "BAD-1" for t in server.get("/api/v1/terminals", params={"limit": 500}).json()["items"])  # not enrolled


def test_the_api_sets_and_removes_operator_labels_and_moves_the_terminal_between_scopes(server):
    tid, token = server.terminal("P")
    answer = requests.patch(f"{server.url}/api/v1/terminals/{tid}/labels", json={"acquirer": "A", "site": "s1"}, auth=("support", PASSWORD), timeout=30)
    assert answer.status_code == 403

    def patch(body: dict) -> requests.Response:
        return requests.patch(f"{server.url}/api/v1/terminals/{tid}/labels", json=body, auth=("admin", PASSWORD), timeout=30)

    now = datetime.now(UTC)
    beat(server, token, tid, now - timedelta(minutes=5), {"acquirer": "Z"})
    assert patch({"acquirer": "A", "site": "s1"}).json()["labels"] == {"acquirer": "A", "site": "s1"}
    assert members(server.service.engine, tid) == {"acquirer=A"}
    assert active(server, ("acquirer=A", "acquirer=B", "acquirer=Z"), now) == [1, 0, 0]  # counted where it is, at once
    assert patch({"acquirer": "B", "site": None}).json()["labels"] == {"acquirer": "B"}
    assert members(server.service.engine, tid) == {"acquirer=B"}
    assert active(server, ("acquirer=A", "acquirer=B", "acquirer=Z"), now) == [0, 1, 0]
    assert patch({"region": "a=b"}).status_code == 422
    assert requests.patch(f"{server.url}/api/v1/terminals/NOPE-1/labels", json={"acquirer": "A"}, auth=("admin", PASSWORD), timeout=30).status_code == 404


def active(server, scope_keys, at: datetime) -> list[int]:
    with server.service.engine.connect() as conn:
        return [baseline.active(conn, key, db.stamp(at), server.service.settings.fleet) for key in scope_keys]


def members(engine, tid: str) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(scope_members.c.scope_key).where(scope_members.c.terminal_id == tid))}


def test_flapping_observed_labels_are_not_counted_until_they_settle(server):
    """Eight terminals on carrier F whose carrier changed 4 times in the last hours (more than
    observed_label_max_changes, 3) fail together: no outage. Eight on carrier S that did not
    change, failing the same way: an outage."""
    now = datetime.now(UTC)
    groups = {"F": [server.terminal("F") for _ in range(8)], "S": [server.terminal("S") for _ in range(8)]}
    for carrier, ids in groups.items():
        for tid, token in ids:
            for step, minutes in enumerate((200, 160, 120, 80, 40)):
                flap = carrier == "F" and step % 2 == 1
                beat(server, token, tid, now - timedelta(minutes=minutes), {"carrier": "G" if flap else carrier})
    assert terminal(server, groups["F"][0][0])["labels_settled"] is False
    assert "not counted toward outages" in signed_in(server).get(f"{server.url}/terminals/{groups['F'][0][0]}", timeout=30).text
    assert terminal(server, groups["S"][0][0])["labels_settled"] is True
    for carrier, ids in groups.items():
        for i, (tid, token) in enumerate(ids[:7]):
            fail(server, token, tid, now - timedelta(minutes=20 - i), {"carrier": carrier}, "network")
    server.service.fleet.sweep()
    assert outages(server) == [{"carrier": "S"}]


def test_flapping_settles_once_the_window_has_passed():
    s = default_settings().fleet
    changes = ["2026-01-01T10:00:00.000000Z", "2026-01-01T10:10:00.000000Z", "2026-01-01T10:20:00.000000Z", "2026-01-01T10:30:00.000000Z"]
    assert not labels.settled(changes, "2026-01-01T11:00:00.000000Z", s)
    assert labels.settled(changes, "2026-01-01T16:05:00.000000Z", s)  # the first change is older than 6 h


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli_db(request, tmp_path):
    """A database URL for `posdiag-support --db`, SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


def run(url: str, tmp_path, *args: str) -> int:
    return cli.main(["--db", url, "--data", str(tmp_path / "data"), *args])


@pytest.mark.parametrize("cli_db", ["sqlite", "postgresql"], indirect=True)
def test_terminals_label_sets_and_removes_and_moves_scopes(cli_db, tmp_path, capsys):
    assert run(cli_db, tmp_path, "terminals", "add", "T-1", "--label", "acquirer=A", "--label", "region=north") == 0
    engine = db.make_engine(cli_db)
    assert members(engine, "T-1") == {"acquirer=A", "region=north", "acquirer=A&region=north"}
    capsys.readouterr()
    assert run(cli_db, tmp_path, "terminals", "label", "T-1", "acquirer=B", "region=", "site=s9") == 0
    assert capsys.readouterr().out == "T-1: acquirer=B site=s9\n"
    assert members(engine, "T-1") == {"acquirer=B"}
    assert run(cli_db, tmp_path, "terminals", "label", "T-1", "acquirer=B&C") == 2
    assert "values may not hold '&' or '='" in capsys.readouterr().err
    assert run(cli_db, tmp_path, "terminals", "label", "NOPE", "acquirer=B") == 2
    assert "no terminal 'NOPE' is enrolled" in capsys.readouterr().err
    engine.dispose()


@pytest.mark.parametrize("cli_db", ["sqlite", "postgresql"], indirect=True)
def test_csv_import_good_file_dry_run_and_json(cli_db, tmp_path, capsys):
    for tid in ("T-1", "T-2"):
        assert run(cli_db, tmp_path, "terminals", "add", tid, "--label", "site=old") == 0
    good = tmp_path / "tms.csv"
    good.write_text("\ufeffterminal_id,acquirer,region,site\nT-1,A,north,\n\nT-2, B ,south,old\nT-3,C,east,x\n", encoding="utf-8")
    capsys.readouterr()
    assert run(cli_db, tmp_path, "terminals", "import", str(good), "--dry-run", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"file": str(good), "rows": 3, "changed": 3, "unchanged": 0, "labels_set": 7, "labels_removed": 1,
                       "not_enrolled": ["T-3"], "dry_run": True, "ok": True, "errors": []}  # fmt: skip
    engine = db.make_engine(cli_db)
    assert operator(engine) == {"T-1": {"site": "old"}, "T-2": {"site": "old"}}  # a dry run writes nothing
    assert run(cli_db, tmp_path, "terminals", "import", str(good)) == 0
    assert "3 rows; changed 3 terminals (7 labels set, 1 removed), 0 unchanged" in capsys.readouterr().out
    assert operator(engine) == {"T-1": {"acquirer": "A", "region": "north"}, "T-2": {"acquirer": "B", "region": "south", "site": "old"},
                                "T-3": {"acquirer": "C", "region": "east", "site": "x"}}  # fmt: skip
    assert members(engine, "T-2") == {"acquirer=B", "region=south", "acquirer=B&region=south"}
    assert run(cli_db, tmp_path, "terminals", "import", str(good), "--json") == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] == 3
    engine.dispose()


@pytest.mark.parametrize("cli_db", ["sqlite", "postgresql"], indirect=True)
def test_csv_import_bad_file_names_file_line_and_column_and_writes_nothing(cli_db, tmp_path, capsys):
    assert run(cli_db, tmp_path, "terminals", "add", "T-1") == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("terminal_id,acquirer,region\nT-1,A,north\nT 2,B,south\nT-3,C&D,east\nT-1,A,north\nT-4,A\n", encoding="utf-8")
    capsys.readouterr()
    assert run(cli_db, tmp_path, "terminals", "import", str(bad)) == 2
    err = capsys.readouterr().err
    for where in (f"{bad}:3:1 (terminal_id): a terminal id is", f"{bad}:4:2 (acquirer): values may not hold '&'",
                  f"{bad}:5:1 (terminal_id): 'T-1' is already on line 2", f"{bad}:6:3: 2 cells, the header has 3"):  # fmt: skip
        assert where in err, err
    engine = db.make_engine(cli_db)
    assert operator(engine) == {}  # all or none: the good line 2 is not written either
    header = tmp_path / "header.csv"
    header.write_text("id,Acquirer\nT-1,A\n", encoding="utf-8")
    assert run(cli_db, tmp_path, "terminals", "import", str(header), "--json") == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False and answer["errors"] == [
        f"{header}:1:1: the first column is terminal_id, not 'id'",
        f"{header}:1:2: 'Acquirer': label keys are 1-32 lower-case letters, digits or '_', starting with a letter",
    ]
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("terminal_id,region\nT-1,Zürich\n".encode("latin-1"))
    assert run(cli_db, tmp_path, "terminals", "import", str(latin)) == 2
    assert f"{latin}:2: not UTF-8 text" in capsys.readouterr().err
    engine.dispose()


def operator(engine) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with engine.connect() as conn:
        for r in conn.execute(sa.select(operator_labels)):
            out.setdefault(r.terminal_id, {})[r.key] = r.value
    return out


# -- a database from before operator labels -------------------------------------------------


def make_old_database(url: str) -> None:
    """The schema and rows as the release before this one left them: the terminal's labels,
    all of them in force, and no operator labels."""
    engine = db.make_engine(url)
    db.create_schema(engine)
    store.add_terminal(engine, "OLD-1")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE operator_labels"))
        conn.execute(sa.text("ALTER TABLE fleet_terminals DROP COLUMN claimed_labels"))
        conn.execute(sa.text("ALTER TABLE fleet_terminals DROP COLUMN observed_changes"))
        conn.execute(sa.text(
            "INSERT INTO fleet_terminals (id, model, firmware, app_version, agent_version, labels, last_seen_at) "
            "VALUES ('OLD-1', 'A920', '1.0', '5.0', '0.1.0', :labels, :seen)"
        ), {"labels": json.dumps({"acquirer": "B", "carrier": "X"}), "seen": db.stamp(datetime.now(UTC) - timedelta(hours=1))})  # fmt: skip
        conn.execute(sa.text("INSERT INTO terminal_labels VALUES ('OLD-1', 'acquirer', 'B'), ('OLD-1', 'carrier', 'X')"))
        conn.execute(sa.text("INSERT INTO scope_members (scope_key, terminal_id) VALUES ('acquirer=B', 'OLD-1'), ('carrier=X', 'OLD-1')"))
    engine.dispose()


def test_an_existing_database_keeps_no_claim_in_force_and_its_claims_can_be_reviewed_and_imported(db_url, tmp_path, capsys):
    make_old_database(db_url)
    servers = start_server(db_url, tmp_path / "data", "old", default_settings())
    server = next(servers)
    try:
        shown = terminal(server, "OLD-1")
        assert (shown["labels"], shown["claimed_labels"]) == ({}, {"acquirer": "B", "carrier": "X"})
        assert members(server.service.engine, "OLD-1") == set()
        token = store.add_terminal(server.service.engine, "OLD-2")  # a terminal that keeps working as before
        beat(server, token, "OLD-2", datetime.now(UTC), {"acquirer": "B", "carrier": "X"})
        assert members(server.service.engine, "OLD-2") == {"carrier=X"}

        assert run(db_url, tmp_path, "terminals", "claims") == 0
        claims = capsys.readouterr().out
        assert claims == "terminal_id,acquirer\nOLD-1,B\nOLD-2,B\n"
        reviewed = tmp_path / "claims.csv"
        reviewed.write_text(claims, encoding="utf-8")
        assert run(db_url, tmp_path, "terminals", "import", str(reviewed)) == 0
        assert terminal(server, "OLD-2")["labels"] == {"acquirer": "B", "carrier": "X"}
        assert members(server.service.engine, "OLD-2") == {"acquirer=B", "carrier=X"}
    finally:
        servers.close()



def test_imports_and_heartbeats_at_once_leave_scopes_and_counts_consistent(db_url, tmp_path):
    """An operator imports while the same terminals send heartbeats: no request fails, and
    afterwards every terminal's scopes and the scopes' active counts are what its labels say."""
    import threading

    from remote.server.fleet import label_import
    from remote.server.fleet.schema import scope_seen_hours, terminal_labels

    servers = start_server(db_url, tmp_path / "data", "race", default_settings())
    server = next(servers)
    try:
        fleet = [server.terminal("R") for _ in range(30)]
        settings = server.service.settings.fleet
        now = datetime.now(UTC)
        failures: list[str] = []

        def imports() -> None:
            for n in range(6):
                rows = [(tid, {"acquirer": "AB"[(n + i) % 2], "region": f"r{n % 3}"}) for i, (tid, _) in enumerate(fleet)]
                label_import.apply(server.service.engine, "race.csv", rows, settings, dry_run=False)

        def beats() -> None:
            for n in range(4):
                for tid, token in fleet:
                    try:
                        beat(server, token, tid, now - timedelta(minutes=40 - n), {"carrier": "XY"[n % 2]})
                    except AssertionError as exc:
                        failures.append(str(exc))

        threads = [threading.Thread(target=imports), threading.Thread(target=beats)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures[:3]
        with server.service.engine.connect() as conn:
            expected_members: dict[tuple[str, str], int] = {}
            for tid, _ in fleet:
                row = terminal(server, tid)
                in_force = dict(conn.execute(sa.select(terminal_labels.c.key, terminal_labels.c.value).where(terminal_labels.c.terminal_id == tid)).all())
                assert in_force == row["labels"] == {"acquirer": row["labels"]["acquirer"], "region": "r2", "carrier": "Y"}
                assert members(server.service.engine, tid) == set(inventory.scopes_of(in_force, settings))
            for key, at in conn.execute(sa.select(scope_members.c.scope_key, scope_members.c.seen_at)):
                if at:
                    expected_members[(key, baseline.hour(at))] = expected_members.get((key, baseline.hour(at)), 0) + 1
            counted = {(r.scope_key, r.hour): r.members for r in conn.execute(sa.select(scope_seen_hours)) if r.members}
        assert counted == expected_members
    finally:
        servers.close()
