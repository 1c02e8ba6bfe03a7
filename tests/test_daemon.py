"""End to end: `posdiag run` on the simulated terminal against a real support server."""

import json
import os
import random
import signal
import time

from tests.conftest import SOAK


def test_log_line_to_stored_bundle_within_3s_and_across_rotation(agent):
    a = agent()
    a.start()
    t0 = time.monotonic()
    a.write("2026-11-23 10:00:01 txn 000123 response code: 51 amount 12.00 card 4111111111111111")
    (first,) = a.wait_for(1, 3.0)
    assert time.monotonic() - t0 < 3.0
    assert (first["code"], first["top_category"], first["verdict"]) == ("51", "card", "none")
    assert first["trigger_kind"] == "error"
    a.log.rename(a.log.with_suffix(".log.1"))
    a.log.write_text("")
    a.write("txn 000124 response code: 96")
    found = a.wait_for(2, 3.0)
    assert sorted(b["code"] for b in found) == ["51", "96"]
    detail = a.detail(first["id"])
    assert "4111111111111111" not in json.dumps(detail)
    assert a.stop() < 2.0


def test_burst_of_100_identical_lines_is_one_bundle_counting_100(agent):
    a = agent()
    a.start()
    for i in range(100):
        a.write(f"txn {i:06d} response code: 91")
        time.sleep(0.008)
    (only,) = a.wait_for(1, 5.0)
    a.wait_idle(5.0)
    assert len(a.bundles()) == 1
    assert a.detail(only["id"])["manifest"]["trigger"]["events"] == 100
    assert len(a.events_of(only["id"])) == 50  # the bundle keeps the newest [bundle] events_entries


def test_probe_request_is_executed_and_its_bundle_names_the_command(agent, support_server):
    a = agent(command_poll_seconds=1.0)
    a.start()
    made = support_server.post(f"/api/v1/terminals/{a.terminal}/commands", json={"probes": ["power", "storage"], "code": None})
    assert made.status_code == 201, made.text
    command_id = made.json()["id"]
    (found,) = a.wait_for(1, 6.0)
    assert found["command_id"] == command_id and found["trigger_kind"] == "remote"
    assert {p["name"] for p in a.detail(found["id"])["probes"]["probes"]} == {"power", "storage"}
    commands = support_server.get(f"/api/v1/terminals/{a.terminal}/commands").json()
    assert commands[0]["status"] == "done" and commands[0]["bundle_id"] == found["id"]


def test_bad_config_on_sighup_is_refused_and_the_agent_keeps_working(agent):
    a = agent()
    a.start()
    good = a.config.read_text()
    a.config.write_text("[daemon\nthis is not toml")
    a.proc.send_signal(signal.SIGHUP)
    a.wait_for_log("config reload refused", 5.0)
    a.config.write_text(good)
    a.write("response code: 05")
    assert [b["code"] for b in a.wait_for(1, 3.0)] == ["05"]
    assert a.proc.poll() is None


def test_busy_devices_are_skipped_while_the_payment_app_holds_them(agent, tmp_path):
    lock = tmp_path / "LCK..ttyS1"
    lock.write_text(f"{os.getpid()}\n")
    a = agent(busy_lock_files=[str(lock)])
    a.start()
    a.write("response code: 55")
    (found,) = a.wait_for(1, 3.0)
    statuses = {p["name"]: p["status"] for p in a.detail(found["id"])["probes"]["probes"]}
    assert statuses["printer"] == statuses["card_reader"] == "skipped"
    assert statuses["power"] == "ok"


def test_sigkill_during_a_burst_loses_nothing_and_duplicates_nothing(agent):
    a = agent(settle_seconds=0.2, max_wait_seconds=0.5, debounce_seconds=0.0)
    codes = ["03", "05", "12", "13", "14", "30", "51", "54", "55", "57", "58", "61", "91", "94", "96"] * SOAK
    rng = random.Random(7)
    a.start()
    for n, code in enumerate(codes):
        a.write(*[f"txn {n}-{i} response code: {code}" for i in range(3)])
        time.sleep(rng.uniform(0.05, 0.5))
        if n % 3 == 2:
            a.stop(signal.SIGKILL)
            a.start()
    a.wait_idle(15.0)
    found = a.bundles()
    a.stop()
    ids = [b["id"] for b in found]
    assert len(ids) == len(set(ids))
    assert {b["code"] for b in found} == set(codes), "a diagnosed event was lost"
    seen: dict[str, str] = {}
    for b in found:
        for ev in a.events_of(b["id"]):
            assert ev["id"] not in seen, f"event {ev['id']} in two bundles"
            seen[ev["id"]] = b["id"]
    diagnosed = {line.rsplit("bundle ", 1)[1].strip() for line in a.stderr.read_text().splitlines() if "dispatch" in line}
    assert diagnosed == set(ids)


def test_reload_to_a_socket_address_in_use_is_refused_and_the_old_socket_keeps_answering(agent):
    import json as _json
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
        probe.close()
        a = agent(listen=f"127.0.0.1:{free_port}", reply_timeout_seconds=5.0)
        a.start()
        a.daemon["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        a.write_config()
        a.proc.send_signal(signal.SIGHUP)
        a.wait_for_log("config reload refused", 5.0)
        with socket.create_connection(("127.0.0.1", free_port), timeout=5) as conn:
            conn.sendall(b'{"code": "51", "scheme": "iso8583"}\n')
            answer = _json.loads(conn.makefile().readline())
        assert answer["ok"] and answer["diagnosis"]["code"] == "51"
        assert a.proc.poll() is None


def test_a_bundle_made_by_hand_carries_the_history_the_agent_recorded(agent, tmp_path):
    import subprocess

    from agent import bundle, config, history
    from tests.conftest import POSDIAG

    a = agent(snapshot_interval_seconds=1.0)
    a.start()
    ring = history.ring_for(config.load(str(a.config)))
    a.wait_until(lambda: len(ring.read()) >= 2, 10.0, "two health snapshots")
    a.stop()
    out = tmp_path / "manual.tar.gz"
    done = subprocess.run(
        [str(POSDIAG), "diagnose", "--code", "96", "--simulate", "healthy", "--config", str(a.config), "--bundle", str(out), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    _, members = bundle.read(out.read_bytes())
    history = [json.loads(line) for line in members["history.jsonl"].decode().splitlines()]
    assert len(history) >= 2 and all("battery_pct" in h for h in history)
