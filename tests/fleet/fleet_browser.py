"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

Nothing is downloaded at run time: the driver is the system's ``/usr/bin/chromedriver``
(given explicitly, so selenium-manager never runs). Tests skip when either is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMEDRIVER) and shutil.which(CHROMIUM)):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--disable-extensions", "--no-first-run"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
