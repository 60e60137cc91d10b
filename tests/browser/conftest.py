"""Debian's headless Chromium through Playwright."""

from tests.support.browser import browser_context  # noqa: F401 (a fixture)
