"""The web console (core.console) in a real headless Chromium: health follows the upstream, reasons and escaped
payloads show, and nothing a record holds can run as script."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.supervisor import Supervisor
from tests.core.test_api import SCRIPT, api_config, bad_observation, base, wait_for
from tools.servers.fhir import Faults, FhirTestServer
from tools.services import CHROMEDRIVER, CHROMIUM, ensure_chromium

PAGE_LOAD_SECONDS = 60


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """A headless Chromium (installed by ``python -m tools.services install-chromium``); quit in teardown. A
    Chromium that cannot start fails the test: it is a required service, never a skip."""
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
        yield driver
    finally:
        driver.quit()


def _health(driver: webdriver.Chrome, url: str, key: str) -> str:
    driver.get(url)
    return str(driver.find_element(By.CSS_SELECTOR, f'tr[data-key="{key}"] td.health').text)


async def _until_health(driver: webdriver.Chrome, url: str, key: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(_health, driver, url, key)
        if seen == wanted:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the console kept showing {key} as {seen!r}, not {wanted!r}, for {timeout} s")


async def test_the_console_follows_health_shows_reasons_and_escapes_payloads(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    browser: webdriver.Chrome,
) -> None:
    resources = generate_observations(60, seed=21)
    resources.append(bad_observation(resources[1], "bad-script"))
    customer = f"console{uuid.uuid4().hex[:6]}"
    key = f"{customer}/observations"
    with FhirTestServer(resources) as server:
        root = api_config(
            tmp_path,
            base_url=server.base_url,
            customer=customer,
            poll_interval_seconds=0.3,
            http={"max_attempts": 1},
        )
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        stats = supervisor.stats[key]
        await wait_for(lambda: stats.totals.dlq.total() == 1 and stats.healthy, 60, "the first pass")
        overview = f"{base(supervisor)}/console"
        await _until_health(browser, overview, key, "healthy", 60)

        # The upstream starts failing: the integration turns unhealthy, with its error; then it recovers.
        server.faults = Faults(fail_rate=1.0, status=503, retry_after=None)
        await _until_health(browser, overview, key, "unhealthy", 90)
        readiness = await asyncio.to_thread(lambda: browser.find_element(By.ID, "readiness").text)
        assert readiness == "Not ready"
        error = await asyncio.to_thread(
            lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{key}"] td.error').text
        )
        assert "503" in error or "UpstreamError" in error, error
        server.faults = Faults()
        await _until_health(browser, overview, key, "healthy", 90)

        # One integration's page: the reason of the bad record, and its payload as text, never as markup.
        def detail() -> tuple[str, list[str], list[str], int]:
            browser.get(f"{base(supervisor)}/console/{customer}/observations")
            reasons = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#dlq-reasons td.reason")]
            payloads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#recent-dlq pre.payload")]
            scripts = len(browser.find_elements(By.TAG_NAME, "script"))
            return browser.title, reasons, payloads, scripts

        title, reasons, payloads, scripts = await asyncio.to_thread(detail)
        assert title == f"inlet: {key}"
        assert len(reasons) == 1 and "does not satisfy its contract" in reasons[0] and "code" in reasons[0]
        assert payloads and SCRIPT in payloads[0], payloads
        assert scripts == 0, "markup from a record became a script element"
        assert await asyncio.to_thread(lambda: browser.execute_script("return document.scripts.length")) == 0
        shot = tmp_path / "console-integration.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(shot))
        print(f"console screenshot: {shot}")
