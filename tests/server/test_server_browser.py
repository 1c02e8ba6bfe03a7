"""A real browser (headless Debian chromium via Selenium) against the real server: sign in,
find a bundle by its code, open it, see the top cause, request probes for its terminal.
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from server_bundles import PASSWORD, make_bundle

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture()
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"chromium or chromedriver not installed ({CHROMIUM}, {CHROMEDRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def test_sign_in_find_open_and_request_probes(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    tid, token = server.terminal("B")
    code = f"Z{uuid.uuid4().hex[:5]}"
    bundle_id, body = make_bundle(token, tid, code=code, cause="printer.paper_out", category="printer")
    assert server.upload(token, body, bundle_id).status_code == 201
    shots = tmp_path / "screenshots"
    shots.mkdir()

    browser.get(server.url + "/")
    assert "/login" in browser.current_url
    browser.find_element(By.ID, "name").send_keys("technician")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.save_screenshot(str(shots / "1-sign-in.png"))
    browser.find_element(By.ID, "sign-in").click()
    assert browser.find_element(By.ID, "chart").is_displayed()
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
    assert "Cause printer.paper_out" in top and "70%" in top and "Load paper" in top
    browser.save_screenshot(str(shots / "4-bundle.png"))

    browser.find_element(By.LINK_TEXT, tid).click()
    browser.find_element(By.CSS_SELECTOR, "input[name=probe][value=printer]").click()
    browser.find_element(By.ID, "probe-code").send_keys(code)
    browser.find_element(By.ID, "request-probes").click()
    assert "queued" in browser.find_element(By.ID, "requested").text
    browser.save_screenshot(str(shots / "5-requested.png"))

    commands = server.get(f"/api/v1/terminals/{tid}/commands").json()
    assert [(c["probes"], c["code"], c["requested_by"], c["status"]) for c in commands] == [
        (["printer"], code, "technician", "queued")
    ]
    assert all((shots / name).stat().st_size > 1000 for name in ("1-sign-in.png", "4-bundle.png", "5-requested.png"))
