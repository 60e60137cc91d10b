"""Debian's headless Chromium through Playwright (`executable_path`, never a downloaded browser), and
screenshots into tests/artifacts/screenshots."""

from __future__ import annotations

import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from stream.models import CHINA_TZ
from tests.support.paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
CLINIC = "c1"
TOKEN = "browser-token-0123456789"


SHOTS = REPO / "tests" / "artifacts" / "screenshots"


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_http(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the console did not come up")


def now_china() -> datetime:
    return datetime.now(CHINA_TZ).replace(microsecond=0)


@pytest.fixture
def browser_context(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; scripts/test.sh installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 860},
            locale="zh-CN",
        )
        try:
            yield ctx
        finally:
            ctx.close()


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
