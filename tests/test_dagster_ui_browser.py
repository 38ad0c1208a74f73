"""The Dagster UI in a real browser: the project's webserver on a free local port, opened in
headless Chromium. The asset graph shows every asset in its stage group, a partitioned asset
shows its eight city partitions with their materialization status and metadata, and a check
shows its result.

Screenshots go to the test's temporary directory; with RECSYS_SAVE_SCREENSHOTS=1 they are also
written to docs/ (the ones the README shows):

    RECSYS_SAVE_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/test_dagster_ui_browser.py

Skipped only when Chromium or chromedriver is not installed (`.ci/run` installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recsys_assets.stages import ASSET_GROUPS
from recsys_core.taxonomy import CITY_SLUGS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS = PROJECT_ROOT / "docs"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run does this)",
)

STAGES = {group: list(assets) for group, assets in ASSET_GROUPS.items()}
MATERIALIZED_CITIES = ("london", "berlin")
# Generous bounds for a loaded 2-core machine; a healthy one needs a fraction of them.
SERVER_START_S = 600
PAGE_RENDER_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory) -> Path:
    """A fresh Dagster instance in which a tiny world's places and users (and their contract
    checks) were materialized for two cities, so partitions show both states."""
    from dagster import DagsterInstance, materialize

    from recsys_assets.definitions import build_definitions
    from recsys_assets.materialize import materializable
    from recsys_assets.resources import WorldSource

    root = tmp_path_factory.mktemp("dagster_ui")
    home = root / "dagster_home"
    home.mkdir()
    # No telemetry, and no "join the community" dialog over the pages.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    defs = build_definitions(str(root / "artifacts"), WorldSource(n_users=800, n_places=800))
    with DagsterInstance.local_temp(str(home)) as instance:
        vocabulary = materialize(
            materializable(defs), selection=["vocabulary"], instance=instance, resources=defs.resources
        )
        assert vocabulary.success
        for city in MATERIALIZED_CITIES:
            result = materialize(
                materializable(defs),
                selection=["places", "users"],
                partition_key=city,
                instance=instance,
                resources=defs.resources,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            assert result.success
    return root


@pytest.fixture(scope="module")
def dagster_ui(ui_home):
    """`dagster-webserver -w workspace.yaml` on a free port, serving the project's definitions."""
    port = _free_port()
    log = ui_home / "webserver.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(ui_home / "dagster_home"),
        "RECSYS_ARTIFACTS": str(ui_home / "artifacts"),
        "RECSYS_INBOX": str(ui_home / "inbox"),
    }
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {server.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver not ready after {SERVER_START_S} s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield base
    finally:
        # The webserver and the code server it started are one process group (start_new_session).
        _signal_group(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        _signal_group(server.pid, signal.SIGKILL)  # whatever of the group is still alive
        server.wait(timeout=30)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _start_chromium(profiles, attempts: int = 3):
    """Headless Chromium with a fresh profile. chromedriver gives it 60 s to start, which a heavily
    loaded machine can miss once, so a failed start is retried (with a new profile)."""
    if CHROMIUM is None:  # the module is skipped then (pytestmark)
        pytest.skip("Chromium is not installed")
    from selenium import webdriver
    from selenium.common.exceptions import SessionNotCreatedException
    from selenium.webdriver.chrome.service import Service

    for attempt in range(1, attempts + 1):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            # Tall enough for the whole asset graph: the UI draws only the nodes inside the viewport.
            "--window-size=1920,2400",
            f"--user-data-dir={profiles.mktemp('chromium_profile')}",
        ):
            options.add_argument(argument)
        options.page_load_strategy = "eager"  # the app renders itself; the waits look for what it shows
        try:
            return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except SessionNotCreatedException:
            if attempt == attempts:
                raise


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _start_chromium(tmp_path_factory)
    # On a loaded machine one command can take longer than the client's default 120 s.
    driver.command_executor._client_config.timeout = PAGE_RENDER_S
    driver.set_page_load_timeout(PAGE_RENDER_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """save(name): the page as name.png in the test's tmp dir, and in docs/ when asked to."""
    directory = tmp_path_factory.mktemp("screenshots")
    to_docs = os.environ.get("RECSYS_SAVE_SCREENSHOTS") == "1"

    def save(driver, name: str) -> Path:
        path = directory / f"{name}.png"
        assert driver.save_screenshot(str(path)), f"screenshot {name} failed"
        if to_docs:
            shutil.copyfile(path, DOCS / f"{name}.png")
        return path

    return save


def _wait_for(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, PAGE_RENDER_S, poll_frequency=0.5).until(lambda d: condition(d))
    except TimeoutException:
        body = driver.execute_script("return document.body ? document.body.innerText : ''")
        pytest.fail(f"the UI never showed {what}; page text:\n{body[:3000]}")


def _graph_lines(driver) -> set[str]:
    """The texts of every node (assets and groups) drawn in the asset graph's SVG."""
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll('svg foreignObject *'))"
        ".filter(e => e.children.length === 0).map(e => e.textContent)"
    )
    return {text.strip() for text in texts if text and text.strip()}


def test_asset_graph_shows_every_asset_in_its_stage_group(dagster_ui, browser, screenshots):
    """Each stage group's own graph page draws every asset of that stage (the whole graph, every
    group expanded, is taller than a window and draws only what is in view)."""
    for group, assets in STAGES.items():
        browser.get(f"{dagster_ui}/locations/__repository__@recsys/asset-groups/{group}")
        _wait_for(browser, lambda d, assets=assets: set(assets) <= _graph_lines(d), f"every {group} asset")
        screenshots(browser, f"dagster_asset_graph_{group}")


def test_partitioned_asset_shows_the_city_partitions_and_their_status(dagster_ui, browser, screenshots):
    from selenium.webdriver.common.by import By

    browser.get(f"{dagster_ui}/assets/places?view=partitions")
    cities = set(CITY_SLUGS)
    _wait_for(
        browser,
        lambda d: cities <= set(d.find_element(By.TAG_NAME, "body").text.splitlines()),
        "the eight city partitions of places",
    )
    # Two cities were materialized, six were not.
    _wait_for(
        browser, lambda d: "Materialized (2)" in d.find_element(By.TAG_NAME, "body").text, "two materialized partitions"
    )
    assert "Missing (6)" in browser.find_element(By.TAG_NAME, "body").text
    # One city's materialization shows its metadata: row count, preview, distributions.
    browser.find_element(By.XPATH, "//*[normalize-space(text())='berlin']").click()
    _wait_for(
        browser,
        lambda d: "price_band distribution" in d.find_element(By.TAG_NAME, "body").text,
        "berlin's materialization metadata",
    )
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "dagster/row_count" in body or "Row count" in body
    assert "preview" in body
    screenshots(browser, "dagster_partitions")


def test_blocking_check_shows_its_result(dagster_ui, browser, screenshots):
    from selenium.webdriver.common.by import By

    browser.get(f"{dagster_ui}/assets/users?view=checks")
    _wait_for(browser, lambda d: "Passed" in d.find_element(By.TAG_NAME, "body").text, "the users_contract result")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "users_contract" in body and "blocking" in body
    assert "violations" in body
    screenshots(browser, "dagster_check")
