"""Property-based checks of the server's own card-data and name rules (issue 12).

- The access log: a PAN in a query, with any separator the form or a redirect writes
  (space, `+`, `-`, `%20`), percent-encoded any number of times up to four (the sign-in
  redirect's `next=` adds one), never reaches the log line.
- Member names: any name holding a control, bidi or other format character, or a drive
  letter at the start of a component, is refused before it is stored.
"""

from __future__ import annotations

import tarfile
import unicodedata
from urllib.parse import quote, quote_plus, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_card_data_never_logged import PANS, leaks

from remote.server.ingest import IngestError, _safe_name
from remote.server.logs import redacted_path


@st.composite
def spaced_pan(draw: st.DrawFn) -> str:
    pan = draw(st.sampled_from(PANS))
    sep = draw(st.sampled_from([" ", "-", "+", "%20", ""]))
    step = draw(st.sampled_from([4, 4, 5, 6]))
    return sep.join(pan[i : i + step] for i in range(0, len(pan), step))


@settings(max_examples=300, deadline=None)
@given(
    pan=spaced_pan(),
    key=st.sampled_from(["model", "q", "next", "firmware"]),
    encodings=st.lists(st.sampled_from([quote, quote_plus]), max_size=4),
    page=st.sampled_from(["/bundles", "/api/v1/bundles", "/login"]),
)
def test_no_encoding_depth_hides_a_pan_from_the_access_log(pan, key, encodings, page):
    value = pan
    for encode in encodings:
        value = encode(value, safe="") if encode is quote else encode(value)
    logged = redacted_path(f"{page}?{key}={value}")
    assert leaks(fully_decoded(logged)) == [], logged


def fully_decoded(text: str) -> str:
    """What anyone reading the log can recover from a line: decoded until it stops changing."""
    while (decoded := unquote_plus(text)) != text:
        text = decoded
    return text


FORBIDDEN = [c for c in map(chr, range(0x3000)) if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


def member(name: str) -> tarfile.TarInfo:
    """A regular-file member as tarfile hands it over after reading (pax names are UTF-8)."""
    return tarfile.TarInfo(name)


@settings(max_examples=300, deadline=None)
@given(
    head=st.text(alphabet="abcxyz._-", min_size=1, max_size=8),
    bad=st.sampled_from(FORBIDDEN),
    tail=st.text(alphabet="abcxyz._-", max_size=8),
)
def test_names_with_control_or_bidi_characters_are_refused(head, bad, tail):
    with pytest.raises(IngestError) as refused:
        _safe_name(member(f"logs/{head}{bad}{tail}.log"))
    assert refused.value.status == 400


@settings(max_examples=200, deadline=None)
@given(
    drive=st.sampled_from("ACZacz"),
    before=st.sampled_from(["", "logs/", "logs/x/"]),
    rest=st.text(alphabet="abc/._", min_size=1, max_size=10).filter(lambda r: not r.startswith("/")),
)
def test_names_with_a_drive_letter_are_refused(drive, before, rest):
    with pytest.raises(IngestError):
        _safe_name(member(f"{before}{drive}:{rest}"))
