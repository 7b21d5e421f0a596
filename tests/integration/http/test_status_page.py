"""The status page (/ui) in a real browser: Debian's chromium and chromedriver driven by
Selenium, against an agent with real uvicorn providers under traffic (issue 28)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port
from tests.fixtures.programs import require
from tests.integration.http.conftest import start_uvicorn

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "images" / "status-page.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named outright: Selenium Manager would try to download one.
    driver = webdriver.Chrome(options=options, service=Service(require("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, object]]:
    workdir = tmp_path_factory.mktemp("status-page")
    steady, doomed = start_uvicorn(workdir, "steady"), start_uvicorn(workdir, "doomed")
    config = {
        "app": {"name": "shop"},
        "services": [
            {
                "name": "orders",
                "protocol": "http",
                "health": {"enabled": False},
                "outlier": {"consecutive_failures": 2, "max_ejection_percent": 50},
            }
        ],
        "listeners": [{"port": free_port(), "service": "orders", "protocol": "http"}],
    }
    agent = start_agent(workdir / "agent", config)
    try:
        with agent.client() as client:
            for name, (_, port) in (("steady", steady), ("doomed", doomed)):
                client.put(
                    f"/v1/registrations/orders/{name}", json={"host": "127.0.0.1", "port": port}
                ).raise_for_status()
        agent.wait_endpoints("orders", 2)
        yield agent, doomed[0]
    finally:
        agent.stop()
        steady[0].stop()
        doomed[0].stop()


def test_the_page_shows_the_mesh_and_follows_it(
    setup: tuple[AgentProcess, object], browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    agent, doomed = setup
    driver = browser
    listener = f"http://127.0.0.1:{agent.listener_port(0)}"
    with httpx.Client(base_url=listener, timeout=10) as app:
        for _ in range(10):
            assert app.get("/hello").status_code == 200
        assert app.get("/status/500").status_code == 500  # a failed call, with its chain
    driver.get(f"{agent.base_url}/ui")  # type: ignore[attr-defined]
    services = driver.find_element(By.ID, "services").text  # type: ignore[attr-defined]
    assert "orders" in services and "steady" in services and "doomed" in services
    failures = driver.find_element(By.ID, "failures").text  # type: ignore[attr-defined]
    assert "app_error" in failures and "shop:orders@" in failures
    assert "GET" in driver.find_element(By.ID, "calls").text  # type: ignore[attr-defined]

    doomed.stop()  # type: ignore[attr-defined]
    with httpx.Client(base_url=listener, timeout=10) as app:
        for _ in range(6):  # connect failures eject it; the steady one answers
            app.get("/hello")

    def doomed_is_ejected(_: object) -> bool:
        # The rows' text read in one script call: the page's refresh replaces the rows, so
        # an element found by one WebDriver call may be gone by the next (stale reference).
        rows: list[str] = driver.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.querySelectorAll('#services tr'), r => r.innerText)"
        )
        return any("doomed" in row and "ejected" in row for row in rows)

    # No reload: the page's own refresh (every 5 s) brings the ejection.
    WebDriverWait(driver, 20, poll_frequency=0.2).until(doomed_is_ejected)
    errors = [
        entry
        for entry in driver.get_log("browser")  # type: ignore[attr-defined]
        if entry["level"] == "SEVERE"
    ]
    assert errors == []
    shot = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / "status-page.png"
    assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    if os.environ.get("MESHAGENT_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_the_basics_without_javascript(setup: tuple[AgentProcess, object]) -> None:
    agent, _ = setup
    with agent.client() as client:
        page = client.get("/ui", params={"to": "orders", "method": "GET"})
        fragment = client.get("/ui", headers={"x-fragment": "1"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<table>" in page.text and "orders" in page.text
    assert "orders GET: <span" in page.text  # the rule lookup: no rule in force
    assert fragment.text.startswith('<section id="services">')
    assert "<script>" not in fragment.text
