"""The status page in a real browser (issue 24): Debian's headless Chromium, driven by
selenium through Debian's /usr/bin/chromedriver (selenium-manager never downloads).

A real scheduler (``velocity-pg schedule`` with ``BACKUP_HTTP_ADDR``) serves a folder of
real backups of the test server, with a failed run and off-site copies in moto. The page
must show the numbers of ``list --json`` and ``status --json``, draw its charts, log no
console error, and fit a phone's width. Screenshots are saved under
``VELOCITY_TEST_ARTIFACTS`` (else the test's tmp folder).

Skipped only where Chromium is missing and this is not CI; in CI (CI=true) it fails.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    offsite_env,
    s3_endpoint,
)
from page_support import free_port, make_history, secret_env, secrets, wait_listening

from velocity_pg.store.catalog import human_size

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the test extra)")
    if missing:
        why = f"not installed: {', '.join(missing)} (Debian: chromium chromium-driver)"
        if in_ci():
            pytest.fail(f"CI must run the browser test; {why}")
        pytest.skip(why)


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VELOCITY_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Debian's browser and driver only: selenium-manager never looks for (or downloads) one.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A HOME of its own: CI's unprivileged user may have none it can write.
    home = tmp_path / "home"
    home.mkdir()
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_chromium_shows_the_numbers_draws_the_charts_and_fits_a_phone(
    target: Target,
    bucket: Bucket,  # noqa: F811 (the fixture)
    browser: Any,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    env = target.env(**offsite_env(bucket))
    make_history(target, env)
    listed = json.loads(target.run("list", "--json", env=env).stdout)["backups"]
    remote = json.loads(target.run("list", "--remote", "--json", env=env).stdout)["backups"]
    status = json.loads(target.run("status", "--json", env=env).stdout)

    port = free_port()
    proc = target.popen(
        "schedule",
        env={**env, **secret_env(), "BACKUP_HTTP_ADDR": f"127.0.0.1:{port}",
             "BACKUP_SCHEDULE": "@every 1h"},
    )  # fmt: skip
    try:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        assert browser.title.startswith("velocity-pg: backups of")
        state = browser.find_element(By.ID, "state")
        assert state.get_attribute("data-state") == "amber"  # fresh; the last run failed
        assert "the last run failed" in state.text

        def fact(key: str) -> str:
            return str(browser.find_element(By.CSS_SELECTOR, f'dd[data-fact="{key}"]').text)

        assert fact("local") == (
            f"{status['count']} backup(s), {human_size(status['total_bytes'])}"
        )
        assert fact("off-site").startswith(f"{status['offsite']['count']} copy(ies), ")
        assert fact("newest-backup").startswith(status["newest"]["name"])
        assert fact("free-space").endswith(("B", "KiB", "MiB", "GiB", "TiB"))
        next_run = fact("next-run")

        rows = browser.find_elements(By.CSS_SELECTOR, "#backups tbody tr")
        shown = {r.get_attribute("data-name"): r for r in rows}
        assert set(shown) == {b["name"] for b in listed} | {r["name"] for r in remote}
        for b in listed:
            cell = shown[b["name"]].find_element(By.CSS_SELECTOR, "td[data-local]")
            assert cell.get_attribute("data-local") == str(b["size_bytes"])
            assert cell.text == human_size(b["size_bytes"])
        for r in remote:
            cell = shown[r["name"]].find_element(By.CSS_SELECTOR, "td[data-remote]")
            assert cell.get_attribute("data-remote") == str(r["size_bytes"])
        names = [r.get_attribute("data-name") for r in rows]
        assert names == sorted(names, key=lambda n: n.rsplit("_", 2)[-2:], reverse=True)

        charts = browser.find_elements(By.CSS_SELECTOR, "figure svg.pygal-chart")
        assert len(charts) == 4
        for chart in charts:
            box = chart.rect
            assert box["width"] > 200 and box["height"] > 80, box
        # The size and duration charts drew their line and marked the failed run.
        drawn = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure svg')).map("
            "s => s.querySelectorAll('path.line, circle.dot, .dots').length)"
        )
        assert drawn[0] > 0 and drawn[1] > 0, drawn
        assert "failed run" in charts[0].text or "failed run" in browser.page_source
        source = browser.page_source
        for secret in secrets():
            assert secret not in source

        browser.save_screenshot(str(artifacts(tmp_path) / "status-page.png"))

        browser.set_window_size(390, 844)
        browser.get(url)
        time.sleep(0.5)
        width = browser.execute_script(
            "return [document.scrollingElement.scrollWidth, window.innerWidth]"
        )
        assert width[0] <= width[1], f"horizontal overflow on a phone: {width}"
        browser.save_screenshot(str(artifacts(tmp_path) / "status-page-phone.png"))

        logs = browser.get_log("browser")
        severe = [entry for entry in logs if entry.get("level") == "SEVERE"]
        assert severe == [], severe
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"next run at {next_run}" in out  # the scheduler's own due time
