"""The fleet simulator at a bigger size than the tests: labelled terminals send hourly
heartbeats and bundles through the real API on event time, with the injected events of
tests/server/fleet_sim.py (acquirer host outage, carrier outage in one region, firmware
regression, worn battery batch, silent terminals), against an in-process server.

    .venv/bin/python bench/fleet_sim.py [--terminals 120] [--days 2] [--heartbeat-hours 1]
        [--late 0] [--hostile 0] [--db sqlite|postgresql]

Printed: requests sent and their rate, then each incident found (kind, scope, start
against the injected start, terminals), recall (injected events found with their scope),
holds (host/network bundles held inside the injected outages, and outside them: false
holds), the at-risk and missing terminals against the injected ones, and whether anything
else opened. With --hostile N, after the timeline N terminals claiming acquirer B (seen
since the fleet's start, each of its own merchant) send a host failure every 10 minutes over
its last 3 hours, and one honest B terminal a host failure in the middle: printed is how
many of those bundles a hold covers (issue 21: none).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this script's own name would shadow tests/server/fleet_sim.py: its folder goes off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path[:0] = [str(ROOT / "tests" / "server"), str(ROOT)]

from fleet_sim import HOST, FleetSim, Scenario, Sent, Terminal  # noqa: E402
from server_bundles import PASSWORD  # noqa: E402
from server_harness import default_settings, fresh_pg_database, start_server  # noqa: E402

from remote.server import db, store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terminals", type=int, default=120)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--heartbeat-hours", type=float, default=1.0)
    parser.add_argument("--late", type=int, default=0, help="terminals of the host outage that upload 3 h late")
    parser.add_argument("--hostile", type=int, default=0, help="terminals claiming acquirer B that send host failures")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    scenario = Scenario(terminals=args.terminals, days=args.days, heartbeat_hours=args.heartbeat_hours, late_terminals=args.late)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp}/s.db" if args.db == "sqlite" else stack.enter_context(_pg())
        servers = start_server(url, Path(tmp) / "data", args.db, default_settings())
        server = next(servers)
        stack.callback(servers.close)
        sim = FleetSim(server.url, server.service.engine, scenario, ("support", PASSWORD))
        started = time.perf_counter()
        sent = sim.run()
        took = time.perf_counter() - started
        attack = _hostile(server, sim, args.hostile) if args.hostile else None
        server.service.fleet.sweep()
        requests_sent = sent.heartbeats + len(sent.bundles)
        print(f"{args.terminals} terminals, {args.days:g} days on {args.db}: {sent.heartbeats} heartbeats and "
              f"{len(sent.bundles)} bundles in {took:.0f} s ({requests_sent / took:.0f} requests/s), {len(sent.errors)} errors")  # fmt: skip
        found = sim.incidents()
        injected = {tuple(sorted(i.scope.items())): i for i in sim.injected}
        for incident in sorted(found, key=lambda i: i["started_at"]):
            match = injected.pop(tuple(sorted(incident["scope"].items())), None)
            delay = ""
            if match and incident["kind"] == "outage":
                minutes = (db.parse_time(incident["started_at"]) - match.start).total_seconds() / 60
                delay = f"starts {minutes:+.1f} min from the injected start"
            print(f"  {incident['kind']:<10} {incident['status']:<6} {incident['scope']}  {incident['terminals_affected']} of "
                  f"{incident['terminals_in_scope']} terminals  {delay}  {'INJECTED' if match else 'NOT INJECTED'}")  # fmt: skip
        for missed in injected.values():
            print(f"  missed: {missed.name} {missed.scope}")
        print(f"  recall: {len(sim.injected) - len(injected)}/{len(sim.injected)} injected events found with their scope")
        held = _held(server)
        outage_names = {i.name for i in sim.injected if i.kind == "outage"}
        failures = {b: w for b, w in sent.bundles.items() if w["category"] in ("host", "network")}
        inside = [b for b, w in failures.items() if w["injected"] in outage_names]
        outside = [b for b in failures if b not in inside]
        print(f"  held inside injected outages: {sum(b in held for b in inside)}/{len(inside)}; "
              f"false holds (host/network outside them): {sum(b in held for b in outside)}/{len(outside)}; "
              f"other bundles held: {sum(b in held for b in sent.bundles if b not in failures)}")  # fmt: skip
        if attack is not None:
            held = _held(server)
            print(f"  hostile: {args.hostile} terminals, {len(attack.bundles) - 1} bundles; held of theirs and the honest "
                  f"terminal's: {sum(b in held for b in attack.bundles)}/{len(attack.bundles)}")  # fmt: skip
        at_risk = {t["id"] for t in server.get("/api/v1/terminals", params={"status": "at_risk", "limit": 500}).json()["items"]}
        missing = {t["id"] for t in server.get("/api/v1/terminals", params={"status": "missing", "limit": 500}).json()["items"]}
        print(f"  at risk: {len(at_risk)} (worn batch {len(sim.battery_batch)}, {len(at_risk & sim.battery_batch)} found)")
        print(f"  missing: {len(missing)} (silent {len(sim.silent)}, {len(missing & sim.silent)} found)")
    return 0


def _hostile(server, sim: FleetSim, count: int) -> Sent:
    """The attack of issue 21 on acquirer B, sent after the timeline (as late uploads)."""
    attack = Sent()
    hostile = []
    for i in range(count):
        terminal_id = f"EVIL-{i:02d}"
        labels = {"acquirer": "B", "region": "north", "merchant": f"x{i}", "carrier": "X", "link": "cellular"}
        t = Terminal(terminal_id, store.add_terminal(server.service.engine, terminal_id), labels, "A920", "1.0")
        hostile.append(t)
    begin = sim.sc.end - timedelta(hours=3)
    for t in hostile:
        for when in (sim.sc.start + timedelta(minutes=5), begin - timedelta(minutes=5)):
            sim.heartbeat(t, when, {}, attack)
    code, cause, category = HOST
    for step in range(18):
        for i, t in enumerate(hostile):
            sim.bundle(t, begin + timedelta(minutes=10 * step, seconds=i), {"code": code, "cause": cause, "category": category, "injected": ""}, attack)
    honest = next(t for t in sim.terminals if t.labels["acquirer"] == "B" and t.id not in sim.silent)
    sim.bundle(honest, begin + timedelta(minutes=95), {"code": code, "cause": cause, "category": category, "injected": ""}, attack)
    return attack


def _held(server) -> set[str]:
    """Ids of the bundles that carry a fleet hold."""
    held, cursor = set(), None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = server.get("/api/v1/bundles", params=params).json()
        held |= {b["id"] for b in page["items"] if b.get("fleet_dispatch")}
        cursor = page["next_cursor"]
        if not cursor:
            return held


@contextlib.contextmanager
def _pg():
    with fresh_pg_database() as url:
        yield url


if __name__ == "__main__":
    sys.exit(main())
