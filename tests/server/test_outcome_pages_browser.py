"""A real browser (headless chromium, the `browser` fixture of conftest.py) records a visit
outcome on the bundle page and finds it counted on /outcomes, in English, then in Chinese.
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import uuid

from outcome_bundles import uploaded
from server_bundles import PASSWORD

from remote.server import store


def test_a_technician_records_an_outcome_and_sees_it_measured(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def after(click_id: str, condition) -> None:
        """Click, then wait for the next page: the old one's elements answer until it comes."""
        browser.find_element(By.ID, click_id).click()
        WebDriverWait(browser, 15).until(condition)

    shots = tmp_path / "screenshots"
    shots.mkdir()
    model = f"BR-{uuid.uuid4().hex[:6]}"
    tid, token = server.terminal("OB")
    bid = uploaded(server, token, tid, ["printer.mechanism_fault", "printer.not_connected"], model=model)

    browser.get(f"{server.url}/bundles/{bid}")
    name = f"tech-{uuid.uuid4().hex[:8]}"  # its own user: the language it chooses is remembered for it
    store.add_user(server.service.engine, name, "technician", PASSWORD)
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    assert browser.find_element(By.ID, "outcome-current").text == "No visit outcome recorded yet."
    Select(browser.find_element(By.ID, "outcome-found")).select_by_value("printer.not_connected")
    Select(browser.find_element(By.ID, "outcome-fixed")).select_by_value("true")
    browser.find_element(By.ID, "outcome-note").send_keys("driver restarted")
    browser.save_screenshot(str(shots / "1-form.png"))
    after("record-outcome", expected_conditions.url_contains("#outcome"))
    current = browser.find_element(By.ID, "outcome-current").text
    assert "printer disconnected or not responding" in current and "fixed" in current and "driver restarted" in current
    assert browser.current_url.endswith(f"/bundles/{bid}#outcome")
    browser.save_screenshot(str(shots / "2-recorded.png"))

    after("nav-outcomes", expected_conditions.url_contains("/outcomes"))
    Select(browser.find_element(By.ID, "o-by")).select_by_value("model")
    browser.find_element(By.ID, "o-model").send_keys(model)
    after("o-show", expected_conditions.url_contains(f"model={model}"))
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#measures tr.group") if model in r.text)
    assert row.find_element(By.CSS_SELECTOR, "td[data-measure=found_in_top3]").text == "100% (1)"
    assert row.find_element(By.CSS_SELECTOR, "td[data-measure=found_as_predicted]").text == "0% (0)"
    browser.save_screenshot(str(shots / "3-measures.png"))

    after("lang-zh", expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "上门结果"))
    assert "首次修复" in browser.find_element(By.ID, "measures").text
    browser.save_screenshot(str(shots / "4-zh.png"))
    assert all((shots / f).stat().st_size > 1000 for f in ("1-form.png", "2-recorded.png", "3-measures.png"))
