"""No card data in any line the support server writes, nor in its answers (issue 8).

A real `posdiag-support serve --access-log` (stdout: access log, stderr: the rest) takes
bundles whose logs, model and firmware carry PANs and track data, refusals whose manifests
do, and searches, pages and bad requests whose URLs carry PANs (plain, spaced, dashed,
percent-encoded). Then its stdout and stderr are searched (the access lines must be there,
with the PANs masked), and so are its answers: refusals, search results, bundle details and
pages. (The download is the bundle as the terminal signed it, and is not searched.)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import quote

import requests
from server_kit import PASSWORD, Serve, make_bundle, prepare, rebuild, signed_in, start_server
from test_card_data_never_logged import CARD_LINES, PANS, leaks

QUERY_PANS = ["4111111111111111", "4111 1111 1111 1111", "5500-0055-5555-5559", "6222021234567890128"]


def test_server_output_and_error_answers_carry_no_card_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'posdiag-support.db'}"
    tokens = prepare(url, ["CARD-1"])
    token = tokens["CARD-1"]
    server = Serve(url, data, tmp_path / "logs", access_log=True)
    answers: list[str] = []
    server.start()
    try:
        base = server.url
        for i, line in enumerate(CARD_LINES):
            bundle_id, body = make_bundle(token, "CARD-1", log_text=line + "\n", model=PANS[i % 4], firmware=PANS[(i + 1) % 4])
            assert requests.post(
                base + "/api/v1/bundles", data=body, timeout=30,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": bundle_id},
            ).status_code == 201  # fmt: skip
        _, good = make_bundle(token, "CARD-1")
        for field in ({"created_at": PANS[0]}, {"bundle_id": PANS[1]}, {"agent_version": PANS[2] * 5}, {"schema": PANS[3]}):
            refused = requests.post(
                base + "/api/v1/bundles", data=rebuild(token, good, manifest=field), timeout=30,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            assert refused.status_code == 422, (field, refused.status_code)
            answers.append(refused.text)
        auth = ("support", PASSWORD)
        paths = []
        for pan in QUERY_PANS:
            for name in ("model", "terminal", "code", "firmware", "cause", "cursor", "since"):
                paths.append(f"/api/v1/bundles?{name}={quote(pan)}")
                paths.append(f"/api/v1/bundles?{name}={quote_plus_form(pan)}")
            paths += [f"/api/v1/bundles/{quote(pan)}", f"/api/v1/terminals/{quote(pan)}/commands", f"/nowhere/{quote(pan)}"]
            # The sign-in redirect's next= carries the page's query encoded once more; and thrice.
            paths += [f"/bundles?model={quote(pan)}", f"/login?next={quote(quote(quote('/bundles?model=' + pan)))}"]
        for path in paths:
            answer = requests.get(base + path, auth=auth, timeout=30)  # pages redirect to /login?next=...
            assert answer.status_code < 500, (path, answer.status_code)
            answers.append(answer.text)
        session = signed_in(base, "support")
        for pan in QUERY_PANS:
            page = session.get(f"{base}/bundles", params={"model": pan, "since": pan}, timeout=30)
            assert page.status_code == 200
        listed = requests.get(base + "/api/v1/bundles?terminal=CARD-1", auth=auth, timeout=30).json()["items"]
        assert len(listed) == len(CARD_LINES)
        answers.append(json.dumps(listed))
        for item in listed:
            detail = requests.get(f"{base}/api/v1/bundles/{item['id']}", auth=auth, timeout=30)
            answers.append(detail.text)
            answers.append(session.get(f"{base}/bundles/{item['id']}", timeout=30).text)
    finally:
        server.stop()
    out = server.output()
    assert out.count('"GET /api/v1/bundles?') >= len(QUERY_PANS) * 14, out[:2000]
    assert "411111******1111" in out  # the searches were logged, masked
    assert '"GET /login?next=' in out  # ... and the sign-in redirects, decoded and masked
    assert leaks(out) == [], [line for line in out.splitlines() if leaks(line)][:5]
    for text in answers:
        assert leaks(text) == [], [line for line in text.splitlines() if leaks(line)][:3] or text[:300]


def quote_plus_form(text: str) -> str:
    """As an HTML form sends it: spaces as '+'."""
    from urllib.parse import quote_plus

    return quote_plus(text)


RESIDUE = [  # issue 21: what the last round let through, as an older or hostile agent would send it
    "swipe %B4111 1111 1111 1111^DOE/JOHN^25121011234567890000?",
    "swipe ;5500-0055-5555-5559=25121011234567890?",
    "export PAN=41111111\\\n11111111",
    "pan: 4111 1111 \\\n1111 1111 end",
    "body " + base64.b64encode(json.dumps({"pan": "4111111111111111", "amount": 1200}).encode()).decode(),
    "blob " + base64.urlsafe_b64encode(b"5500005555555559").decode().rstrip("="),
    "twice " + base64.b64encode(base64.b64encode(b'{"card": "6222021234567890128"}')).decode(),
    "card_trace=4111111111111111 pan-rrn: 5500005555555559",
]


def decoded(text: str, depth: int = 3) -> str:
    """`text` with every base64 run in it decoded (nested too) and continued lines joined."""
    found = [text.replace("\\\n", "")]
    for run in re.findall(r"[A-Za-z0-9+/_\-]{16,}={0,2}", text) if depth else []:
        body = run.rstrip("=")
        for alphabet in (b"+/", b"-_"):
            try:
                inner = base64.b64decode(body + "=" * (-len(body) % 4), altchars=alphabet).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            found.append(decoded(inner, depth - 1))
    return "\n".join(found)


def test_the_residue_of_the_last_round_reaches_no_answer(tmp_path):
    """Logs carrying the shapes issue 21 found (a track with a grouped PAN, a PAN over a
    backslash-continued line, base64 of JSON or digits, a label inside a longer key) uploaded
    unredacted: the bundle record, its detail and its page show none of it, decoded or not."""
    url = f"sqlite:///{tmp_path / 'support.db'}"
    running = start_server(url, tmp_path / "data", "sqlite")
    server = next(running)
    try:
        tid, token = server.terminal("CARD")
        answers = []
        for line in RESIDUE:
            bundle_id, body = make_bundle(token, tid, log_text=line + "\n")
            assert server.upload(token, body, bundle_id).status_code == 201
            answers.append(server.get(f"/api/v1/bundles/{bundle_id}").text)
            answers.append(signed_in(server.url, "support").get(f"{server.url}/bundles/{bundle_id}", timeout=30).text)
    finally:
        running.close()
    for text in answers:
        assert leaks(decoded(text)) == [], [line for line in decoded(text).splitlines() if leaks(line)][:3]
