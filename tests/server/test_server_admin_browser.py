"""The administration pages in a real browser (headless Chromium; the `browser` fixture is in
conftest.py), in Chinese and in English: an admin adds a user, enrols a terminal and copies
its token and snippet, revokes it, reads the settings and finds it all in the audit log.
Screenshots are kept in bench/out/pages/ (admin-*.png) to look at."""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

import pytest
from server_bundles import PASSWORD, make_bundle

from remote.server import store

SHOTS = Path(__file__).resolve().parents[2] / "bench" / "out" / "pages"
WORDS = {
    "zh": {"nav": "管理", "users": "用户", "terminals": "终端登记", "settings": "设置", "audit": "审计日志",
           "added": "已添加用户", "revoked": "令牌已吊销", "enrolled": "登记终端", "masked_note": "密钥已隐藏"},
    "en": {"nav": "Admin", "users": "Users", "terminals": "Enrolment", "settings": "Settings", "audit": "Audit log",
           "added": "added", "revoked": "token revoked", "enrolled": "terminal enrolled", "masked_note": "Secrets are masked"},
}  # fmt: skip


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_an_admin_administers_from_the_browser(server, browser, lang):
    from selenium.webdriver.common.by import By

    said = WORDS[lang]
    admin = f"boss-{lang}-{uuid.uuid4().hex[:6]}"
    store.add_user(server.service.engine, admin, "admin", PASSWORD)
    store.set_user_lang(server.service.engine, admin, lang)
    SHOTS.mkdir(parents=True, exist_ok=True)

    browser.get(server.url + "/")
    browser.find_element(By.ID, "name").send_keys(admin)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    nav = browser.find_element(By.ID, "nav-users")
    assert nav.text == said["nav"]
    nav.click()

    newcomer = f"clerk-{uuid.uuid4().hex[:6]}"  # users: add one
    browser.find_element(By.ID, "new-name").send_keys(newcomer)
    browser.find_element(By.ID, "new-password").send_keys("clerk passphrase")
    browser.find_element(By.ID, "add").click()
    assert said["added"] in browser.find_element(By.ID, "done").text
    assert newcomer in browser.find_element(By.ID, "users").text
    browser.save_screenshot(str(SHOTS / f"admin-users-{lang}.png"))

    tab(browser, "/enrolment", said["terminals"]).click()  # enrol a terminal
    tid = f"WB-{uuid.uuid4().hex[:8]}"
    browser.find_element(By.ID, "enrol-id").send_keys(tid)
    browser.find_element(By.ID, "enrol-submit").click()
    token = browser.find_element(By.ID, "token").text
    snippet = tomllib.loads(browser.find_element(By.ID, "snippet").text)
    assert snippet == {"terminal": {"id": tid}, "upload": {"server_url": server.url, "token": token}}
    browser.save_screenshot(str(SHOTS / f"admin-enrolled-{lang}.png"))
    assert server.upload(token, *reversed(make_bundle(token, tid))).status_code == 201  # the pasted config works

    browser.get(server.url + f"/enrolment?q={tid}")  # revoke it
    browser.find_element(By.CSS_SELECTOR, "button.revoke").click()
    assert said["revoked"] in browser.find_element(By.ID, "done").text
    assert server.upload(token, *reversed(make_bundle(token, tid))).status_code == 401
    browser.save_screenshot(str(SHOTS / f"admin-enrolment-{lang}.png"))

    tab(browser, "/settings", said["settings"]).click()
    assert said["masked_note"] in browser.find_element(By.TAG_NAME, "main").text
    assert "server.session_hours" in browser.find_element(By.ID, "settings").text
    browser.save_screenshot(str(SHOTS / f"admin-settings-{lang}.png"))

    tab(browser, "/audit", said["audit"]).click()
    log = browser.find_element(By.ID, "audit").text
    assert tid in log and newcomer in log and said["enrolled"] in log
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
    browser.save_screenshot(str(SHOTS / f"admin-audit-{lang}.png"))


def tab(browser, href: str, text: str):
    """An admin page's tab, which reads `text` in the page's language."""
    from selenium.webdriver.common.by import By

    found = browser.find_element(By.CSS_SELECTOR, f'#admin-tabs a[href="{href}"]')
    assert found.text == text
    return found
