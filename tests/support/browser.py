"""A real browser for the web page's tests: Debian's chromium, headless, driven by selenium
through Debian's chromedriver (``make packages`` installs both; nothing is downloaded)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = "chromium chromium-driver"
WINDOW = "1280,900"
T = TypeVar("T")


def _executable(path: str, name: str) -> str:
    found = shutil.which(path) or shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: the web page's tests need the Debian packages {PACKAGES} "
            f"(make packages installs them: apt-get install {PACKAGES})"
        )
    return found


@contextmanager
def chromium() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _executable(CHROMIUM, "chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW}",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=Service(_executable(CHROMEDRIVER, "chromedriver")), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()


def wait_js(driver: WebDriver, script: str, timeout: float, what: str) -> Any:
    """The first truthy value of ``script`` (a JS expression's body, e.g. ``return x``),
    polled every 50 ms; fails with ``what`` and the browser's console at ``timeout``."""
    def check(d: WebDriver) -> Any:
        return d.execute_script(script)

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)
    except Exception as exc:
        console = "\n".join(str(entry) for entry in driver.get_log("browser"))
        raise AssertionError(f"timed out waiting for {what}; browser console:\n{console}") from exc


def until(driver: WebDriver, predicate: Callable[[WebDriver], T], timeout: float) -> T:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate)
