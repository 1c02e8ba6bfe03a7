"""A real support server (uvicorn on a loopback port) on {SQLite + blob directory,
PostgreSQL + blob directory, PostgreSQL + SeaweedFS S3}.

Each test session gets a fresh SQLite file, a freshly created PostgreSQL database
(dropped afterwards) and a fresh bucket on a SeaweedFS started for the session; PostgreSQL
tests are skipped only when nothing answers on 127.0.0.1:5432, S3 ones only when SeaweedFS
cannot start.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS, running_seaweedfs, unavailable
from server_harness import RunningServer, browser_env, default_settings, fresh_pg_database, start_server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS S3 gateway for the session; skipped (with why) only if it cannot start."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    try:
        with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as weed:
            yield weed
    except RuntimeError as exc:
        pytest.skip(f"SeaweedFS did not start: {exc}")


def s3_settings(weed: SeaweedFS):
    """Server settings storing blobs under a fresh prefix on `weed`, credentials in the config."""
    settings = default_settings()
    blobs = dataclasses.replace(
        settings.blobs, url=weed.s3_url(), endpoint_url=weed.endpoint, region="us-east-1",
        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
    )  # fmt: skip
    return dataclasses.replace(settings, blobs=blobs)


# Each backend: (database, blob store). The server suite runs on each, except that the
# S3 variant leaves out the modules that never read or write a blob through the API under
# test (agent protocol, browser, auth, commands, OpenAPI): `make test` stays under 10 min.
BACKENDS = ["sqlite", "postgresql", "postgresql+s3"]
S3_LEFT_OUT = {"test_server_agent", "test_server_admin", "test_server_admin_browser", "test_server_browser", "test_server_auth", "test_server_commands", "test_server_openapi", "test_server_outcomes", "test_server_learning", "test_server_visit", "test_outcome_format_doc", "test_outcome_pages", "test_outcome_pages_browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = [
        item for item in items
        if getattr(item, "callspec", None) is not None
        and item.callspec.params.get("server") == "postgresql+s3"
        and item.module.__name__ in S3_LEFT_OUT
    ]  # fmt: skip
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Each time it is made, on a fresh database: under pytest-xdist a worker runs its files in
    the order given, not grouped by backend, so a backend's server may be made more than once."""
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        yield from start_server(f"sqlite:///{tmp / 'support.db'}", tmp / "data", "sqlite")
        return
    settings = s3_settings(request.getfixturevalue("seaweedfs")) if request.param == "postgresql+s3" else None
    with fresh_pg_database() as url:
        yield from start_server(url, tmp / "data", "postgresql", settings)


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
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, env=browser_env()), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
