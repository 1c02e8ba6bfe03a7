import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from remote.redact import Redactor, looks_like_pan, luhn_ok, redact_text, secret_kind
from tests.conftest import run_cli


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


@st.composite
def pans(draw) -> str:
    length = draw(st.integers(13, 19))
    first = draw(st.sampled_from("23456789"))
    body = first + draw(st.text("0123456789", min_size=length - 2, max_size=length - 2))
    pan = luhn_complete(body)
    assume(looks_like_pan(pan))  # leaves out only the documented 14-digit timestamps
    return pan


@st.composite
def shaped(draw, pan: str) -> str:
    """A PAN written the ways people and apps write them."""
    shape = draw(st.sampled_from(["plain", "fours", "dashes", "amex", "random"]))
    if shape == "plain":
        return pan
    if shape in ("fours", "dashes"):
        sep = " " if shape == "fours" else "-"
        return sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
    if shape == "amex":
        return f"{pan[:4]} {pan[4:10]} {pan[10:]}"
    cuts = sorted(draw(st.sets(st.integers(2, len(pan) - 2), max_size=5)))
    pieces, last = [], 0
    for cut in cuts:
        if cut - last >= 2:
            pieces.append(pan[last:cut])
            last = cut
    pieces.append(pan[last:])
    sep = draw(st.sampled_from([" ", "-"]))
    return sep.join(pieces)


CONTEXTS = [
    "{}",
    "card={}",
    "PAN: {} amount=000000001000",
    '{{"pan":"{}","amount":100}}',
    "<pan>{}</pan>",
    "2026-11-23 08:14:33.123 I/pay[1203] swiped {} ok",
    "F2={}",
    "field 2: {}",
    "ref 100 {} 2026",
    "x{}y",
]


def digits_only(text: str) -> str:
    return re.sub(r"[^0-9*]", "", text)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_generated_pans_never_survive(data):
    pan = data.draw(pans())
    written = data.draw(shaped(pan))
    context = data.draw(st.sampled_from(CONTEXTS))
    out, counts = redact_text(context.format(written))
    assert pan not in digits_only(out)
    context_runs = set(re.findall(r"[0-9]+", context))
    windows = {pan[i : i + 7] for i in range(len(pan) - 6)}
    for run in re.findall(r"[0-9]{7,}", out):  # more than the 6 leading digits a mask may show
        assert run in context_runs or not any(w in run for w in windows), (out, run)
    assert counts["pan"] >= 1


@settings(max_examples=200, deadline=None)
@given(pan=pans())
def test_masked_to_first_six_and_last_four(pan):
    out, _ = redact_text(f"card {pan} end")
    assert out == f"card {pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]} end"


@settings(max_examples=300, deadline=None)
@given(number=st.text("0123456789", min_size=1, max_size=12))
def test_short_numbers_survive(number):
    text = f"amount={number} tid {number} at {number}"
    assert redact_text(text)[0] == text


@settings(max_examples=300, deadline=None)
@given(number=st.text("0123456789", min_size=13, max_size=19))
def test_non_luhn_numbers_survive(number):
    assume(not luhn_ok(number) and not (number.startswith("62") and len(number) >= 16))
    text = f"order {number} done"
    assert redact_text(text)[0] == text


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.from_regex(r"[0-9]{1,12}(\.[0-9]{2})?", fullmatch=True)),
        max_size=30,
    )
)
def test_text_without_card_data_is_unchanged(pairs):
    # Numbers next to each other with one space between are one candidate PAN on purpose
    # (spaces are allowed between a PAN's groups), so here words separate them.
    text = " ".join(f"{word} {number}" for word, number in pairs)
    assert redact_text(text)[0] == text


SECRET_KEYS = ["password", "PASSWORD", "api_key", "apiKey", "x-api-key", "wifi.psk", "pinBlock", "pin", "cvv2", "CVC",
               "track2", "sessionToken", "client_secret", "passwd", "masterKey"]


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(SECRET_KEYS),
    value=st.from_regex(r"[A-Za-z0-9+/]{4,24}", fullmatch=True),
    shape=st.sampled_from(["{k}={v}", "{k}: {v}", '{{"{k}":"{v}"}}', '{{"{k}": "{v}", "n": 1}}', "<{k}>{v}</{k}>", "a=1 {k}='{v}' b=2"]),
)
def test_secret_values_never_survive(key, value, shape):
    value = "Q" + value  # never a substring of the key or the shape
    out, counts = redact_text("log " + shape.format(k=key, v=value) + " end")
    assert value not in out
    assert sum(counts.values()) >= 1


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("track2 ;4111111111111111=25121011234567890?", "track2 ;[TRACK]", "track"),
        ("4111111111111111=2512101123", "[TRACK]", "track"),
        ("tag57 4761739001010119D22122011143804400F", "tag57 [TRACK]", "track"),
        ("%B4111111111111111^DOE/JOHN^2512101000000000000?", "%[TRACK]", "track"),
        ("F35=4111111111111111=2512", "F35=***", "track"),
        ("field 052: A1B2C3D4E5F60718", "field 052: ***", "pin_block"),
        ("DE55 9F2608A1B2C3D4E5F60718", "DE55 ***", "track"),
        ("域35: 6222021234567890123=2512", "域35: ***", "track"),
        ("[045]: B4111111111111111^X^2512", "[045]: ***", "track"),
        ('<field id="52" value="A1B2C3D4E5F60718"/>', '<field id="52" value="***"/>', "pin_block"),
        ('<field id="2" value="4000000000000002"/>', '<field id="2" value="400000******0002"/>', "pan"),
        ("F2=1234567890123456", "F2=123456******3456", "pan"),
        ('{"cvv":"123"}', '{"cvv":"***"}', "cvv"),
        ('{"cvv2": 123}', '{"cvv2": ***}', "cvv"),
        ("CVV 123", "CVV ***", "cvv"),
        ("cvc=456", "cvc=***", "cvv"),
        ("<pinBlock>1234ABCD5678EF90</pinBlock>", "<pinBlock>***</pinBlock>", "pin_block"),
        ("pin_block=0412AC89FFFF0000", "pin_block=***", "pin_block"),
        ("<password>hunter2</password>", "<password>***</password>", "secret"),
        ("wifi_psk=abcdefgh", "wifi_psk=***", "secret"),
        ("x-api-key: abc123", "x-api-key: ***", "secret"),
        ("token='xyz' next", "token='***' next", "secret"),
        ('"masterKey" : "0123456789ABCDEF"', '"masterKey" : "***"', "secret"),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer ***", "secret"),
        ("passwd=s3cret&user=a", "passwd=***&user=a", "secret"),
        ("url https://h/p?token=abc&x=1", "url https://h/p?token=***&x=1", "secret"),
        ("cfg=password:x", "cfg=password:***", "secret"),
        ("host=acq.example.com:443 psk:abc", "host=acq.example.com:443 psk:***", "secret"),
        ("track1: B4111", "track1: ***", "track"),
        ("sim pin = 1234", "sim pin = ***", "pin_block"),
        ("unionpay 6212345678901234567", "unionpay 621234*********4567", "pan"),
        ("bcd 10 41 11 11 11 11 11 11 11 FF", "bcd 10 411111******1111 FF", "pan"),
    ],
)
def test_removes(text, expected, kind):
    out, counts = redact_text(text)
    assert out == expected
    assert counts[kind] >= 1


@pytest.mark.parametrize(
    "text",
    [
        "kcv=3FA2B1 key_check_value=3FA2B1",
        "ping_ms=34 keyboard=us mapping=ok shipping: 2",
        "amount=000000012500 tid=12345678 trace=001806",
        "2026-11-23 08:14:33.123 20261123081433 1763885673123",
        "phone 13800138000 +86 138 0013 8000",
        "key_index=2 token_type=bearer pin_len=6 tracking_id=77",
        "mid=898440153990001",
        "counts 1 2 3 4 5 6 7 8 9 1 2 3 4 5 6 7",
        "card 411111******1111 masked already",
    ],
)
def test_leaves_alone(text):
    assert redact_text(text) == (text, {"cvv": 0, "pan": 0, "pin_block": 0, "secret": 0, "track": 0})


def test_adjacent_number_does_not_hide_pan():
    out, _ = redact_text("100 4111 1111 1111 1111 2026")
    assert "4111111111111111" not in digits_only(out)
    assert out.endswith(" 2026")


def test_redaction_is_idempotent():
    once, _ = redact_text('card=4111111111111111 {"cvv":"123"} password=x ;4111111111111111=2512?')
    twice, counts = redact_text(once)
    assert twice == once
    assert sum(counts.values()) == 0


def test_data_walks_json_and_masks_secret_keys():
    redactor = Redactor()
    out = redactor.data(
        {"detail": "card 4111111111111111", "token": "abc", "n": 4111111111111111, "nested": [{"cvv": 123}], "ok": True}
    )
    assert out == {"detail": "card 411111******1111", "token": "***", "n": "411111******1111", "nested": [{"cvv": "***"}], "ok": True}
    assert redactor.summary() == {"cvv": 1, "pan": 2, "pin_block": 0, "secret": 1, "track": 0}


def test_secret_kind_reads_words_not_substrings():
    assert secret_kind("pinBlock") == "pin_block"
    assert secret_kind("EncryptedPINBlock") == "pin_block"
    assert secret_kind("ping") is None
    assert secret_kind("monkey") is None
    assert secret_kind("KCV") is None
    assert secret_kind("session.key") == "secret"


@pytest.mark.parametrize(
    "unit",
    ["9" * 64, "4 ", "a=", "key=", '"k":"', "<a>", "%B4" + "1" * 18 + "^", "field 35 ", "1-", "password" * 3 + ":", "\\\""],
)
def test_linear_time_on_adversarial_input(unit):
    small, big = unit * 2000, unit * 16000
    t0 = time.perf_counter()
    redact_text(small)
    t1 = time.perf_counter()
    redact_text(big)
    t2 = time.perf_counter()
    assert t2 - t1 < 2.0
    assert (t2 - t1) < 8 * 3 * max(t1 - t0, 0.01)  # 8x input: about 8x time; quadratic would be 64x


def test_cli_files_and_stdin(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes("刷卡 4111111111111111 cvv=123\n".encode("gb18030"))
    done = run_cli("redact", "--stats", str(log))
    assert done.returncode == 0
    assert done.stdout == "刷卡 411111******1111 cvv=***\n"
    assert "pan 1" in done.stderr and "cvv 1" in done.stderr
    piped = run_cli("redact", input='{"pan":"5500 0055 5555 5559"}\n')
    assert piped.stdout == '{"pan":"550000******5559"}\n'


def test_a_label_exempts_its_own_number_not_a_pan_written_after_it():
    for line in ("tid=12345678 4111111111111111", "amount=100 4111 1111 1111 1111", "mid: 123456789012345 4111-1111-1111-1111"):
        cleaned = redact_text(line)[0]
        assert "4111111111111111" not in cleaned.replace(" ", "").replace("-", ""), cleaned
        assert "411111" in cleaned
    assert redact_text("tid=12345678 amount=100.00 mid=123456789012345")[0] == "tid=12345678 amount=100.00 mid=123456789012345"


def test_pin_blocks_named_in_prose():
    for line in ("epb 1234567890ABCDEF", "PIN block: 1234 5678 90AB CDEF", "pin-block=1234-5678-90ab-cdef"):
        cleaned, counts = redact_text(line)
        assert "90AB" not in cleaned.upper() and counts["pin_block"] == 1, cleaned
