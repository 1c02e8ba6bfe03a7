"""A real browser (headless Debian chromium via Selenium; the `browser` fixture is in
conftest.py): sign in, find a bundle by its code, open it, see the top cause, request probes
for its terminal. Once against the test server on SQLite and PostgreSQL, once against
`posdiag demo` itself (run on a pty, as from a terminal, and stopped with Ctrl-C).
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from server_bundles import PASSWORD, make_bundle

POSDIAG = Path(sys.executable).parent / "posdiag"


def walk(browser, base: str, user: str, password: str, code: str, terminal_id: str, shots: Path) -> str:
    """The support person's path through the pages; returns the top cause's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    shots.mkdir()
    browser.get(base + "/")
    assert "/login" in browser.current_url
    browser.find_element(By.ID, "name").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.save_screenshot(str(shots / "1-sign-in.png"))
    browser.find_element(By.ID, "sign-in").click()
    assert browser.find_element(By.ID, "failing-hours").is_displayed()  # home: the fleet today
    browser.save_screenshot(str(shots / "2-fleet.png"))

    browser.find_element(By.LINK_TEXT, "Bundles").click()
    browser.find_element(By.ID, "f-code").send_keys(code)
    browser.find_element(By.ID, "search").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains(f"code={code}"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.bundles tr")[1:]
    assert len(rows) == 1 and code in rows[0].text
    browser.save_screenshot(str(shots / "3-search.png"))

    rows[0].find_element(By.CSS_SELECTOR, "td a").click()
    assert browser.find_element(By.ID, "code").text == code
    top = browser.find_element(By.ID, "top-cause").text
    browser.save_screenshot(str(shots / "4-bundle.png"))

    browser.find_element(By.LINK_TEXT, terminal_id).click()
    browser.find_element(By.CSS_SELECTOR, "input[name=probe][value=printer]").click()
    browser.find_element(By.ID, "probe-code").send_keys(code)
    browser.find_element(By.ID, "request-probes").click()
    assert "queued" in browser.find_element(By.ID, "requested").text
    browser.save_screenshot(str(shots / "5-requested.png"))
    assert all((shots / f).stat().st_size > 1000 for f in ("1-sign-in.png", "4-bundle.png", "5-requested.png"))
    return top


def test_sign_in_find_open_and_request_probes(server, browser, tmp_path):
    tid, token = server.terminal("B")
    code = f"Z{uuid.uuid4().hex[:5]}"
    bundle_id, body = make_bundle(token, tid, code=code, cause="printer.paper_out", category="printer")
    assert server.upload(token, body, bundle_id).status_code == 201

    top = walk(browser, server.url, "technician", PASSWORD, code, tid, tmp_path / "screenshots")
    assert "Cause printer.paper_out" in top and "70%" in top and "Check the sensor" in top  # the technician's actions
    commands = server.get(f"/api/v1/terminals/{tid}/commands").json()
    assert [(c["probes"], c["code"], c["requested_by"], c["status"]) for c in commands] == [
        (["printer"], code, "technician", "queued")
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`posdiag demo` with its stdout on a pty: it prints the bundle page and a sign-in, then
    serves until Ctrl-C. Yields (url, user, password); the teardown checks the clean stop.
    Its stderr goes to a file and its pty is read to the end: a pipe or pty nobody reads
    fills (64 KiB) and blocks the demo's next write."""
    main, side = pty.openpty()
    err_path = tmp_path_factory.mktemp("demo") / "stderr"
    err_file = err_path.open("wb")
    # Ctrl-C's SIGINT as a terminal sends it, default-handled even where the suite's own runner
    # was started in the background (`cmd &` leaves SIGINT ignored in what it starts).
    undo_ignored_sigint = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", undo_ignored_sigint, str(POSDIAG), "demo", "--lang", "en"],
                            stdout=side, stderr=err_file, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(side)
    out = b""
    deadline = time.monotonic() + 90
    while not re.search(rb"sign in:\s+\S+ / \S+\r?\n", out):
        assert time.monotonic() < deadline and proc.poll() is None, out.decode(errors="replace")
        if select.select([main], [], [], 1)[0]:
            out += os.read(main, 65536)
    text = out.decode()
    url = re.search(r"bundle page: (\S+)", text).group(1)
    user, password = re.search(r"sign in:\s+(\S+) / (\S+)", text).groups()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if select.select([main], [], [], 0.2)[0]:
                try:
                    if not os.read(main, 65536):
                        return
                except OSError:  # the demo has exited and closed its side
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield url, user, password, text
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(90)  # a loaded 2-core machine (the dist build beside the tests) stops it slowly
        stop.set()
        reader.join(2)
        os.close(main)
        err_file.close()
        err = err_path.read_text(errors="replace")
    assert code == 0 and "stopped" in err and "Traceback" not in err, err[-4000:]


def test_demo_prints_a_working_page_and_sign_in(demo):
    url, user, password, text = demo
    assert "Error 3000 (terminal)" in text and "printer.paper_out" in text
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 303  # signed out: to /login
    bundle_id = url.rsplit("/", 1)[1]
    detail = requests.get(url.replace("/bundles/", "/api/v1/bundles/"), auth=(user, password), timeout=10).json()
    assert detail["record"]["id"] == bundle_id
    assert (detail["record"]["code"], detail["record"]["terminal_id"]) == ("3000", "DEMO-0001")
    assert detail["diagnosis"]["causes"][0]["id"] == detail["record"]["top_cause"]


def test_demo_bundle_in_a_browser(demo, browser, tmp_path):
    url, user, password, _ = demo
    base = url.split("/bundles/")[0]
    top_id = requests.get(url.replace("/bundles/", "/api/v1/bundles/"), auth=(user, password), timeout=10).json()[
        "record"
    ]["top_cause"]
    top = walk(browser, base, user, password, "3000", "DEMO-0001", tmp_path / "screenshots")
    assert top_id in top and "%" in top
    commands = requests.get(f"{base}/api/v1/terminals/DEMO-0001/commands", auth=(user, password), timeout=10).json()
    assert [(c["probes"], c["code"], c["status"]) for c in commands] == [(["printer"], "3000", "queued")]


def real_bundle(terminal_id: str, token: str, code: str, faults: str) -> tuple[str, bytes]:
    """A bundle the agent makes for `code` on the simulated terminal with `faults`."""
    from agent import bundle, config, pipeline
    from agent.diagnosis import diagnose
    from probes.contract import config_file
    from probes.emulators import SimulatedTerminal

    with SimulatedTerminal.from_spec(faults) as sim:
        overrides = config_file.merge(sim.overrides, {"terminal": {"id": terminal_id, "model": "A920", "firmware": "2.1"}, "upload": {"token": token}})
        conf = config.load(overrides=overrides)
        doc = diagnose(conf, code).to_dict()
    built = pipeline.build_for(conf, doc, bundle.Trigger("error", code, None, None, 1), history=[])
    return built.bundle_id, built.data


def test_the_bundle_page_in_chinese_and_in_english(server, browser, tmp_path):
    """What support reads first, in each language, from a real diagnosis; screenshots are kept
    in bench/out/pages/ to look at."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    from remote.server import store

    reader = f"reader-{uuid.uuid4().hex[:8]}"  # its own user: the language it chooses is remembered
    store.add_user(server.service.engine, reader, "support", PASSWORD)
    tid, token = server.terminal("L")
    bundle_id, body = real_bundle(tid, token, "3000", "printer.paper_out")
    assert server.upload(token, body, bundle_id).status_code == 201
    shots = Path(__file__).resolve().parents[2] / "bench" / "out" / "pages"
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(server.url + f"/bundles/{bundle_id}")
    browser.find_element(By.ID, "name").send_keys(reader)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    seen = {}
    for lang, button in (("zh", "lang-zh"), ("en", "lang-en")):
        browser.find_element(By.ID, button).click()
        WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda b, lang=lang: b.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
        )
        seen[lang] = browser.find_element(By.TAG_NAME, "main").text
        browser.save_screenshot(str(shots / f"bundle-{lang}.png"))
    assert "派单" in seen["zh"] and "打印纸" in seen["zh"] and "Dispatch" not in seen["zh"]
    assert "Dispatch" in seen["en"] and "paper" in seen["en"] and "派单" not in seen["en"]
    # times were turned into the browser's zone by the page's own script, UTC kept on hover
    stamp = browser.find_element(By.CSS_SELECTOR, "time[datetime]")
    assert "UTC" not in stamp.text and stamp.get_attribute("title").endswith(" UTC")


def test_triage_home_and_an_incident_in_both_languages(server, browser):
    """A support lead's morning: the home page shows the outage going on, its page tells
    what happened to whom; acknowledge, a note, then "not an outage", in Chinese and in
    English. Screenshots are kept in bench/out/pages/."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    from test_server_incident_actions import outage

    from remote.server import store

    lead = f"lead-{uuid.uuid4().hex[:8]}"
    store.add_user(server.service.engine, lead, "support", PASSWORD)
    scope = f"T{uuid.uuid4().hex[:6]}"
    incident, held = outage(server, scope, {"acquirer": scope, "region": "east"})
    shots = Path(__file__).resolve().parents[2] / "bench" / "out" / "pages"
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))

    def shows(element_id: str, text: str) -> None:
        """Waits for the text: an action reloads the page, so an element found just after the
        click may belong to the page being left."""
        wait.until(lambda b: text in b.find_element(By.ID, element_id).text)

    def in_language(lang: str) -> None:
        browser.find_element(By.ID, f"lang-{lang}").click()
        wait.until(lambda b: b.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang)

    browser.get(server.url + "/")
    browser.find_element(By.ID, "name").send_keys(lead)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    in_language("zh")
    row = browser.find_element(By.ID, f"open-{incident}")
    assert f"acquirer={scope}" in row.text and str(len(held)) in row.text
    assert "今日机群" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_element(By.ID, "failing-hours").is_displayed()
    browser.save_screenshot(str(shots / "home-zh.png"))

    row.find_element(By.LINK_TEXT, f"acquirer={scope}, region=east").click()
    shows("incident-summary", scope)
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "受影响终端" in main and "暂缓派单的诊断包" in main and "Terminals affected" not in main
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline rect.slot")) >= 5  # from 40 min before it began to now
    assert {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#affected td:first-child a")} == {f"{scope}-{i}" for i in range(7)}
    browser.find_element(By.ID, "act-ack").click()
    shows("done", "已确认")
    browser.find_element(By.ID, "note-text").send_keys("主机侧已在处理")
    browser.find_element(By.ID, "act-note").click()
    shows("actions", "主机侧已在处理")
    browser.save_screenshot(str(shots / "incident-zh.png"))
    browser.find_element(By.LINK_TEXT, "问题").click()  # the header's Problems
    shows("kind-tabs", "业务与发卡行结果")
    browser.save_screenshot(str(shots / "problems-zh.png"))
    browser.back()

    in_language("en")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "Terminals affected" in main and "受影响终端" not in main and f"acknowledged by {lead}" in main
    browser.find_element(By.ID, "act-dismiss").click()
    shows("incident-summary", "not an outage")
    assert browser.find_elements(By.ID, "act-dismiss") == []
    browser.save_screenshot(str(shots / "incident-en.png"))
    browser.get(server.url + "/")
    assert browser.find_elements(By.ID, f"open-{incident}") == []
    browser.save_screenshot(str(shots / "home-en.png"))
    record = server.get(f"/api/v1/incidents/{incident}").json()
    assert [(a["action"], a["by"]) for a in record["actions"]] == [("acknowledged", lead), ("note", lead), ("dismissed", lead)]


def test_every_page_in_chromium_in_both_languages(server, browser):
    """Every page the routers serve, drawn by Chromium in 中文 and in English with an outage on
    it: it answers, has its heading, and in 中文 shows no English word but names, units, code
    and what the terminals sent (the scan of test_server_home, on the rendered text).
    Screenshots in bench/out/pages/all/."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    from test_server_home import SENT, english_words, every_page
    from test_server_incident_actions import outage

    import probes

    scope = f"P{uuid.uuid4().hex[:6]}"
    incident, held = outage(server, scope, {"acquirer": scope, "region": "east"})
    problem = server.get("/api/v1/problems").json()["items"][0]["id"]
    values = {"{incident_id}": incident, "{bundle_id}": held[0], "{terminal_id}": f"{scope}-0", "{problem_id}": problem}
    shots = Path(__file__).resolve().parents[2] / "bench" / "out" / "pages" / "all"
    shots.mkdir(parents=True, exist_ok=True)
    # names: probes, users, the config section [server], this test's scope, the carrier the
    # simulated modem reports (CHINA MOBILE) and its link as the labels it sent, and SENT
    names = set(probes.probe_modules()) | {"admin", "support", "technician", "server", scope.lower(), "china", "mobile", "carrier", "link", "cellular"} | SENT
    # machine text and data: code, the log, links named by an id (terminals, bundles), labels
    shown_text = """const page = document.body.cloneNode(true);
        page.querySelectorAll('code, script, style, pre, .labels, a[href^="/terminals/"], a[href^="/bundles/"]').forEach(e => e.remove());
        return page.textContent;"""

    browser.get(server.url + "/login")
    browser.find_element(By.ID, "name").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))  # a click that reloads the page
    wait.until(lambda b: "/login" not in b.current_url)
    for lang in ("zh", "en"):
        browser.find_element(By.ID, f"lang-{lang}").click()
        wait.until(lambda b: b.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang)
        for route in every_page():
            path = route
            for name, value in values.items():
                path = path.replace(name, value)
            if path == "/login":
                continue  # signed in, it leads on; its words are checked signed out in test_server_home
            browser.get(server.url + path)
            assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang, path
            assert browser.find_element(By.TAG_NAME, "h1").text.strip(), path
            file = route.strip("/").replace("/", "-").replace("{", "").replace("}", "") or "home"
            browser.save_screenshot(str(shots / f"{file}-{lang}.png"))
            if lang == "zh":
                text = browser.execute_script(shown_text)
                english = english_words(text)
                stray = {w for w in english if w.lower() not in names}
                assert not stray, f"{path}: " + "; ".join(text[max(0, text.find(w) - 60) : text.find(w) + 60].replace("\n", " ") for w in sorted(stray))
