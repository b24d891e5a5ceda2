"""The console's pages in a real Chromium (Debian's, driven by Playwright's Python
package), shared by the console's and the cluster's browser tests.

Chromium is never downloaded (``playwright install`` cannot run here): a missing
/usr/bin/chromium fails these tests (CONTRACTS, "Configuration and CI").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one test module."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (scripts/test.sh installs chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield launched
        launched.close()


class Console:
    """Pages of one browser context (time zone UTC), and the browser's errors."""

    def __init__(self, browser: Browser, base: str, shots: Path) -> None:
        self.base = base
        self.shots = shots
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 860}, timezone_id="UTC"
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.allowed: list[str] = []
        """Error texts a test provokes on purpose (a refused login's 401)."""

    def page(self, route: str = "") -> Page:
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.goto(f"{self.base}/#/{route}")
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(a in message.text for a in self.allowed):
            self.errors.append(message.text)

    def shot(self, page: Page, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.shots / f"console-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"errors in the browser's log: {self.errors}"
