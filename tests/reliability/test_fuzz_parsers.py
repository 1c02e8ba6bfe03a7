"""Fuzz every terminal-side parser that takes outside input (issue 8, bad input).

Each property says what a parser may do with garbage: return a result or raise its one
documented error (naming the file and key where it has them), a finding, or an `ok: false`
answer; never another exception and never a hang. Examples are bounded (max_examples,
deadline) so the whole file stays well under a minute.
"""

import dataclasses
import http.server
import io
import json
import math
import re
import socket
import tarfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent import bundle, config, knowledge
from agent.local_socket import MAX_REQUEST_BYTES, LocalSocket
from agent.settings import SECTIONS
from agent.sources import (
    MAX_CODE_LENGTH,
    MAX_LINE_BYTES,
    LogFollower,
    parse_event_document,
)
from probes import printer
from probes._reader_drivers import (
    BadFrame,
    NoReply,
    ReaderStatus,
    parse_status,
    read_frame,
)
from probes._serial_line import Line
from probes.contract.errors import ConfigError
from remote import wire
from remote.redact import Redactor
from tests.conftest import SOAK

FUZZ = settings(
    max_examples=150 * SOAK,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(
    max_examples=60 * SOAK,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def toml_value(value) -> str:
    """Any JSON-like value as a TOML inline value (keys quoted, so dotted names stay one key)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return (
        "{"
        + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        + "}"
    )


def toml_document(tables: dict) -> str:
    return (
        "\n".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in tables.items())
        + "\n"
    )


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "unix:/tmp/x.sock",
            "127.0.0.1:0",
            "(?P<code>\\d+)",
            "zh",
            "serial",
            "{cause}",
        ]
    ),
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def check_config_error(err: ConfigError, path: Path) -> None:
    assert str(path) in str(err), str(err)


# ---------------------------------------------------------------- config TOML


@FUZZ
@given(text=st.text(max_size=400))
@example(text="[daemon]\nsettle_seconds = nan\n")
@example(text="[runner]\ndeadline_seconds = inf\n")
@example(text="[[daemon.log_sources]]\npath = '/x'\npatterns = ['(']\n")
@example(text="\x00")
def test_config_from_arbitrary_text_loads_or_names_the_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "posdiag.toml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = config.load(str(path))
    except ConfigError as err:
        check_config_error(err, path)
    else:
        assert_within_bounds(loaded)


def known_keys() -> list[tuple[str, ...]]:
    import dataclasses

    base = config.load()
    keys = [
        (name, f.name)
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    ]
    keys += [
        ("probes", probe, f.name)
        for probe, s in base.probes.items()
        for f in dataclasses.fields(type(s))
    ]
    return keys


KNOWN_KEYS = known_keys()


def nest(pairs: list[tuple[tuple[str, ...], object]]) -> dict:
    doc: dict = {}
    for keypath, value in pairs:
        node = doc
        for part in keypath[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[keypath[-1]] = value
    return doc


log_source = st.fixed_dictionaries(
    {
        "path": st.text(max_size=20),
        "patterns": st.lists(
            st.text(max_size=20) | st.just("x(?P<code>\\w+)"), max_size=3
        ),
    },
    optional={"scheme": st.text(max_size=10), "junk": scalars},
)


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(KNOWN_KEYS), json_like), min_size=1, max_size=6
    ),
    sources=st.none() | st.lists(log_source, max_size=2) | json_like,
)
def test_config_with_random_values_for_known_keys(tmp_path_factory, pairs, sources):
    doc = nest(pairs)
    if sources is not None and isinstance(doc.get("daemon", {}), dict):
        doc.setdefault("daemon", {})["log_sources"] = sources
    path = tmp_path_factory.mktemp("cfg") / "posdiag.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    try:
        loaded = config.load(str(path))
    except ConfigError as err:
        check_config_error(err, path)
    else:
        assert_within_bounds(loaded)
        for source in loaded.section("daemon").log_sources:
            for pattern in source.patterns:
                assert "code" in re.compile(pattern).groupindex


def assert_within_bounds(loaded: config.Config) -> None:
    """Every loaded number is finite and inside the bounds its field declares."""
    import dataclasses

    objs = list(loaded.sections.values()) + list(loaded.probes.values())
    for obj in objs:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), f"{type(obj).__name__}.{f.name} = {value}"
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert lo is None or value >= lo
                assert hi is None or value <= hi


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(?P<code>\\d+", "regular expression"),
        ("error (\\d+)", "code"),
        ("[", "regular expression"),
        ("(?P<cod>x)", "code"),
    ],
)
def test_a_log_pattern_that_cannot_work_is_refused_at_load(tmp_path, pattern, problem):
    path = tmp_path / "posdiag.toml"
    good = "rc=(?P<code>\\d\\d)"
    path.write_text(
        f"[[daemon.log_sources]]\npath = '/var/log/app.log'\npatterns = ['{good}', '{pattern}']\n"
    )
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert str(path) in str(err.value)
    assert "daemon.log_sources[0].patterns[1]" in str(err.value)
    assert problem in err.value.problem


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:7878",
        "localhost:7878",
        "127.0.0.1:99999",
        "127.0.0.1:x",
        "unix:",
        "7878",
    ],
)
def test_an_event_socket_address_that_cannot_work_is_refused_at_load(tmp_path, listen):
    path = tmp_path / "posdiag.toml"
    path.write_text(f'[daemon]\nlisten = "{listen}"\n')
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert str(path) in str(err.value) and "daemon.listen" in str(err.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:0", "unix:{tmp}/events.sock"])
def test_an_event_socket_address_that_loads_also_binds(tmp_path, listen):
    path = tmp_path / "posdiag.toml"
    path.write_text(f'[daemon]\nlisten = "{listen.format(tmp=tmp_path)}"\n')
    server = LocalSocket(
        config.load(str(path)).section("daemon").listen, lambda event: None, 1
    )
    server.close()


# ---------------------------------------------------------------- knowledge base


KB_TOP = [
    "scheme",
    "engine",
    "codes",
    "causes",
    "findings",
    "categories",
    "dispatch",
    "junk",
]
text_table = st.fixed_dictionaries({"zh": scalars, "en": scalars})
kb_entry = st.one_of(
    json_like,
    st.fixed_dictionaries(  # a code
        {
            "meaning": text_table | json_like,
            "host_answer": st.booleans() | scalars,
            "causes": st.dictionaries(
                st.sampled_from(["printer.paper_out", "network.dns", "x"]),
                scalars,
                max_size=2,
            ),
        },
        optional={"open": st.booleans()},
    ),
    st.fixed_dictionaries(  # a cause
        {
            "category": st.sampled_from(["printer", "network", "nonsense"]),
            "dispatch": st.sampled_from(["none", "remote", "onsite", "x"]),
            "title": text_table,
            "actions": st.dictionaries(
                st.sampled_from(["merchant", "technician", "support"]),
                st.lists(text_table, max_size=2),
                max_size=3,
            ),
        },
        optional={
            "support": st.dictionaries(
                st.sampled_from(["printer.paper_out", "nope"]), scalars, max_size=2
            )
        },
    ),
    st.fixed_dictionaries(
        {"rank": scalars, "reason": text_table, "escalated": text_table}
    ),  # a verdict
    st.fixed_dictionaries(
        {
            "title": text_table,
            "probes": st.lists(scalars, max_size=2),
            "ok_weight": scalars,
        }
    ),  # a category
)
kb_names = st.sampled_from(
    [
        "51",
        "E3",
        "printer.paper_out",
        "printer.mine",
        "onsite",
        "printer",
        "none",
        "x.y",
    ]
) | st.text(max_size=10)
kb_document = st.dictionaries(
    st.sampled_from(KB_TOP),
    st.one_of(
        st.dictionaries(kb_names, kb_entry, max_size=3),
        scalars,
        st.fixed_dictionaries(
            {}, optional={"open_prior": scalars, "unexplained_cause": scalars}
        ),
    ),
    max_size=4,
)


def load_extra(tmp_path_factory, text: str) -> None:
    # A fresh file name each time: knowledge.load is cached by its path tuple.
    path = tmp_path_factory.mktemp("kb") / f"vendor-{uuid.uuid4().hex}.toml"
    path.write_text(text, encoding="utf-8")
    try:
        kb = knowledge.load((str(path),))
    except ConfigError as err:
        assert str(path) in str(err) or str(knowledge.packaged_dir()) in str(err), str(
            err
        )
        return
    for code in kb.codes.values():
        assert all(math.isfinite(p) for p in code.causes.values()), code
    for cause in kb.causes.values():
        assert all(
            math.isfinite(w) for w in [*cause.support.values(), *cause.weaken.values()]
        ), cause
    assert math.isfinite(kb.open_prior)


@FUZZ
@given(text=st.text(max_size=300))
@example(
    text='scheme = "v"\n[codes."x"]\nmeaning = {zh = "a", en = "b"}\nhost_answer = false\nopen = true\ncauses = {}\n'
)
def test_knowledge_file_with_arbitrary_text(tmp_path_factory, text):
    load_extra(tmp_path_factory, text)


@FUZZ
@given(doc=kb_document)
@example(
    doc={
        "scheme": "v",
        "codes": {
            "x": {
                "meaning": {"zh": "a", "en": "b"},
                "host_answer": False,
                "causes": {"printer.paper_out": math.nan},
            }
        },
    }
)
@example(doc={"engine": {"open_prior": math.inf}})
def test_knowledge_file_with_random_entries(tmp_path_factory, doc):
    load_extra(tmp_path_factory, toml_document(doc))


# ---------------------------------------------------------------- log lines and patterns


OPERATOR_PATTERNS = [
    r"(?:response code|应答码)[:=]\s*(?P<code>[0-9A-Z]{2})",
    r"错误码[:：]\s*(?P<code>\w+)",
    r"ERR (?P<code>\S+)(?: (?P<scheme>\w+))?",
    r"(?P<code>.*)",
    r"(?P<code>\s*)x",
]
log_chunk = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(max_size=100).map(lambda t: t.encode("gb18030")),
    st.sampled_from(
        [
            b"\xff\xfe\x00\x00",
            b"\x00" * 50,
            "应答码:51\n".encode("gb18030"),
            b"response code=05\n",
            b"ERR E3 cup\n",
            b"\r\n",
        ]
    ),
)


@FUZZ
@given(
    chunks=st.lists(log_chunk, min_size=1, max_size=6),
    patterns=st.lists(st.sampled_from(OPERATOR_PATTERNS), min_size=1, max_size=3),
)
def test_log_follower_survives_any_bytes(tmp_path_factory, chunks, patterns):
    path = tmp_path_factory.mktemp("log") / "app.log"
    path.write_bytes(b"")
    follower = LogFollower(path, [re.compile(p) for p in patterns], "iso8583", {})
    try:
        follower.poll(first=True)
        events = []
        for chunk in chunks:
            with path.open("ab") as fh:
                fh.write(chunk)
            events += follower.poll()
        for event in events:
            assert isinstance(event.code, str) and event.code
            assert event.scheme in (None, "iso8583", "cup", "terminal", "exception")
            json.dumps(event.record(), ensure_ascii=False)
            event.done()
        written = path.read_bytes()
        for (
            event
        ) in events:  # an event's offset (and so its id) is where its line starts
            start = event.context["offset"]
            assert start == 0 or written[start - 1 : start] == b"\n", (start, written)
        # Committed: past every event (all are done), at a line start, never past what was read.
        # Event-free lines read while an event was pending are committed at the next read.
        committed = follower.position()["offset"]
        ends = [written.index(b"\n", e.context["offset"]) + 1 for e in events]
        assert committed >= max(ends, default=0)
        assert committed == 0 or written[committed - 1 : committed] == b"\n"
        assert committed <= written.rfind(b"\n") + 1
    finally:
        follower.close()


def test_a_huge_line_without_newline_is_dropped_and_following_lines_still_match(
    tmp_path,
):
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    follower = LogFollower(path, [re.compile(OPERATOR_PATTERNS[0])], "iso8583", {})
    follower.poll(first=True)
    with path.open("ab") as fh:
        fh.write(
            b"response code=91 " + b"\x00\xff" * (3 << 20)
        )  # 6 MiB, no newline, over several reads
    t0 = time.monotonic()
    for _ in range(8):
        assert follower.poll() == []
    with path.open("ab") as fh:
        fh.write(b"\nresponse code=05\n")
    events = follower.poll()
    assert time.monotonic() - t0 < 5
    assert [e.code for e in events] == ["05"]
    assert len(follower.buffer) <= MAX_LINE_BYTES
    follower.close()


# ---------------------------------------------------------------- local-socket events


@FUZZ
@given(doc=json_like)
@example(doc={"code": "51", "context": {"a": [[[{"pan": "4111111111111111"}]]]}})
@example(doc={"code": True})
@example(doc={"code": "x" * 65})
def test_event_documents_parse_or_say_why(doc):
    try:
        code, scheme, context = parse_event_document(doc)
    except ValueError as err:
        assert str(err)
        return
    assert code and len(code) <= MAX_CODE_LENGTH and code.isprintable()
    assert scheme in (None, "iso8583", "cup", "terminal", "exception")
    assert isinstance(context, dict)


@pytest.fixture(scope="module")
def event_socket():
    def submit(event):
        event.reply({"diagnosis": {"code": event.code}})

    server = LocalSocket("127.0.0.1:0", submit, reply_timeout_s=1)
    server.start()
    yield server
    server.close()


def ask(address, payload: bytes, half_close: bool = True) -> list[bytes]:
    with socket.create_connection(address, timeout=5) as conn:
        try:
            conn.sendall(payload)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the agent may answer and close before reading everything
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.split(b"\n")


requests_ = st.one_of(
    st.binary(max_size=400),
    json_like.map(lambda d: json.dumps(d).encode() + b"\n"),
    st.sampled_from(
        [
            b"[" * 60000 + b"\n",
            b'{"code": "51", "context": '
            + b'{"a":' * 5000
            + b"1"
            + b"}" * 5000
            + b"}\n",
            b'{"code": "\xff\xfe"}\n',
            b"\n",
            b'{"code": "51"}' + b" " * (MAX_REQUEST_BYTES + 10),
        ]
    ),
)


@FEW
@given(payload=requests_)
def test_socket_answers_any_bytes_with_one_json_line(event_socket, payload):
    lines = ask(event_socket.address, payload)
    assert len(lines) == 2 and lines[1] == b"", lines[:3]
    answer = json.loads(lines[0])
    assert isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert answer["error"]
    else:
        assert answer["event_id"]


def test_socket_answers_a_silent_client_after_its_read_timeout(event_socket):
    t0 = time.monotonic()
    lines = ask(event_socket.address, b'{"code": "51"', half_close=False)
    assert 1.5 < time.monotonic() - t0 < 6
    assert json.loads(lines[0]) == {
        "ok": False,
        "error": "no complete request within 2 s",
    }


# ---------------------------------------------------------------- ESC/POS status and reader frames


class ScriptedPrinter:
    """A PrinterLink whose answers to DLE EOT 1..4 are given (the byte-level decoding is what
    is under test; a real printer cannot be made to send arbitrary bytes on request)."""

    def __init__(self, replies: list[bytes], port_status: int | None) -> None:
        self.replies = replies
        self.status = port_status

    def write(self, data: bytes, deadline: float) -> None:
        pass

    def query(self, n: int, deadline: float) -> bytes:
        return self.replies[n - 1] if n - 1 < len(self.replies) else b""

    def port_status(self) -> int | None:
        return self.status


PRINTER_SETTINGS = config.load().probes["printer"]


@FUZZ
@given(
    replies=st.lists(
        st.binary(max_size=3) | st.integers(0, 255).map(lambda b: bytes([b])),
        max_size=4,
    ),
    port_status=st.none() | st.integers(0, 255),
)
def test_printer_status_bytes_give_findings(replies, port_status):
    observation = printer.observe(
        ScriptedPrinter(replies, port_status), PRINTER_SETTINGS, time.monotonic() + 1
    )
    assert {f.id for f in observation.findings} <= set(printer.FINDINGS)
    json.dumps(observation.metrics)


@FUZZ
@given(status=st.tuples(*[st.integers(0, 255)] * 4))
def test_every_status_byte_combination_decodes(status):
    found = printer.decode(printer.StatusBytes(*status))
    assert {f.id for f in found} <= set(printer.FINDINGS)
    assert len({f.id for f in found}) == len(found)


def frame_like(body: bytes, length_delta: int, etx: int, lrc_flip: int) -> bytes:
    length = max(0, len(body) + length_delta).to_bytes(2, "big")
    tail = length + body + bytes([etx])
    check = 0
    for b in tail:
        check ^= b
    return b"\x02" + tail + bytes([check ^ lrc_flip])


reader_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(
        frame_like,
        st.binary(min_size=0, max_size=40),
        st.integers(-2, 2) | st.just(0),
        st.sampled_from([3, 3, 3, 0]),
        st.sampled_from([0, 0, 1]),
    ),
    st.builds(lambda b: frame_like(b"\x81" + b, 0, 3, 0), st.binary(max_size=20)),
)


@pytest.fixture(scope="module")
def loop_line():
    with Line("loop://", 115200, False, False) as line:
        yield line


@FUZZ
@given(data=reader_bytes)
def test_reader_frames_decode_or_are_bad_frames(loop_line, data):
    loop_line.discard_input()
    loop_line.write(data, time.monotonic() + 1)
    try:
        status = parse_status(read_frame(loop_line, time.monotonic() + 0.01))
    except NoReply:
        assert data == b""
    except BadFrame as err:
        assert str(err)
        assert len(err.head) <= 8
    else:
        assert isinstance(status, ReaderStatus) and status.firmware.isascii()


# ---------------------------------------------------------------- redaction


@FUZZ
@given(
    text=st.text(max_size=500) | st.text(alphabet="0123456789 -=^;?%B", max_size=500)
)
def test_redaction_never_raises(text):
    redactor = Redactor()
    assert isinstance(redactor.text(text), str)
    assert isinstance(
        redactor.data({"line": text, text: [text, 4111111111111111]}), dict
    )


def test_a_line_of_chained_pairs_neither_exhausts_the_stack_nor_leaks(tmp_path):
    line = (
        "response code=05 token a" + "=a" * 3000 + " pwd=a=b=c=d=e=f=g=h=i=j=k=hunter2"
    )
    assert "hunter2" not in Redactor().text(line)
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    follower = LogFollower(path, [re.compile(OPERATOR_PATTERNS[0])], "iso8583", {})
    follower.poll(first=True)
    path.write_text(line + "\n")
    assert [e.code for e in follower.poll()] == [
        "05"
    ]  # the watcher thread polls: it must survive
    follower.close()


ADVERSARIAL = {
    "digit groups": "12 ",
    "dashed groups": "4111-1111 ",
    "UnionPay-like runs": "62 ",
    "track separators": "4111111111111111=",
    "equals": "=",
    "carets": "^",
    "track1 heads": "%B4111111111111111^",
    "key value": "pin=",
    "json keys": '"cvv":',
    "field heads": "F35=",
}


@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_redaction_of_adversarial_text_grows_linearly(unit):
    """No input makes the patterns backtrack catastrophically: eight times the text costs
    about eight times the time (a generous factor, so a busy machine does not matter;
    bench/bundle.py reports the actual speed)."""

    def cost(size: int) -> float:
        text = unit * (size // len(unit))
        t0 = time.monotonic()
        Redactor().text(text)
        return time.monotonic() - t0

    small, big = cost(1 << 17), cost(1 << 20)
    assert big < 8 * 4 * small + 1.0, f"128 KiB: {small:.2f} s, 1 MiB: {big:.2f} s"


# ---------------------------------------------------------------- bundle reader


TOKEN = "fuzz-token"
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def small_bundle() -> bytes:
    manifest = {
        "schema": wire.BUNDLE_SCHEMA,
        "bundle_id": str(uuid.UUID(int=1)),
        "files": [],
    }
    body = b'{"ok": true}'
    manifest["files"] = [
        {
            "path": "diagnosis.json",
            "size": len(body),
            "sha256": __import__("hashlib").sha256(body).hexdigest(),
        }
    ]
    return bundle.pack(manifest, {"diagnosis.json": body}, TOKEN, NOW)


GOOD = small_bundle()


def tar_of(entries: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, body in entries:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return raw.getvalue()


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


archives = st.one_of(
    st.binary(max_size=500),
    st.binary(max_size=2000).map(bundle.gzip_bytes),
    st.builds(
        mutate,
        st.just(GOOD),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
        st.none() | st.integers(0, len(GOOD)),
    ),
    st.builds(
        lambda raw, edits: bundle.gzip_bytes(mutate(raw, edits, None)),
        st.just(bundle.gunzip(GOOD)),
        st.lists(
            st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        ),
    ),
    st.builds(
        lambda entries: bundle.gzip_bytes(tar_of(entries)),
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["manifest.json", "manifest.sig", "logs/a.log", "../x", "/etc/x"]
                ),
                st.binary(max_size=50),
            ),
            max_size=4,
        ),
    ),
    st.builds(
        lambda m: bundle.pack(m, {}, TOKEN, NOW),
        st.dictionaries(
            st.sampled_from(["schema", "files", "bundle_id", "x"]),
            json_like,
            max_size=4,
        ),
    ),
    st.builds(
        lambda body: bundle.gzip_bytes(
            tar_of([("manifest.json", body), ("manifest.sig", b"00")])
        ),
        st.binary(max_size=100) | json_like.map(lambda d: json.dumps(d).encode()),
    ),
    st.sampled_from(
        [
            bundle.gzip_bytes(
                tar_of([("manifest.json", b"[" * 100000), ("manifest.sig", b"00")])
            ),
            bundle.gzip_bytes(
                tar_of(
                    [
                        (
                            "manifest.json",
                            b'{"files": [{"path": "a", "size": []}], "schema": 1}',
                        ),
                        ("a", b"x"),
                        ("manifest.sig", b"\xff"),
                    ]
                )
            ),
        ]
    ),
)


@FUZZ
@given(data=archives)
def test_bundle_read_and_verify_on_random_and_mutated_archives(data):
    problems = bundle.verify(data, TOKEN)
    assert isinstance(problems, list) and all(
        isinstance(p, str) and p for p in problems
    )
    try:
        manifest, members = bundle.read(data)
    except bundle.BundleError as err:
        assert str(err)
        assert problems
    else:
        assert isinstance(members, dict)
        assert manifest is not None


def test_the_untouched_bundle_verifies():
    assert bundle.verify(GOOD, TOKEN) == []
    assert bundle.verify(GOOD, "other") == [
        "signature does not match (wrong token, or the manifest was altered)"
    ]


# ---------------------------------------------------------------- support-server answers


class Answering(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status, headers and body the test set on the server."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def answering_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def answering_config(server) -> config.Config:
    loaded = config.load()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    upload = dataclasses.replace(
        loaded.section("upload"),
        server_url=url,
        token="t",
        max_attempts=1,
        read_timeout_seconds=5.0,
    )
    return dataclasses.replace(loaded, sections={**loaded.sections, "upload": upload})


answers = st.tuples(
    st.sampled_from([200, 201, 204, 301, 400, 401, 404, 408, 413, 429, 500, 503, 599]),
    st.lists(
        st.tuples(
            st.just("Retry-After"),
            st.text(
                alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF),
                max_size=30,
            )
            | st.sampled_from(
                [
                    "\xb2",
                    "1e9",
                    "-5",
                    "Wed, 21 Oct 2015 07:28:00 GMT",
                    "99999999999999999999",
                ]
            ),
        ),
        max_size=1,
    ),
    st.binary(max_size=300)
    | json_like.map(lambda d: json.dumps(d).encode())
    | st.just(b"[" * 50000),
)


@FEW
@given(answer=answers)
@example(answer=(503, [("Retry-After", "\xb2")], b""))
@example(answer=(400, [], b"[" * 50000))
def test_upload_answers_are_classified(answering_server, answer):
    from remote.client import Client, UploadError

    answering_server.answer = answer
    client = Client(
        answering_config(answering_server).section("upload"), sleep=lambda s: None
    )
    try:
        status = client.send(GOOD, "00000000-0000-0000-0000-000000000001").status
    except UploadError as err:
        assert err.status == answer[0]
    else:
        assert 200 <= status < 300


@FEW
@given(answer=answers)
@example(answer=(200, [], b"[" * 50000))
def test_poll_answers_give_a_command_none_or_a_poll_error(answering_server, answer):
    from remote.commands import PollError, fetch_next, link_for

    answering_server.answer = answer
    config = answering_config(answering_server)
    try:
        command = fetch_next(link_for(config.section("upload")), config.section("terminal").id).command
    except PollError as err:
        assert str(err)
    else:
        assert command is None or isinstance(command["command_id"], str)


def test_socket_answers_a_trickling_client_within_its_read_timeout(event_socket):
    with socket.create_connection(event_socket.address, timeout=10) as conn:
        t0 = time.monotonic()
        answer = b""
        for byte in b'{"code": "51", "context": {}}':
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.25)
            conn.setblocking(False)
            try:
                answer += conn.recv(4096)
            except BlockingIOError:
                pass
            conn.setblocking(True)
            if answer:
                break
        conn.settimeout(5)
        while not answer.endswith(b"\n"):
            answer += conn.recv(4096)
    assert time.monotonic() - t0 < 3.5
    assert json.loads(answer) == {
        "ok": False,
        "error": "no complete request within 2 s",
    }
