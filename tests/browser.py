"""Driving a real headless Chromium in tests: Debian's ``chromium`` through playwright (which downloads no
browser of its own).

- :func:`find_chromium` finds the executable: ``$SOUND2IMAGE_CHROMIUM``, else ``/usr/bin/chromium`` (or
  ``chromium`` on the PATH). If none is found the test FAILS with one line saying to install Debian's
  chromium; only ``SOUND2IMAGE_SKIP_BROWSER_TESTS=1`` turns browser tests into skips.
- :func:`open_page` launches it, opens a URL and yields the page and a :class:`PageLog` of what went wrong
  (console errors, uncaught page errors, failed requests) and of every request made.
- :func:`save_screenshot` saves a full-page screenshot under the test's ``tmp_path`` and, when
  ``$SOUND2IMAGE_TEST_ARTIFACTS`` is set, copies it there (CI keeps that folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ENV = "SOUND2IMAGE_CHROMIUM"
SKIP_ENV = "SOUND2IMAGE_SKIP_BROWSER_TESTS"
ARTIFACTS_ENV = "SOUND2IMAGE_TEST_ARTIFACTS"
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a headless Chromium in a container/CI: no sandbox (no user namespaces), no GPU, /tmp instead
#: of a small /dev/shm, and no background requests (update checks, field trials) to the network.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--mute-audio",
)


def find_chromium() -> str:
    """The Chromium executable to drive; skips (only with SOUND2IMAGE_SKIP_BROWSER_TESTS=1) or fails."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"browser tests skipped ({SKIP_ENV}=1)")
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            pytest.fail(f"{CHROMIUM_ENV}={configured} is not an executable file", pytrace=False)
        return configured
    if DEFAULT_CHROMIUM.is_file():
        return str(DEFAULT_CHROMIUM)
    found = shutil.which("chromium")
    if found:
        return found
    pytest.fail(
        f"Chromium not found at {DEFAULT_CHROMIUM}: install Debian's chromium (apt-get install chromium), "
        f"set {CHROMIUM_ENV} to a Chromium executable, or {SKIP_ENV}=1 to skip the browser tests",
        pytrace=False,
    )


@dataclass
class PageLog:
    """What a page did: ``errors`` (console errors, uncaught exceptions, failed requests) and ``requests``."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """Every problem, one line each (empty when the page loaded cleanly)."""
        return (
            [f"console: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"failed request: {m}" for m in self.failed_requests]
        )


def _short(url: str) -> str:
    """A request's URL for a message: data: URIs are cut to their type."""
    return url.split(",", 1)[0] + ",…" if url.startswith("data:") else url


@contextmanager
def open_page(
    url: str, *, width: int = 1280, height: int = 900, timeout_ms: int = 10_000
) -> Iterator[tuple[Any, PageLog]]:
    """Launch headless Chromium, open ``url`` (waits for the load event) and yield ``(page, log)``.

    The browser is closed on exit. ``log`` keeps collecting until then, so check it after waiting for
    what the test needs (images decoded, media metadata loaded).
    """
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'", pytrace=False)
    log = PageLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.page_errors.append(str(e)))
            page.on("request", lambda r: log.requests.append(_short(r.url)))
            page.on(
                "requestfailed",
                lambda r: log.failed_requests.append(f"{_short(r.url)} ({r.failure})"),
            )
            page.goto(url, wait_until="load")
            yield page, log
        finally:
            browser.close()


def save_screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Save a full-page PNG screenshot as ``tmp_path/name`` (and a copy in $SOUND2IMAGE_TEST_ARTIFACTS)."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get(ARTIFACTS_ENV)
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(artifacts) / name)
    return path
