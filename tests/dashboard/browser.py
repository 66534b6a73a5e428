"""A headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium, for the page's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
CHART_STATE = """
return Object.fromEntries([...document.querySelectorAll('.chart')].map(e => [e.id, {
  points: Number(e.dataset.points || 0), events: Number(e.dataset.events || 0), state: e.dataset.state || null,
  drawn: !!(window.streamrec.charts[e.id] && e.querySelector('canvas')),
}]));
"""
"""Per chart: the values it plots (``data-points``), whether uPlot drew it, and its state (quality: live/waiting)."""


def browser_paths() -> tuple[str, str]:
    """Chromium and its driver, or skip the calling test with the reason."""
    pytest.importorskip("selenium", reason="needs selenium (the dev tools) to drive the browser")
    chromium = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("needs Debian's chromium and chromium-driver packages (/usr/bin/chromium, /usr/bin/chromedriver)")
    return chromium, driver


@contextmanager
def chrome(profile_parent: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile under ``profile_parent``) that logs the page's console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chromium, chromedriver = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=profile_parent)}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(chromedriver), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Script errors and blocked requests the page logged."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
