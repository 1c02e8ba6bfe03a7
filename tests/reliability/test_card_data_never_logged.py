"""No card data leaves posdiag on any terminal-side path (issue 8, security).

PANs (Luhn-valid Visa and Mastercard, spaced and dashed, a 19-digit UnionPay PAN and a
16-digit 62-prefixed one that fails Luhn), track 1 and 2 data, a PIN block and a CVV are
fed through the log follower, the event socket, the last-error file, `posdiag diagnose`
(as the code itself, with --bundle and --upload) and `posdiag redact`, into a real
`posdiag run --simulate healthy` that uploads to a real support server. Then everything
is searched: the agent's stderr log, every file under its work directory (outbox bundles
member by member, state files), the socket answers, the CLI's stdout and stderr, every
bundle the server stored (downloaded through the API) and its API record. (The support
server writes no log lines on these paths: uvicorn runs at warning level without an
access log; its own logging is the server side's to test.)
"""

import json
import re
import socket
import time
from pathlib import Path

from agent import bundle
from tests.conftest import run_cli

PANS = [
    "4111111111111111",
    "5500005555555559",
    "6222021234567890128",
    "6212345678901234",
]
SECRETS = ["=2512101", "25121011234567890", "^DOE/JOHN^", "A1B2C3D4E5F60718"]
CVV = re.compile(r"(?i)cv[vcn]2?\W{0,4}123(?![0-9])")
DIGIT_SEPARATOR = re.compile(r"(?<=[0-9])[ \-](?=[0-9])")

CARD_LINES = [
    "response code=05 sale card=4111111111111111 amount=000000012500 trace=000123",
    "response code=05 pan 4111 1111 1111 1111 declined",
    "response code=05 pan 5500-0055-5555-5559 declined",
    "应答码:05 银联卡 6222021234567890128 交易失败",
    "response code=05 old UnionPay 6212345678901234",
    "response code=05 swipe ;4111111111111111=25121011234567890? %B4111111111111111^DOE/JOHN^2512101000?",
    "response code=05 iso F35=4111111111111111=2512101 F52: A1B2C3D4E5F60718 F2=5500-0055-5555-5559",
    'response code=05 resp {"rc":"05","cvv":"123","pinBlock":"A1B2C3D4E5F60718"}',
]
# An operator's loose pattern: the "code" it captures can itself be card data.
LOOSE_PATTERN = r"ERR (?P<code>\S+)"
LOOSE_LINES = [
    "ERR 4111111111111111 declined",
    "ERR ;5500005555555559=2512101? bad read",
    "ERR 6222021234567890128",
]


def leaks(text: str) -> list[str]:
    """The card data found in `text` (PANs also when split by spaces or dashes)."""
    squeezed = DIGIT_SEPARATOR.sub("", text)
    found = [pan for pan in PANS if pan in squeezed]
    found += [s for s in SECRETS if s in text]
    found += [m[0] for m in CVV.finditer(text)]
    return found


def bundle_texts(data: bytes) -> dict[str, str]:
    _, members = bundle.read(data)
    return {
        name: body.decode("utf-8", errors="replace") for name, body in members.items()
    }


def check(where: str, text: str, problems: list[str]) -> None:
    found = leaks(text)
    if found:
        problems.append(f"{where}: {sorted(set(found))}")


def check_tree(root: Path, skip: set[Path], problems: list[str]) -> int:
    """Every regular file under root; gzip archives are checked member by member."""
    seen = 0
    for path in sorted(root.rglob("*")):
        if path in skip or not path.is_file():
            continue
        raw = path.read_bytes()
        seen += 1
        if raw.startswith(b"\x1f\x8b"):
            for name, text in bundle_texts(raw).items():
                check(f"{path}!{name}", text, problems)
        else:
            check(str(path), raw.decode("utf-8", errors="replace"), problems)
    return seen


def ask(path: Path, event: dict) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(json.dumps(event).encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.decode()


def test_no_card_data_on_any_path(agent, support_server, tmp_path):
    a = agent(
        log_level="debug",
        listen=f"unix:{tmp_path / 'events.sock'}",
        last_error_file=str(tmp_path / "last_error.json"),
        debounce_seconds=600.0,
    )
    loose_log = a.workdir / "logs" / "vendor.log"
    loose_log.write_text("")
    a.write_config(
        f"[[daemon.log_sources]]\npath = \"{loose_log}\"\npatterns = ['{LOOSE_PATTERN}']\n"
    )
    last_error = tmp_path / "last_error.json"
    a.start()
    problems: list[str] = []

    a.write(*CARD_LINES)
    with loose_log.open("a") as fh:
        fh.writelines(line + "\n" for line in LOOSE_LINES)
    last_error.write_text(
        json.dumps(
            {
                "code": "E3",
                "scheme": "terminal",
                "context": {
                    "pan": "4111111111111111",
                    "track2": ";4111111111111111=25121011234567890?",
                    "msg": "card 5500 0055 5555 5559 cvv 123",
                },
            }
        )
    )
    answers = [
        ask(
            tmp_path / "events.sock",
            {
                "code": "51",
                "scheme": "iso8583",
                "context": {
                    "card": "4111 1111 1111 1111",
                    "pan": 6222021234567890128,
                    "track": ";4111111111111111=25121011234567890?",
                    "pinBlock": "A1B2C3D4E5F60718",
                    "cvv": "123",
                    "raw": '{"cvv":"123"} F52=A1B2C3D4E5F60718 %B4111111111111111^DOE/JOHN^2512101000?',
                },
            },
        ),
        ask(
            tmp_path / "events.sock",
            {
                "code": "5500005555555559",
                "context": {"note": "the app put the PAN where the code goes"},
            },
        ),
        ask(tmp_path / "events.sock", {"code": "6212 3456 7890 1234", "context": {}}),
    ]
    refused = [
        ask(
            tmp_path / "events.sock",
            {"code": "", "context": {"pan": "4111111111111111"}},
        ),
        ask(tmp_path / "events.sock", {"code": "05", "scheme": "4111111111111111"}),
        ask(tmp_path / "events.sock", {"code": "4111111111111111" * 5}),
    ]
    for i, answer in enumerate(answers + refused):
        assert json.loads(answer)["ok"] is (i < len(answers)), answer
        check(f"socket answer {i}", answer, problems)

    # 05 (log), three loose-pattern codes, E3 (last-error file), three socket codes.
    stored = a.wait_for(8, timeout=60)
    assert len(stored) >= 8, (len(stored), a.stderr.read_text())
    last_error.write_text(
        '{"code": "E3", "context": {"pan": "4111111111111111", "cvv": "123"'
    )  # cut short

    cli = [
        run_cli(
            "diagnose",
            "--code",
            "4111111111111111",
            "--simulate",
            "healthy",
            "--config",
            str(a.config),
        ),
        run_cli(
            "diagnose",
            "--code",
            "4111 1111 1111 1111",
            "--json",
            "--simulate",
            "healthy",
            "--config",
            str(a.config),
        ),
        run_cli(
            "diagnose",
            "--code",
            ";5500005555555559=2512101?",
            "--upload",
            "--bundle",
            str(tmp_path / "cli.tar.gz"),
            "--simulate",
            "healthy",
            "--config",
            str(a.config),
        ),
        run_cli("redact", "--stats", input="\n".join(CARD_LINES + LOOSE_LINES) + "\n"),
        run_cli("redact", str(a.log), str(loose_log)),
        run_cli("codes", "show", "5500-0055-5555-5559", "--config", str(a.config)),
    ]
    for i, done in enumerate(cli):
        assert done.returncode == (1 if done.args[1] == "codes" else 0), (
            i,
            done.stderr,
        )
        check(f"cli {i} stdout", done.stdout, problems)
        check(f"cli {i} stderr", done.stderr, problems)
    for name, text in bundle_texts((tmp_path / "cli.tar.gz").read_bytes()).items():
        check(f"diagnose --bundle!{name}", text, problems)

    # With the server away the bundle stays in the outbox: check it there too.
    offline = tmp_path / "offline.toml"
    offline.write_text(
        a.config.read_text()
        .replace(support_server.url, "http://127.0.0.1:9")
        .replace(str(a.outbox), str(tmp_path / "offline-outbox"))
    )
    kept = run_cli(
        "diagnose",
        "--code",
        "4111111111111111",
        "--upload",
        "--simulate",
        "healthy",
        "--config",
        str(offline),
    )
    check("offline diagnose stdout", kept.stdout, problems)
    check("offline diagnose stderr", kept.stderr, problems)
    assert list((tmp_path / "offline-outbox").glob("*.tar.gz")), kept.stderr
    check_tree(tmp_path / "offline-outbox", set(), problems)

    stored = a.wait_for(9, timeout=30)
    assert len(stored) >= 9
    time.sleep(1)  # the agent logs the upload after the server answered
    a.stop()
    assert f"ignored {last_error}" in a.stderr.read_text()

    for item in stored:
        bundle_id = item["bundle_id"] if "bundle_id" in item else item["id"]
        check(
            f"server record {bundle_id}",
            json.dumps(a.detail(bundle_id), ensure_ascii=False),
            problems,
        )
        raw = support_server.get(f"/api/v1/bundles/{bundle_id}/download").content
        for name, text in bundle_texts(raw).items():
            check(f"stored bundle {bundle_id}!{name}", text, problems)
    check("server listing", json.dumps(stored, ensure_ascii=False), problems)

    inputs = {a.log, loose_log, last_error, a.config}
    check_tree(a.workdir, inputs, problems)
    assert (a.workdir / "state" / "sources.json").is_file() and (
        a.workdir / "state" / "history.jsonl"
    ).is_file()
    assert "uploaded" in a.stderr.read_text(errors="replace")

    assert not problems, "card data leaked:\n" + "\n".join(problems)
    # The paths were really taken: every source made events, and the redaction was counted.
    events = [
        e
        for item in stored
        for e in a.events_of(item["bundle_id"] if "bundle_id" in item else item["id"])
    ]
    sources = {e["source"].split(":", 1)[0] for e in events}
    assert {"log", "file", "socket"} <= sources, sources
