import dataclasses
import hashlib
import hmac
import io
import json
import random
import re
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent import bundle, facts
from agent.bundle import BundleInput, Limits, Trigger
from tests.conftest import run_cli

TOKEN = "terminal-token-T0001"
FORBIDDEN = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "5500-0055-5555-5559",
    "6222021234567890128",
    "=2512101",
    "^DOE/JOHN^",
    '"cvv":"123"',
    "A1B2C3D4E5F60718",
    "hunter2",
    "9F2608",
]


def card_log(path: Path, lines: int, tag: str = "app") -> Path:
    """A payment app log with card data on most lines."""
    shapes = [
        "sale amount=000000012500 tid=12345678 card=4111111111111111 trace={i:06d}",
        'resp {{"rc":"03","cvv":"123","pan":"4111 1111 1111 1111","amount":12500}}',
        "swipe ;4111111111111111=25121011234567890? %B5500005555555559^DOE/JOHN^2512101000?",
        "iso F35=6222021234567890128=2512101 F52: A1B2C3D4E5F60718 F55=9F2608 F2=5500-0055-5555-5559",
        "connect acquirer.example.com:443 dns timeout after 2000 ms retry {i}",
        "<password>hunter2</password> kcv=3FA2B1 pinBlock=A1B2C3D4E5F60718",
    ]
    with path.open("w") as fh:
        for i in range(lines):
            fh.write(f"2026-11-23 08:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d} I/{tag}[{1200 + i % 7}] ")
            fh.write(shapes[i % len(shapes)].format(i=i) + "\n")
    return path


def make_input(tmp_path: Path, logs: int = 2, lines: int = 1000, **over) -> BundleInput:
    fields = {
        "terminal": {"id": "T-0001", "serial": "SN1", "model": "A920", "firmware": "1.2", "app_version": "5.0"},
        "trigger": Trigger("error", "03", "iso8583"),
        "diagnosis": {"error": {"code": "03", "detail": "card 4111111111111111"}, "causes": [], "dispatch": {"verdict": "remote"}},
        "probes": {"probes": [{"name": "network", "status": "fail", "findings": [{"detail": "token=abcdef"}]}]},
        "system": {"kernel": "5.10", "wifi": {"psk": "hunter2"}},
        "history": [{"at": f"2026-11-23T08:{i:02d}:00Z", "battery_pct": 80 - i} for i in range(10)],
        "events": [{"at": "2026-11-23T08:10:00Z", "code": "03", "line": "declined card 4111111111111111"}],
        "logs": [card_log(tmp_path / f"log{n}.log", lines, f"app{n}") for n in range(logs)],
    }
    fields.update(over)
    return BundleInput(**fields)


def members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def test_layout_manifest_and_signature(tmp_path):
    now = datetime(2026, 11, 23, 8, 15, 0, 123000, tzinfo=UTC)
    built = bundle.build(make_input(tmp_path), Limits(), TOKEN, now=now)
    names = [name for name, _ in members(built.data)]
    assert names == [
        "manifest.json",
        "diagnosis.json",
        "probes.json",
        "system.json",
        "history.jsonl",
        "events.jsonl",
        "logs/log0.log",
        "logs/log1.log",
        "manifest.sig",
    ]
    content = dict(members(built.data))
    manifest = json.loads(content["manifest.json"])
    assert manifest == built.manifest
    assert manifest["schema"] == "posdiag.bundle/1"
    assert uuid.UUID(manifest["bundle_id"]).version == 4
    assert manifest["created_at"] == "2026-11-23T08:15:00.123Z"
    assert manifest["terminal"] == {"id": "T-0001", "serial": "SN1", "model": "A920", "firmware": "1.2", "app_version": "5.0", "labels": {}}
    assert manifest["trigger"] == {"kind": "error", "code": "03", "scheme": "iso8583", "command_id": None, "events": 1}
    assert set(manifest) == {
        "schema", "bundle_id", "terminal", "agent_version", "created_at", "trigger", "files", "redaction", "truncated", "evicted"
    }
    assert [f["path"] for f in manifest["files"]] == names[1:-1]
    for entry in manifest["files"]:
        body = content[entry["path"]]
        assert entry["size"] == len(body) and entry["sha256"] == hashlib.sha256(body).hexdigest()
    key = hashlib.sha256(TOKEN.encode()).digest()  # the server keeps only this digest
    assert content["manifest.sig"].decode() == hmac.new(key, content["manifest.json"], hashlib.sha256).hexdigest()
    assert bundle.verify(built.data, TOKEN) == []
    assert json.loads(content["diagnosis.json"])["dispatch"] == {"verdict": "remote"}
    assert [json.loads(line)["battery_pct"] for line in content["history.jsonl"].splitlines()] == list(range(80, 70, -1))


def test_two_hundred_lines_per_log_under_32_kib(tmp_path):
    built = bundle.build(make_input(tmp_path, logs=3, lines=2000), Limits(lines=200), TOKEN)
    content = dict(members(built.data))
    for n in range(3):
        assert content[f"logs/log{n}.log"].count(b"\n") == 200
        assert content[f"logs/log{n}.log"].decode().splitlines()[-1].startswith("2026-11-23 08:33:19.999")
    assert built.manifest["truncated"] == {}
    assert len(built.data) < 32 * 1024


def test_no_card_data_or_secret_in_any_member(tmp_path):
    built = bundle.build(make_input(tmp_path, logs=2, lines=300), Limits(), TOKEN)
    for name, body in members(built.data):
        text = body.decode()
        for needle in FORBIDDEN:
            assert needle not in text, (name, needle)
        assert not re.search(r"(?<![0-9])4111111111111111|abcdef", text), name
    counts = built.manifest["redaction"]
    assert set(counts) == {"pan", "track", "pin_block", "cvv", "secret"}
    assert all(counts[k] > 0 for k in counts)
    logs = dict(members(built.data))["logs/log0.log"].decode()
    assert "411111******1111" in logs and "kcv=3FA2B1" in logs and "amount=000000012500" in logs


def test_every_single_byte_flip_fails_verification(tmp_path):
    built = bundle.build(make_input(tmp_path, logs=0, history=[], events=[]), Limits(), TOKEN)
    assert bundle.verify(built.data, TOKEN) == []
    rng = random.Random(7)
    for i in range(len(built.data)):
        flipped = bytearray(built.data)
        flipped[i] ^= rng.randrange(1, 256)
        assert bundle.verify(bytes(flipped), TOKEN), f"flip at byte {i} passed"


def test_byte_flips_in_a_large_bundle_fail(tmp_path):
    built = bundle.build(make_input(tmp_path, logs=3, lines=400), Limits(), TOKEN)
    assert bundle.verify(built.data, TOKEN) == []
    rng = random.Random(11)
    for i in [*range(12), *rng.sample(range(len(built.data)), 150), *range(len(built.data) - 12, len(built.data))]:
        flipped = bytearray(built.data)
        flipped[i] ^= 1 << rng.randrange(8)
        assert bundle.verify(bytes(flipped), TOKEN), f"flip at byte {i} passed"


def test_wrong_token_truncation_and_trailing_data_fail(tmp_path):
    data = bundle.build(make_input(tmp_path, logs=1, lines=50), Limits(), TOKEN).data
    assert any("signature" in p for p in bundle.verify(data, "another-token"))
    assert bundle.verify(data[:-1], TOKEN)
    assert bundle.verify(data[: len(data) // 2], TOKEN)
    assert bundle.verify(data + b"\0", TOKEN)
    assert bundle.verify(b"", TOKEN)


def repack(entries: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in entries:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return bundle.gzip_bytes(raw.getvalue())


def resigned(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    manifest = dict(entries)["manifest.json"]
    return [(n, bundle.sign(manifest, TOKEN).encode() if n == "manifest.sig" else b) for n, b in entries]


def test_structure_is_checked_even_with_a_valid_signature(tmp_path):
    entries = members(bundle.build(make_input(tmp_path, logs=1, lines=20), Limits(), TOKEN).data)
    assert bundle.verify(repack(entries), TOKEN) == []
    missing = [e for e in entries if e[0] != "events.jsonl"]
    assert "events.jsonl: listed in the manifest but missing" in bundle.verify(repack(missing), TOKEN)
    extra = [*entries[:-1], ("logs/extra.log", b"x"), entries[-1]]
    assert "logs/extra.log: present but not listed in the manifest" in bundle.verify(repack(extra), TOKEN)
    swapped = [entries[1], entries[0], *entries[2:]]
    assert bundle.verify(repack(swapped), TOKEN) == ["manifest.json is not the first member"]
    changed = [(n, b + b" " if n == "probes.json" else b) for n, b in entries]
    assert any("probes.json: sha256" in p for p in bundle.verify(repack(resigned(changed)), TOKEN))


def test_logs_cut_first_oldest_lines_first_and_recorded(tmp_path):
    inp = make_input(tmp_path, logs=2, lines=1000)
    built = bundle.build(inp, Limits(lines=1000, bundle_max_bytes=12 * 1024), TOKEN)
    assert len(built.data) <= 12 * 1024
    assert built.manifest["truncated"] == {"logs/log0.log": True, "logs/log1.log": True}
    content = dict(members(built.data))
    kept = content["logs/log0.log"].decode().splitlines()
    assert 0 < len(kept) < 1000
    assert kept[-1].startswith("2026-11-23 08:16:39.999")  # the newest line stays
    assert content["history.jsonl"].count(b"\n") == 10  # untouched while logs could give way


def test_per_file_and_total_caps(tmp_path):
    small = card_log(tmp_path / "small.log", 10)
    inp = make_input(tmp_path, logs=2, lines=1000)
    inp = dataclasses.replace(inp, logs=[*inp.logs, small])
    built = bundle.build(inp, Limits(lines=1000, file_max_bytes=20_000, total_max_bytes=30_000), TOKEN)
    content = dict(members(built.data))
    sizes = {n: len(content[f"logs/{n}"]) for n in ("log0.log", "log1.log", "small.log")}
    assert sizes["small.log"] == len(bundle.Redactor().text(small.read_text()).encode())
    assert all(s <= 20_000 for s in sizes.values()) and sum(sizes.values()) <= 30_000
    assert built.manifest["truncated"] == {"logs/log0.log": True, "logs/log1.log": True}


def test_history_and_events_go_after_logs(tmp_path):
    history = [{"at": i, "blob": f"{random.Random(i).getrandbits(4000):x}"} for i in range(60)]
    inp = make_input(tmp_path, logs=1, lines=500, history=history)
    built = bundle.build(inp, Limits(bundle_max_bytes=16 * 1024), TOKEN)
    assert len(built.data) <= 16 * 1024
    assert built.manifest["truncated"]["logs/log0.log"] is True
    assert built.manifest["truncated"]["history.jsonl"] is True
    kept = [json.loads(line)["at"] for line in dict(members(built.data))["history.jsonl"].splitlines()]
    assert kept == list(range(60 - len(kept), 60))  # newest kept
    assert dict(members(built.data))["logs/log0.log"] == b""


def test_log_sources_recorded_and_gbk_logs_read(tmp_path):
    gbk = tmp_path / "pay.txt"
    gbk.write_bytes("交易失败 卡号 4111111111111111\n".encode("gb18030"))
    inp = make_input(tmp_path, logs=0)
    inp = dataclasses.replace(inp, logs=[gbk, tmp_path / "missing.log"])
    built = bundle.build(inp, Limits(), TOKEN)
    content = dict(members(built.data))
    assert content["logs/pay.txt.log"].decode() == "交易失败 卡号 411111******1111\n"
    sources = json.loads(content["system.json"])["log_sources"]
    assert sources[0]["status"] == "ok"
    assert sources[1]["path"].endswith("missing.log") and sources[1]["status"].startswith("unreadable")
    assert json.loads(content["system.json"])["wifi"] == {"psk": "***"}


def test_read_tail_reads_backwards_only_what_it_needs(tmp_path):
    log = tmp_path / "big.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    data, cut = bundle.read_tail(log, 3, 1 << 20)
    assert data == b"line 99997\nline 99998\nline 99999\n" and not cut
    data, cut = bundle.read_tail(log, 1000, 100)
    assert cut and data.endswith(b"line 99999\n") and len(data) <= 100
    short = tmp_path / "short.log"
    short.write_bytes(b"a\nb")
    assert bundle.read_tail(short, 5, 1000) == (b"a\nb\n", False)


def test_terminal_identity_prefers_config_then_os(tmp_path):
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "product_serial").write_text("SN-OS-1\n")
    (dmi / "product_name").write_text("A920\n")
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("5.10.0-pos\n")
    host = SimpleNamespace(sysfs_root=str(tmp_path / "sys"), procfs_root=str(tmp_path / "proc"))
    terminal = SimpleNamespace(id="T-9", serial="", model="M-CONFIG", firmware="", app_version="5.1")
    assert facts.terminal_identity(terminal, host) == {
        "id": "T-9", "app_version": "5.1", "serial": "SN-OS-1", "model": "M-CONFIG", "firmware": "5.10.0-pos"
    }
    assert facts.system_facts(host)["kernel"] == "5.10.0-pos"


def test_trigger_kind_is_checked(tmp_path):
    with pytest.raises(ValueError):
        bundle.build(make_input(tmp_path, logs=0, trigger=Trigger("boot")), Limits(), TOKEN)


def write_config(tmp_path: Path, logs: list[Path]) -> Path:
    config = tmp_path / "posdiag.toml"
    config.write_text(
        "[terminal]\nid = \"T-0001\"\n"
        f"[logs]\nfiles = {json.dumps([str(p) for p in logs])}\nlines = 200\n"
        f"[upload]\ntoken = \"{TOKEN}\"\n"
        f"[outbox]\ndir = \"{tmp_path / 'outbox'}\"\n"
    )
    return config


def test_cli_diagnose_bundle_verify_and_inspect(tmp_path):
    logs = [card_log(tmp_path / f"{name}.log", 2000, name) for name in ("payapp", "acquirer", "system")]
    config = write_config(tmp_path, logs)
    out = tmp_path / "b.tar.gz"
    done = run_cli(
        "diagnose", "--code", "03", "--simulate", "network.dns_failed", "--config", str(config), "--bundle", str(out), "--json"
    )
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert len(data) < 32 * 1024
    manifest, content = bundle.read(data)
    assert json.loads(content["diagnosis.json"]) == json.loads(done.stdout)
    assert manifest["trigger"]["code"] == "03" and manifest["terminal"]["id"] == "T-0001"
    for name in ("payapp", "acquirer", "system"):
        assert content[f"logs/{name}.log"].count(b"\n") == 200
    for name, body in content.items():
        for needle in FORBIDDEN:
            assert needle not in body.decode(), (name, needle)
    ok = run_cli("bundle", "verify", str(out), "--config", str(config))
    assert ok.returncode == 0, ok.stdout
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(flipped))
    failed = run_cli("bundle", "verify", str(bad), "--token", TOKEN)
    assert failed.returncode == 1 and "FAIL" in failed.stdout
    inspect = run_cli("bundle", "inspect", str(out), "--json")
    assert json.loads(inspect.stdout)["manifest"] == manifest


def test_names_terminal_strings_and_codes_pass_redaction(tmp_path):
    """Issue 12: a log named after a PAN, config strings and an over-long redacted code."""
    named = tmp_path / "txn-4111111111111111.log"
    named.write_text("ok\n")
    utf16 = tmp_path / "u16.log"
    utf16.write_bytes(("line\n" * 300 + "card 5500005555555559 end\n").encode("utf-16"))
    inp = dataclasses.replace(
        make_input(tmp_path, logs=0),
        logs=[named, utf16],
        terminal={"id": "T0001", "serial": "SN1", "model": "X9 4111 1111 1111 1111", "firmware": "fw pin=1234", "app_version": "1"},
        trigger=Trigger("error", "pin=1 " * 10 + "x", "iso8583"),
    )
    built = bundle.build(inp, Limits(lines=5), TOKEN)
    content = dict(members(built.data))
    manifest_text = content["manifest.json"].decode()
    everything = manifest_text + "".join(content) + content["system.json"].decode()
    assert "4111111111111111" not in everything.replace(" ", "") and "1234" not in manifest_text
    assert "logs/txn-411111______1111.log" in content
    assert built.manifest["terminal"]["id"] == "T0001" and built.manifest["terminal"]["model"] == "X9 4111 11** **** 1111"
    assert len(built.manifest["trigger"]["code"]) == 64
    assert content["logs/u16.log"].decode().endswith("line\ncard 550000******5559 end\n")
    assert bundle.verify(built.data, TOKEN) == []
