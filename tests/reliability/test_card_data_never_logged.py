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
import os
import random
import unicodedata
import re
import socket
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
    a.wait_for_log(f"ignored {last_error}", 10.0)
    a.wait_idle(30.0)  # every upload done, so the agent's log holds what it says about them
    a.stop()

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


# --- Issue 12: one generated corpus of every card-data shape through every path --------

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def luhn_pan(rng, length: int, prefix: str) -> str:
    """A Luhn-valid PAN that no other number in the outputs spells by chance (no digit
    three times in a row, five different digits at least)."""
    from remote.redact import luhn_ok

    while True:
        body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
        pan = next(body + d for d in "0123456789" if luhn_ok(body + d))
        if len(set(pan)) >= 5 and not re.search(r"(.)\1\1", pan):
            return pan


class Corpus:
    """Lines in every shape of issue 12, and the card data they carry."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.pans: list[str] = []
        self.secrets: list[str] = []  # whole strings that must appear nowhere (names, discretionary data, PIN blocks)
        self.cvvs: list[tuple[str, str]] = []  # (name, value) pairs that must not stay together
        self.lines: list[str] = []
        self.tokens: list[str] = []  # card data without spaces, for a loose pattern's code
        pan = lambda: self._pan(rng)  # noqa: E731
        word = lambda n: "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(n))  # noqa: E731
        digits = lambda n: "".join(rng.choice("123456789") for _ in range(n))  # noqa: E731
        hexes = lambda n: "".join(rng.choice("0123456789ABCDEF") for _ in range(n))  # noqa: E731
        for sep in [".", "\t", "  ", "/", "_", ",", "\u00a0", "\u2009", "+", "%20", " - "]:
            p = pan()
            self.lines.append(f"card {sep.join(p[i:i + 4] for i in range(0, len(p), 4))} declined")
        p = pan()
        self.lines.append(f"卡号 {p.translate(FULL_WIDTH)} 交易失败")
        p, name, d1, d2 = pan(), f"{word(12)}/{word(9)}", digits(10), digits(14)
        self.secrets += [name, d1, d2]
        tlv = "5A08" + p[:16] + "5F20" + f"{len(name):02X}" + name.encode().hex().upper() + "9F1F05" + d1.encode().hex().upper()[:10]
        tlv += "9F2007" + d2 + "9F02060000000125009F2608" + hexes(16)
        self.secrets += [name.encode().hex().upper(), d1.encode().hex().upper()[:10]]
        self.lines += [f"emv {tlv}", f'resp {{"iccData":"{tlv}","DE55":"{tlv}","55":"{tlv}"}}']
        self.pans[-1:] = [p[:16]] if len(p) >= 16 else [p]
        for form in ['<field id="{n}" type="binary" value="{v}"/>', "[0{n}] {v}", "DE-{n}: {v}", "P-{n} {v}", "<{n}>{v}</{n}>"]:
            pin, disc, p = hexes(16), digits(12), pan()
            self.secrets += [pin, disc]
            self.lines += [form.format(n=52, v=pin), form.format(n=35, v=f"{p}D2512201{disc}"), form.format(n=2, v=pan())]
        p = pan()
        self.lines.append("send 0200" + "7224000000C00000" + f"{len(p):02d}" + p + "0" * (len(p) % 2) + "000000000000012500" + "0012342512051")
        p = pan()
        self.lines += [f"glued 0000{pan()} and {pan()}2512101 and 16{p}"[:200]]
        p = pan()
        self.lines.append(f"masked {p[:8]}******{p[-2:]} and {p[:12]}****")
        p, name, disc = pan(), f"{word(30)}/{word(25)} {word(3)}", digits(20)
        self.secrets += [name, disc]
        self.pans.remove(p)  # shown as first 6 / last 4 only: its name and discretionary data are the secrets here
        self.lines.append(f"swipe %B{p[:6]}******{p[-4:]}^{name}^2512101{disc}? track2={p[:6]}XXXXXX{p[-4:]}=2512101{disc}")
        for label in ["encrypted PIN data: ", "PINBLK=", "密码密文：", "PIN block "]:
            pin = hexes(16)
            self.secrets.append(pin)
            self.lines.append(f"req {label}{pin} sent")
        for label in ["security code ", "CID=", "安全码：", "card verification value: ", "CVV2 "]:
            value = digits(3)
            self.cvvs.append((label.strip(" =：:"), value))
            self.lines.append(f"check {label}{value} ok")
        p = pan()
        self.lines += [f"pan wraps {p[:8]}", f"{p[8:]} end of wrap"]
        self.tokens = [pan(), f";{pan()}=2512101{digits(10)}?", pan().translate(FULL_WIDTH)]
        self.secrets.append(self.tokens[1][18:])

    def _pan(self, rng) -> str:
        pan = luhn_pan(rng, rng.choice([13, 15, 16, 16, 16, 19]), rng.choice(["4", "51", "37", "62", "6011", "35"]))
        self.pans.append(pan)
        return pan

    def leaks(self, text: str) -> list[str]:
        flat = unicodedata.normalize("NFKC", text).replace("%20", " ")
        flat = re.sub(r"(?<=[0-9*X#])[\s\-./_,+]{1,3}(?=[0-9*X#])", "", flat)
        found = []
        for run in re.finditer(r"[0-9]{8,}", flat):
            found += [f"{p} in {flat[max(0, run.start() - 60) : run.end() + 20]!r}" for p in self.pans
                      if any(p[i : i + 8] in run[0] for i in range(len(p) - 7))]  # fmt: skip
        compact = flat.replace(" ", "").upper()
        found += [s for s in self.secrets if s.replace(" ", "").upper() in compact]
        found += [f"{k} {v}" for k, v in self.cvvs if re.search(re.escape(k) + r"\W{0,4}" + v, flat, re.IGNORECASE)]
        return found


def test_one_generated_corpus_leaks_on_no_path(agent, support_server, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from server_kit import signed_in

    corpus = Corpus(seed=int(os.environ.get("POSDIAG_CORPUS_SEED", "12")))
    problems: list[str] = []

    def check_text(where: str, text: str) -> None:
        found = corpus.leaks(text)
        if found:
            problems.append(f"{where}: {sorted(set(found))[:5]}")

    # The corpus in the clear shows every PAN and secret to the check: the check works.
    shown = corpus.leaks("\n".join(corpus.lines + corpus.tokens))
    assert {p for p in corpus.pans if any(f.startswith(p) for f in shown)} == set(corpus.pans)

    a = agent(
        log_level="debug",
        listen=f"unix:{tmp_path / 'events.sock'}",
        last_error_file=str(tmp_path / "last_error.json"),
        debounce_seconds=600.0,
    )
    utf16_log = a.workdir / "logs" / "utf16.log"
    utf16_log.write_bytes("\ufeff".encode("utf-16-le"))
    named_log = a.workdir / "logs" / f"txn-{corpus.pans[0]}.log"
    named_log.write_text("")
    loose_log = a.workdir / "logs" / "vendor.log"
    loose_log.write_text("")
    a.write_config(
        f'[[daemon.log_sources]]\npath = "{utf16_log}"\npatterns = [\'{PATTERN_UTF16}\']\n'
        f"[[daemon.log_sources]]\npath = \"{loose_log}\"\npatterns = ['{LOOSE_PATTERN}']\n"
    )
    text = a.config.read_text().replace(
        f'files = ["{a.log}"]', f'files = ["{a.log}", "{utf16_log}", "{named_log}", "{loose_log}"]'
    )
    a.config.write_text(text.replace('model = "SIM-POS"', f'model = "SIM {corpus.pans[1]}"\nfirmware = "fw {corpus.pans[2]}"'))
    a.start()

    a.write(*(f"response code=05 {line}" for line in corpus.lines))
    with utf16_log.open("ab") as fh:
        fh.write("".join(f"应答码=51 {line}\n" for line in corpus.lines).encode("utf-16-le"))
    named_log.write_text("\n".join(corpus.lines) + "\n")
    with loose_log.open("a") as fh:
        fh.writelines(f"ERR {token} declined\n" for token in corpus.tokens)
    (tmp_path / "last_error.json").write_text(
        json.dumps({"code": "E3", "scheme": "terminal", "context": {"lines": corpus.lines, "card": corpus.tokens[0]}})
    )
    answers = [
        ask(tmp_path / "events.sock", {"code": "96", "context": {"line": line, "n": i}})
        for i, line in enumerate(corpus.lines[:: max(1, len(corpus.lines) // 8)])
    ]
    answers += [ask(tmp_path / "events.sock", {"code": token, "context": {}}) for token in corpus.tokens]
    for i, answer in enumerate(answers):
        check_text(f"socket answer {i}", answer)

    # 05 (log), 51 (UTF-16 log), the loose codes, E3 (last-error file), 96 and the socket's codes.
    expected = 4 + len(corpus.tokens)  # a token coming by the log and by the socket is one code, one group
    stored = a.wait_for(expected, timeout=90)
    assert len(stored) >= expected, (len(stored), a.stderr.read_text()[-3000:])
    a.wait_idle(30.0)
    a.stop()

    corpus_file = tmp_path / "corpus.log"
    corpus_file.write_text("\n".join(corpus.lines) + "\n")
    utf16_file = tmp_path / "corpus-utf16.log"
    utf16_file.write_bytes(("\n".join(corpus.lines) + "\n").encode("utf-16"))
    for i, done in enumerate([run_cli("redact", str(corpus_file)), run_cli("redact", str(utf16_file)),
                              run_cli("redact", input="\n".join(corpus.lines))]):  # fmt: skip
        assert done.returncode == 0 and done.stdout.count("\n") >= len(corpus.lines) - 1, done.stderr
        check_text(f"posdiag redact {i}", done.stdout + done.stderr)

    check_text("agent log", a.stderr.read_text(errors="replace"))
    inputs = {a.log, utf16_log, named_log, loose_log, tmp_path / "last_error.json", a.config}
    for path in sorted(a.workdir.rglob("*")):
        if path in inputs or not path.is_file():
            continue
        raw = path.read_bytes()
        texts = bundle_texts(raw).items() if raw.startswith(b"\x1f\x8b") else [("", raw.decode("utf-8", errors="replace"))]
        for name, body in texts:
            check_text(f"{path}!{name}", body)

    session = signed_in(support_server.url, "support")
    check_text("server listing", json.dumps(stored, ensure_ascii=False))
    sources = set()
    for item in stored:
        bundle_id = item["bundle_id"] if "bundle_id" in item else item["id"]
        check_text(f"API {bundle_id}", support_server.get(f"/api/v1/bundles/{bundle_id}").text)
        raw = support_server.get(f"/api/v1/bundles/{bundle_id}/download").content
        members = bundle_texts(raw)
        assert not [m for m in members if corpus.pans[0] in m], list(members)
        for name, body in members.items():
            check_text(f"stored {bundle_id}!{name}", body)
        page = session.get(f"{support_server.url}/bundles/{bundle_id}", timeout=30)
        assert page.status_code == 200
        check_text(f"page /bundles/{bundle_id}", page.text)
        sources |= {json.loads(line)["source"].split(":", 1)[0] for line in members["events.jsonl"].splitlines() if line}
    check_text("page /bundles", session.get(f"{support_server.url}/bundles", timeout=30).text)
    assert {"log", "file", "socket"} <= sources, sources
    assert not problems, "card data leaked:\n" + "\n".join(problems)


PATTERN_UTF16 = r"应答码=(?P<code>[0-9]{2})"
