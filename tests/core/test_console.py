"""The web console (core.console) in a real headless Chromium: health follows the upstream, reasons and escaped
payloads show, data alerts and the monitors' baselines show, and nothing a record holds can run as script."""

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
from inlet.contracts.clinical_observation import ObservationV1
from inlet.core import console, status
from inlet.core.config import MonitorSettings, load_config
from inlet.core.monitors import Monitors
from inlet.core.supervisor import Supervisor
from tests.core.test_api import SCRIPT, api_config, bad_observation, base, wait_for
from tests.core.test_monitors_api import MARKUP, monitored_config, silence_opened, upstream
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


def _texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    return [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def _scripts(driver: webdriver.Chrome) -> int:
    """Script elements on the page, counted twice over (the DOM query and the document's own list)."""
    found = len(driver.find_elements(By.TAG_NAME, "script"))
    return found + int(driver.execute_script("return document.scripts.length"))


async def test_the_console_shows_open_data_alerts_and_upstream_series_as_text(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    browser: webdriver.Chrome,
) -> None:
    customer = f"dq{uuid.uuid4().hex[:6]}"
    key, off = f"{customer}/observations", f"{customer}/unwatched"
    with FhirTestServer(upstream(seed=41)) as server:
        root = monitored_config(tmp_path, base_url=server.base_url, customer=customer)
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        await silence_opened(supervisor, key)
        url = base(supervisor)

        def overview() -> tuple[str, str, list[str], int]:
            browser.get(f"{url}/console")
            count = browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{key}"] td.data-alerts').text
            none = browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{off}"] td.data-alerts').text
            return str(count), str(none), _texts(browser, "#data-alerts tr.data-alert td.check"), _scripts(browser)

        def page(which: str) -> dict[str, Any]:
            browser.get(f"{url}/console/{which}")
            return {
                "checks": _texts(browser, "#data-alerts td.check"),
                "details": _texts(browser, "#data-alerts td.detail"),
                "series": _texts(browser, "#monitor-numeric td.series"),
                "fields": _texts(browser, "#monitor-shares td:nth-child(3)"),
                "off": _texts(browser, "#no-monitors"),
                "scripts": _scripts(browser),
            }

        count, none, checks, scripts = await asyncio.to_thread(overview)
        watched = await asyncio.to_thread(page, key)
        unwatched = await asyncio.to_thread(page, off)
        shot = tmp_path / "console-data-quality.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(shot))

    assert (count, none, checks, scripts) == ("1", "0", ["silence"], 0)
    assert watched["checks"] == ["silence"] and watched["details"][0].startswith("no events for")
    # The series named after upstream codes: shown as the text they are, never parsed as markup.
    assert SCRIPT in watched["series"] and MARKUP in watched["series"], watched["series"]
    assert "code[0].code" in watched["fields"] and watched["off"] == [] and watched["scripts"] == 0
    assert unwatched["off"] and unwatched["checks"] == [] and unwatched["series"] == []


def _obs(n: int, code: str, value: float) -> ObservationV1:
    return ObservationV1.model_validate(
        {
            "observation_id": f"o{n}",
            "status": "final",
            "code": [{"system": "urn:test:local-codes", "code": code}],
            "value": {"type": "quantity", "value": value, "unit": "mg"},
        }
    )


def alerting_monitors(customer: str) -> Monitors:
    """Monitors driven through simulated minutes: six normal windows where a quarter of the events carry the code
    :data:`SCRIPT` (values 5 to 7), then one where all do with values a thousand times larger. The alerts that
    opens name the code: a level shift of its series and share changes of both codes."""
    settings = MonitorSettings(window_seconds=60, learn_seconds=0, volume=False, freshness=False)
    monitors = Monitors(customer, "observations", settings, clock=lambda: start + 8 * 60)
    start = 1_700_000_000 // 60 * 60
    for window in range(6):
        batch = [_obs(window * 40 + k, SCRIPT if k % 4 == 0 else "8302-2", 5.0 + k % 3) for k in range(40)]
        assert monitors.observe(batch, now=start + window * 60 + 1) == []
    monitors.observe([_obs(1000 + k, SCRIPT, 5000.0 + k % 3) for k in range(40)], now=start + 6 * 60 + 1)
    opened = monitors.tick(now=start + 7 * 60 + 1)
    assert sorted((a.check, a.series) for a in opened) == [
        ("level_shift", SCRIPT),
        ("share_change", "8302-2"),
        ("share_change", SCRIPT),
    ]
    return monitors


async def test_data_alerts_whose_series_and_codes_are_markup_render_as_text(
    tmp_path: Path,
    browser: webdriver.Chrome,
) -> None:
    customer = f"dqmarkup{uuid.uuid4().hex[:6]}"
    key = f"{customer}/observations"
    root = api_config(tmp_path, base_url="http://127.0.0.1:9/fhir", customer=customer)
    supervisor = Supervisor(*load_config(root))  # not run: only its documents are read
    supervisor.monitors[key] = alerting_monitors(customer)
    pages = {
        "overview": console.render_overview(status.snapshot(supervisor, recent=False)),
        "integration": console.render_integration(
            status.integration_status(supervisor, key), status.unit_monitors(supervisor, key)
        ),
    }
    for name, html in pages.items():
        (tmp_path / f"{name}.html").write_text(html, encoding="utf-8")

    def read(name: str) -> dict[str, Any]:
        browser.get((tmp_path / f"{name}.html").as_uri())  # no CSP header from a file: escaping alone must hold
        return {
            "series": _texts(browser, "#data-alerts td.series"),
            "details": _texts(browser, "#data-alerts td.detail"),
            "seen": _texts(browser, "#data-alerts td.seen"),
            "numeric": [
                [str(td.text) for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#monitor-numeric tr")[1:]
            ],
            "codes": _texts(browser, "#monitor-shares ul.baseline span.code"),
            "scripts": _scripts(browser),
        }

    overview = await asyncio.to_thread(read, "overview")
    page = await asyncio.to_thread(read, "integration")

    for seen in (overview, page):
        assert sorted(seen["series"]) == sorted([SCRIPT, "8302-2", SCRIPT]), seen["series"]
        assert any(SCRIPT in d for d in seen["details"]) and seen["scripts"] == 0
    assert "5001" in page["seen"] and "100.0%" in page["seen"]  # a value, and a share as a percentage
    rows = {row[2]: row for row in page["numeric"]}
    assert rows[SCRIPT][3:6] == ["6", "5", "7"], rows  # baseline median, p05, p95 (the shifted window not learnt)
    assert SCRIPT in page["codes"] and "8302-2" in page["codes"]
