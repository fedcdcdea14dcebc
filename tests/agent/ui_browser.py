"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

Nothing is downloaded at run time: the driver is ``/usr/bin/chromedriver`` given to
``Service`` and the browser binary is named, so selenium-manager has nothing to fetch.
Screenshots go to the test's tmp dir (look at them: ``Browser.shot`` returns the path).
A plain module (see agent_helpers.py for why not a package).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Browser:
    """One headless Chromium window; ``wait`` polls a condition on the page."""

    def __init__(self, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,1900", "--disable-extensions", "--no-first-run"):
            opts.add_argument(a)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def wait(self, cond: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                got = cond()
                if got:
                    return got
            except Exception as e:  # an element not there yet
                last = e
            time.sleep(0.1)
        shot = self.shot("timeout")
        raise AssertionError(f"timed out waiting for {what or cond} (screenshot {shot}; "
                             f"last error {last!r})")

    def login(self, token: str) -> None:
        self.wait(lambda: self.find("#login").is_displayed(), what="the login form")
        self.find("#token").send_keys(token)
        self.find("#login-btn").click()
        self.wait(lambda: self.find("#main").is_displayed(), what="the dashboard after login")

    def shot(self, name: str) -> Path:
        p = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(p))
        return p

    def console_errors(self) -> list[str]:
        try:
            logs = self.driver.get_log("browser")
        except Exception:
            return []
        # script errors only: a 401/403 answer is logged as "Failed to load resource"
        return [str(e["message"]) for e in logs if e.get("level") == "SEVERE"
                and "Failed to load resource" not in str(e["message"])]

    def close(self) -> None:
        self.driver.quit()


@contextmanager
def open_browser(shots: Path) -> Iterator[Browser]:
    """A browser for one test. Fails (never skips) without Chromium: scripts/setup.sh
    installs ``chromium`` and ``chromium-driver``."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} not installed: run scripts/setup.sh"
    b = Browser(shots)
    try:
        yield b
    finally:
        b.close()
