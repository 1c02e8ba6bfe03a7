import json
import re
import unicodedata
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from remote.logtext import decode_log
from remote.redact import Redactor, glued_pans, looks_like_pan, luhn_ok, redact_text, secret_kind
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
    assume(not luhn_ok(number) and not (number.startswith("62") and len(number) >= 16) and not glued_pans(number))
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
        ("bcd 10 41 11 11 11 11 11 11 11 FF", "bcd 10 41 11 11 ** ** ** 11 11 FF", "pan"),
        ("track2=4111111111111111=2512101?", "track2=[TRACK]", "track"),
        ("track2=[4111111111111111=2512101]", "track2=[[TRACK]]", "track"),
        ("pan 4111.1111.1111.1111 ok", "pan 4111.11**.****.1111 ok", "pan"),
        ("卡号 ４１１１ １１１１ １１１１ １１１１", "卡号 ４１１１ １１＊＊ ＊＊＊＊ １１１１".replace("＊", "*"), "pan"),
        ("card 41111111******11", "card 411111********11", "pan"),
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
    assert piped.stdout == '{"pan":"5500 00** **** 5559"}\n'


def test_a_label_exempts_its_own_number_not_a_pan_written_after_it():
    for line in ("tid=12345678 4111111111111111", "amount=100 4111 1111 1111 1111", "mid: 123456789012345 4111-1111-1111-1111"):
        cleaned = redact_text(line)[0]
        assert "4111111111111111" not in cleaned.replace(" ", "").replace("-", ""), cleaned
        assert "411111" in cleaned.replace(" ", "").replace("-", "")
    assert redact_text("tid=12345678 amount=100.00 mid=123456789012345")[0] == "tid=12345678 amount=100.00 mid=123456789012345"


def test_pin_blocks_named_in_prose():
    for line in ("epb 1234567890ABCDEF", "PIN block: 1234 5678 90AB CDEF", "pin-block=1234-5678-90ab-cdef"):
        cleaned, counts = redact_text(line)
        assert "90AB" not in cleaned.upper() and counts["pin_block"] == 1, cleaned


# --- Issue 12: every shape payment apps write, generated -------------------------------

SEPARATORS = [" ", "-", ".", "\t", "  ", "   ", "/", "_", ",", "\u00a0", "\u2009", "\u202f", "+", "%20", "\u3000", " - "]
QUIET = ["card={}", "PAN: {} ok", "x{}y", '{{"pan":"{}"}}', "<pan>{}</pan>", "刷卡{}成功", "pan[{}]"]


def squeezed(text: str) -> str:
    """NFKC form of `text` with separators between digits and masks removed."""
    text = unicodedata.normalize("NFKC", text).replace("%20", " ")
    return re.sub(r"(?<=[0-9*])[\s\-./_,+]{1,3}(?=[0-9*])", "", text)


def assert_pan_hidden(out: str, pan: str) -> None:
    """No more of `pan` is readable than its first 6 and last 4 digits: no 7 of its
    digits in a row (contexts around a PAN here hold no digits)."""
    flat = squeezed(out)
    assert pan not in re.sub(r"[^0-9]", "", flat), out
    windows = {pan[i : i + 7] for i in range(len(pan) - 6)}
    for run in re.findall(r"[0-9]{7,}", flat):
        assert not any(w in run for w in windows), (out, run)


@st.composite
def distinct_pans(draw) -> str:
    """PANs that no run of zeros or of one digit in the text around them can spell."""
    pan = draw(pans())
    assume(len(set(pan)) >= 5 and not re.search(r"(.)\1\1", pan))
    return pan


@st.composite
def grouped(draw, pan: str, separators: list[str]) -> str:
    sizes = draw(st.lists(st.integers(2, 6), min_size=2, max_size=8))
    pieces, i = [], 0
    for size in sizes:
        if i >= len(pan):
            break
        pieces.append(pan[i : i + size])
        i += size
    if i < len(pan):
        pieces.append(pan[i:])
    if len(pieces[-1]) < 2:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    sep = draw(st.sampled_from(separators))
    return sep.join(pieces)


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_pan_with_any_separator_is_masked(data):
    pan = data.draw(pans())
    written = data.draw(grouped(pan, SEPARATORS))
    out, counts = redact_text(data.draw(st.sampled_from(QUIET)).format(written))
    assert_pan_hidden(out, pan)
    assert counts["pan"] >= 1


FULL_WIDTH = str.maketrans("0123456789 ", "０１２３４５６７８９\u3000")


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_full_width_digits_are_masked_in_the_original_text(data):
    pan = data.draw(pans())
    written = data.draw(grouped(pan, [" ", "-", "\u3000", ""])) if data.draw(st.booleans()) else pan
    wide = "".join(ch.translate(FULL_WIDTH) if data.draw(st.booleans()) else ch for ch in written)
    text = data.draw(st.sampled_from(QUIET)).format(wide)
    out, counts = redact_text(text)
    assert_pan_hidden(out, pan)
    assert counts["pan"] >= 1
    # Masked where it stood: every other character is the original one.
    assert len(out) == len(text) and all(o in (t, "*") for o, t in zip(out, text, strict=True)), out


def bcd(digits: str) -> str:
    return digits + ("F" if len(digits) % 2 else "")


def tlv(tag: str, value_hex: str) -> str:
    return tag + f"{len(value_hex) // 2:02X}" + value_hex


@st.composite
def emv_records(draw) -> tuple[str, list[str]]:
    """A BER-TLV record (maybe inside a 70/77 template) and the secrets it carries."""
    pan = draw(distinct_pans())
    yymm = draw(st.sampled_from(["2512", "2701", "3009"]))
    disc = draw(st.text("0123456789", min_size=6, max_size=14).filter(lambda d: len(set(d)) >= 4))
    name = draw(st.from_regex(r"[A-Z]{3,20}/[A-Z]{3,20}( [A-Z]{1,3})?", fullmatch=True))
    disc1 = draw(st.text("0123456789", min_size=6, max_size=12).filter(lambda d: len(set(d)) >= 4))
    sensitive = {
        "5A": bcd(pan),
        "57": bcd(pan + "D" + yymm + "201" + disc),
        "5F20": name.encode().hex().upper(),
        "9F1F": disc1.encode().hex().upper(),
        "9F20": bcd(disc),
    }
    plain = {
        "9F02": "000000012500", "9F26": draw(st.from_regex(r"[0-9A-F]{16}", fullmatch=True)), "82": "3900",
        "95": "0000008000", "9A": "261123", "9C": "00", "5F2A": "0156", "9F36": "00A1", "5F24": yymm + "31",
    }
    chosen = draw(st.lists(st.sampled_from(sorted(sensitive)), min_size=1, max_size=5, unique=True))
    items = [tlv(t, sensitive[t]) for t in chosen] + [tlv(t, v) for t, v in plain.items()]
    items = draw(st.permutations(items))
    body = "".join(items)
    if draw(st.booleans()):
        body = tlv(draw(st.sampled_from(["70", "77"])), body) if len(body) < 256 else body
    if draw(st.booleans()):
        body = body.lower()
    if draw(st.booleans()):
        body = " ".join(body[i : i + 2] for i in range(0, len(body), 2))
    secrets = [pan] + [s for t, s in (("57", disc), ("5F20", name), ("9F1F", disc1), ("9F20", disc)) if t in chosen]
    return body, secrets


EMV_CONTEXTS = [
    "{}", "emv {} end", "ICC: {}", 'resp {{"iccData":"{}","rc":"05"}}', '{{"DE55": "{}"}}', '{{"55":"{}"}}',
    "F55={}", "field 55: {}", '<field id="55" type="binary" value="{}"/>', "[055] {}", "<55>{}</55>", "DE-55: {}",
]


@settings(max_examples=120, deadline=None)
@given(record=emv_records(), context=st.sampled_from(EMV_CONTEXTS))
def test_emv_tlv_card_data_never_survives(record, context):
    body, secrets = record
    out, _ = redact_text(context.format(body))
    flat = out.replace(" ", "").upper()
    assert_pan_hidden(flat, secrets[0])
    for secret in secrets[1:]:
        assert secret.encode().hex().upper() not in flat and secret not in out.replace(" ", ""), (secret, out)


ISO_FORMS = [
    '<field id="{n}" type="binary" value="{v}"/>', '<field id="{n}" value="{v}" type="binary"/>',
    '<field value="{v}" id="{n}"/>', "[{n3}] {v}", "[{n3}]: {v}", "DE-{n}: {v}", "DE{n3}={v}", "P-{n} {v}",
    "<{n}>{v}</{n}>", '"DE{n}":"{v}"', '{{"{n}": "{v}"}}', "field {n}: {v}", "BIT {n} = {v}", "F{n}={v}", "域{n}: {v}",
]


@st.composite
def iso_field_values(draw) -> tuple[int, str, str]:
    """(field, value, what must not survive)."""
    number = draw(st.sampled_from([2, 35, 36, 45, 52, 55]))
    pan = draw(distinct_pans())
    if number == 2:
        return number, pan, pan
    if number == 35:
        value = pan + draw(st.sampled_from(["=", "D"])) + "2512201" + draw(st.text("0123456789", min_size=4, max_size=12))
    elif number == 36:
        value = "01" + pan + "=" + draw(st.text("0123456789", min_size=20, max_size=40))
    elif number == 45:
        value = "B" + pan + "^" + draw(st.from_regex(r"[A-Z]{2,30}/[A-Z]{2,30}", fullmatch=True)) + "^2512201000"
    elif number == 52:
        value = draw(st.from_regex(r"[0-9A-F]{16}", fullmatch=True))
    else:
        value = tlv("9F26", draw(st.from_regex(r"[0-9A-F]{16}", fullmatch=True))) + tlv("5A", bcd(pan))
    return number, value, value


@settings(max_examples=120, deadline=None)
@given(field=iso_field_values(), form=st.sampled_from(ISO_FORMS))
def test_iso8583_fields_in_every_dump_form(field, form):
    number, value, secret = field
    out, counts = redact_text(form.format(n=number, n3=f"{number:03d}", v=value))
    assert secret not in out, out
    if number == 2:
        assert_pan_hidden(out, value)
    assert sum(counts.values()) >= 1


def iso_message(pan: str, amount: str, stan: str) -> str:
    """A raw ISO 8583 authorisation request in hex (BCD numerics, LLVAR PAN with its length
    prefix, then processing code, amount, STAN and expiry date glued on)."""
    pan_field = f"{len(pan):02d}" + pan + ("0" if len(pan) % 2 else "")
    return "0200" + "7224000000C00000" + pan_field + "000000" + amount + stan + "2512" + "051" + "3132333435363738"


@settings(max_examples=120, deadline=None)
@given(pan=distinct_pans(), amount=st.from_regex(r"[0-9]{12}", fullmatch=True), stan=st.from_regex(r"[0-9]{6}", fullmatch=True),
       context=st.sampled_from(["{}", "send {}", "hex: {}", "<< {} >>"]))
def test_raw_iso_message_in_hex(pan, amount, stan, context):
    out, _ = redact_text(context.format(iso_message(pan, amount, stan)))
    assert_pan_hidden(out, pan)


@settings(max_examples=120, deadline=None)
@given(pan=distinct_pans(), data=st.data())
def test_pans_glued_to_other_digits(pan, data):
    shape = data.draw(st.sampled_from(["zeros", "expiry", "llvar", "zeros+expiry"]))
    zeros = "0" * data.draw(st.integers(1, 6))
    expiry = data.draw(st.sampled_from(["2512", "2701", "3012"])) + data.draw(st.text("0123456789", max_size=8))
    written = {
        "zeros": zeros + pan, "expiry": pan + expiry, "llvar": f"{len(pan):02d}" + pan, "zeros+expiry": zeros + pan + expiry,
    }[shape]
    out, counts = redact_text(data.draw(st.sampled_from(QUIET)).format(written))
    assert_pan_hidden(out, pan)
    assert counts["pan"] >= 1


@settings(max_examples=120, deadline=None)
@given(pan=distinct_pans(), data=st.data())
def test_masks_that_show_too_much_are_masked_again(pan, data):
    head = data.draw(st.integers(6, min(12, len(pan) - 5)))
    tail = data.draw(st.integers(4, max(4, len(pan) - head - 1)))
    shown = pan[:head] + data.draw(st.sampled_from("*X#")) * (len(pan) - head - tail) + pan[len(pan) - tail :]
    if len(pan) == 16 and data.draw(st.booleans()):
        shown = data.draw(st.sampled_from([" ", "-"])).join(shown[i : i + 4] for i in range(0, 16, 4))
    out, _ = redact_text(data.draw(st.sampled_from(QUIET)).format(shown))
    visible = re.sub(r"[ \-]", "", squeezed(out))
    found = re.search(r"[0-9][0-9*X#]{12,18}", visible)
    assert found, out
    assert not re.search(r"[0-9]", found[0][6:-4]), out


@st.composite
def tracks(draw) -> tuple[str, list[str]]:
    pan = draw(pans())
    if draw(st.booleans()):
        pan = pan[:6] + draw(st.sampled_from("*X#")) * (len(pan) - 10) + pan[-4:]
    disc = draw(st.text("0123456789", min_size=8, max_size=30))
    name = draw(st.from_regex(r"[A-Z]{2,40}/[A-Z]{2,40}( [A-Z. ]{0,30})?", fullmatch=True))
    if draw(st.booleans()):
        return f";{pan}=2512201{disc}?", [disc]
    return f"%B{pan}^{name}^2512201{disc}?", [disc, name]


@settings(max_examples=120, deadline=None)
@given(track=tracks(), context=st.sampled_from(["{}", "swipe {} ok", "track2={}", "track1: {}", "[{}]", "data={} end"]))
def test_tracks_with_masked_pan_lose_name_and_discretionary_data(track, context):
    text, secrets = track
    out, counts = redact_text(context.format(text))
    for secret in secrets:
        assert secret not in out, out
    assert out.count("[") - out.count("]") == context.count("[") - context.count("]"), out  # no stray bracket
    assert counts["track"] >= 1


PIN_WORDS = ["encrypted PIN data", "PINBLK", "密码密文", "PIN block", "epb", "EncryptedPinBlock", "pin_data"]
CVV_WORDS = ["security code", "CID", "安全码", "card verification value", "CVV2", "cvc", "Card Security Code"]
BETWEEN = [" ", ": ", "=", "：", " is ", '": "', " = "]


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_pin_blocks_and_security_codes_under_any_name(data):
    if data.draw(st.booleans()):
        word = data.draw(st.sampled_from(PIN_WORDS))
        value = data.draw(st.from_regex(r"[0-9A-F]{16}|[0-9A-F]{32}", fullmatch=True))
        if data.draw(st.booleans()):
            value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    else:
        word = data.draw(st.sampled_from(CVV_WORDS))
        value = data.draw(st.from_regex(r"[1-9][0-9]{2,3}", fullmatch=True))
    between = data.draw(st.sampled_from(BETWEEN))
    line = data.draw(st.sampled_from(["{}", "交易 {} 失败", "resp ok, {}, rc=00", '{{"{}"}}']))
    quoted = between == '": "'
    phrase = f'{word}{between}{value}' if not quoted else f'{word}{between}{value}'
    out, counts = redact_text(line.format(phrase))
    assert value not in out and value.replace(" ", "") not in out.replace(" ", ""), out
    assert sum(counts.values()) >= 1


@settings(max_examples=100, deadline=None)
@given(pan=pans(), data=st.data())
def test_pan_split_over_two_lines(pan, data):
    cut = data.draw(st.integers(4, len(pan) - 4))
    newline = data.draw(st.sampled_from(["\n", "\r\n", "\n    ", " \n\t"]))
    stamps = data.draw(st.lists(st.integers(0, 59), min_size=2, max_size=2))
    prefix = data.draw(st.sampled_from(["", "2026-11-30 08:14:{:02d}.123 I/pay[1203]: ", "response code=05 ", "[{:02d}] "]))
    first, second = prefix.format(stamps[0]), prefix.format(stamps[1])
    newline = newline.rstrip(" \t") if prefix else newline  # a log prefix starts the next line
    text = f"{first}card {pan[:cut]}{newline}{second}{pan[cut:]} approved\nnext line"
    out, counts = redact_text(text)
    assert pan not in re.sub(r"[^0-9]", "", out), out
    assert out.count("\n") == text.count("\n")
    assert sum(counts.values()) >= 1  # ("[35] ..." is also ISO field 35, dropped whole)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "gb18030", "utf-8"])
def test_every_log_encoding_is_redacted_on_its_decoded_text(encoding):
    text = "交易失败 card 4111 1111 1111 1111 cvv=123\nok ;5500005555555559=25121011234?\n"
    out, counts = redact_text(decode_log(text.encode(encoding)))
    assert "交易失败" in out and "4111111111111111" not in re.sub(r"[^0-9]", "", out)
    assert counts["pan"] == 1 and counts["track"] == 1 and counts["cvv"] == 1


def test_a_log_mixing_utf8_and_gb18030_lines_decodes_each_line():
    raw = "第一行 UTF-8 交易\n".encode() + "第二行 GBK 交易失败\n".encode("gb18030") + "third ok\n".encode()
    assert decode_log(raw) == "第一行 UTF-8 交易\n第二行 GBK 交易失败\nthird ok\n"


def test_cli_reads_utf16_logs(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes("刷卡 4111111111111111\n".encode("utf-16-le"))  # no BOM
    done = run_cli("redact", str(log))
    assert done.stdout == "刷卡 411111******1111\n", done.stdout


def test_decimal_amounts_are_not_pans():
    for text in ("amount 139401420914.30 CNY", "total 4111111111111.11", "sum 1,234,567,890,123.45"):
        assert redact_text(text)[0] == text


# --- Issue 21: the residue of the last round, generated ---------------------------------


@st.composite
def pan_in_groups(draw, pan: str) -> str:
    """`pan` the ways a person groups it: fours, 4-6-5, or random groups whose first has 3+
    digits, with a separator of one to three characters, the same throughout."""
    shape = draw(st.sampled_from(["fours", "amex", "random"]))
    if shape == "fours":
        pieces = [pan[i : i + 4] for i in range(0, len(pan), 4)]
    elif shape == "amex":
        pieces = [pan[:4], pan[4:10], pan[10:]]
    else:
        sizes = [draw(st.integers(3, 6))] + draw(st.lists(st.integers(2, 6), min_size=1, max_size=6))
        pieces, i = [], 0
        for size in sizes:
            if i < len(pan):
                pieces.append(pan[i : i + size])
                i += size
        if i < len(pan):
            pieces.append(pan[i:])
    if len(pieces[-1]) < 2:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    return draw(st.sampled_from([" ", "-", ".", "  ", "\t", " - "])).join(pieces)


@settings(max_examples=200, deadline=None)
@given(pan=pans(), data=st.data())
def test_tracks_with_a_grouped_pan_lose_name_and_discretionary_data(pan, data):
    if data.draw(st.booleans()):
        pan = pan[:6] + data.draw(st.sampled_from("*X#")) * (len(pan) - 10) + pan[-4:]
    written = data.draw(pan_in_groups(pan))
    disc = data.draw(st.from_regex(r"[0-9]{8,30}", fullmatch=True))
    name = data.draw(st.from_regex(r"[A-Z]{2,20}/[A-Z]{2,20}", fullmatch=True))
    kind = data.draw(st.sampled_from(["track1", "track2", "track2 hex"]))
    if kind == "track1":
        track, secrets = f"%B{written}^{name}^2512201{disc}?", [name, disc]
    elif kind == "track2":
        track, secrets = f";{written}=2512201{disc}?", [disc]
    else:
        track, secrets = f"{written}D2512201{disc}F", [disc]
    context = data.draw(st.sampled_from(["{}", "swipe {} ok", "track data: {}", "[{}]", "刷卡 {} 成功", "57 {}"]))
    out, counts = redact_text(context.format(track))
    for secret in secrets:
        assert secret not in out, out
    assert_pan_hidden(out, pan)
    assert counts["track"] >= 1, out


@settings(max_examples=200, deadline=None)
@given(pan=pans(), data=st.data())
def test_pan_split_over_a_backslash_continued_line(pan, data):
    written = pan if data.draw(st.booleans()) else " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    cut = data.draw(st.integers(1, len(written) - 1))
    if written[cut] == " ":  # between two groups: the writer's own spacing around the break
        continuation = data.draw(st.sampled_from([" \\\n", "\\\n", " \\\r\n", " \\\n    ", "-\\\n", "\\\n\t"]))
        text_pan = written[:cut] + continuation + written[cut + 1 :]
    else:  # inside a group (as a line-length limit cuts it)
        continuation = data.draw(st.sampled_from(["\\\n", "\\\r\n", "\\\n    ", "\\\n\t"]))
        text_pan = written[:cut] + continuation + written[cut:]
    context = data.draw(st.sampled_from(["card={} ok", 'export PAN="{}"', "pan: {}", "{}"]))
    text = context.format(text_pan) + "\nnext line 1234"
    out, counts = redact_text(text)
    assert_pan_hidden(out.replace("\\", ""), pan)
    assert out.count("\n") == text.count("\n") and out.endswith("\nnext line 1234"), out
    assert counts["pan"] >= 1


def b64_runs(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9+/_\-]{16,}={0,2}", text)


def decoded_everywhere(text: str, depth: int = 3) -> str:
    """`text` and the text of every base64 run in it, decoded (nested ones too)."""
    import base64
    import binascii

    found = [text]
    for run in b64_runs(text) if depth else []:
        body = run.rstrip("=")
        for alphabet in (b"+/", b"-_"):
            try:
                inner = base64.b64decode(body + "=" * (-len(body) % 4), altchars=alphabet).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            found.append(decoded_everywhere(inner, depth - 1))
    return "\n".join(found)


@st.composite
def base64_card_payloads(draw, pan: str) -> str:
    """Text holding `pan` (a JSON document, the digits alone, a log line), in base64 of either
    alphabet, padded or not, sometimes base64 of base64."""
    import base64

    written = draw(shaped(pan))
    key = draw(st.sampled_from(["pan", "cardNo", "data", "acct", "primaryAccountNumber"]))
    inner = draw(st.sampled_from([
        json.dumps({key: written, "amount": 1200}),
        json.dumps({"txn": {"id": 7, key: written}, "rc": "05"}, ensure_ascii=False),
        json.dumps([{key: int(pan)}]),
        written,
        pan,
        f"sale card {written} 交易失败",
    ]))  # fmt: skip
    encode = draw(st.sampled_from([base64.b64encode, base64.urlsafe_b64encode]))
    out = encode(inner.encode()).decode()
    if draw(st.booleans()):
        out = encode(out.encode()).decode()
    return out.rstrip("=") if draw(st.booleans()) else out


@settings(max_examples=250, deadline=None)
@given(pan=distinct_pans(), data=st.data())
def test_base64_of_text_with_a_pan_is_masked_inside(pan, data):
    payload = data.draw(base64_card_payloads(pan))
    context = data.draw(st.sampled_from(["{}", "payload={}", '{{"blob":"{}"}}', "resp body {} end", "<data>{}</data>"]))
    out, counts = redact_text(context.format(payload))
    assert_pan_hidden(decoded_everywhere(out), pan)
    assert counts["pan"] >= 1, out
    assert redact_text(out)[0] == out  # stable: the masked payload is still base64 of the masked text


@settings(max_examples=150, deadline=None)
@given(
    blob=st.binary(min_size=13, max_size=200),
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=13, max_size=80),
)
def test_base64_without_card_data_is_unchanged(blob, text):
    import base64

    assume(not any(redact_text(text)[1].values()))
    for encoded in (base64.b64encode(blob).decode(), base64.b64encode(text.encode()).decode()):
        assert redact_text(f"blob={encoded}")[0] == f"blob={encoded}"


PUBLIC_LABELS = ["mid", "tid", "merchant_id", "terminal id", "rrn", "stan", "trace", "trace_no", "batch", "amount", "amt", "F41"]


@settings(max_examples=200, deadline=None)
@given(pan=distinct_pans(), data=st.data())
def test_a_labelled_field_exempts_whole_label_names_only(pan, data):
    label = data.draw(st.sampled_from(PUBLIC_LABELS))
    label = data.draw(st.sampled_from([label, label.upper(), label.title()]))
    joiner = data.draw(st.sampled_from(["_", "-", ".", ""]))
    word = data.draw(st.sampled_from(["card", "pan", "acct", "user", "x", "Card", "primary", "1"]))
    composite = data.draw(st.sampled_from([word + joiner + label, label + joiner + word if joiner else label + word.title()]))
    between = data.draw(st.sampled_from(["=", ": ", '": "', "="]))
    written = data.draw(shaped(pan))
    out, _ = redact_text(f"{composite}{between}{written}")
    assert_pan_hidden(out, pan)
    kept, _ = redact_text(f"{label}{between}{pan}")  # the whole name: documented, kept
    assert kept == f"{label}{between}{pan}"


def test_the_compatibility_view_maps_every_code_point_as_the_full_table_did():
    """compat() asks the Unicode database per character seen (the resident agent must not map
    all of it); it gives what a table built over every code point gave."""
    import itertools

    from remote.redact import compat

    table = {}
    for cp in itertools.chain(range(0x80, 0x3400), range(0xF900, 0x10000), range(0x1D400, 0x1D800)):
        ch = chr(cp)
        norm = unicodedata.normalize("NFKC", ch)
        if len(norm) == 1 and norm != ch and norm.isascii():
            table[cp] = ord(norm)
        elif unicodedata.category(ch) == "Nd":
            table[cp] = 48 + unicodedata.decimal(ch)
    table.update({cp: 0x20 for cp in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF)})
    table[0xAD] = ord("-")
    assert len(table) > 1000
    for cp in range(0x80, 0x20000):
        assert compat(cp) == table.get(cp), hex(cp)
