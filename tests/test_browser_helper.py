"""The browser-test helper (tests/browser.py): a missing Chromium fails the test with one line saying what
to install, unless SOUND2IMAGE_SKIP_BROWSER_TESTS=1; screenshots are copied to $SOUND2IMAGE_TEST_ARTIFACTS."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browser


def _no_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(browser.CHROMIUM_ENV, raising=False)
    monkeypatch.delenv(browser.SKIP_ENV, raising=False)
    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no chromium on the PATH either


def test_missing_chromium_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_chromium(monkeypatch, tmp_path)
    with pytest.raises(pytest.fail.Exception) as caught:
        browser.find_chromium()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"Chromium not found at {tmp_path / 'no-chromium'}: install Debian's chromium")
    assert "apt-get install chromium" in message and "SOUND2IMAGE_SKIP_BROWSER_TESTS=1" in message


def test_skipping_browser_tests_is_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_chromium(monkeypatch, tmp_path)
    monkeypatch.setenv(browser.SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="SOUND2IMAGE_SKIP_BROWSER_TESTS=1"):
        browser.find_chromium()


def test_configured_chromium_is_used_or_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_chromium(monkeypatch, tmp_path)
    executable = tmp_path / "my-chromium"
    executable.write_text("#!/bin/sh\n")
    monkeypatch.setenv(browser.CHROMIUM_ENV, str(executable))
    with pytest.raises(
        pytest.fail.Exception, match=r"SOUND2IMAGE_CHROMIUM=.*my-chromium is not an executable"
    ):
        browser.find_chromium()  # not executable yet
    executable.chmod(0o755)
    assert browser.find_chromium() == str(executable)


def test_screenshots_are_copied_to_the_artifacts_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class FakePage:
        def screenshot(self, path: str, full_page: bool) -> None:
            assert full_page
            Path(path).write_bytes(b"png")

    artifacts = tmp_path / "artifacts" / "nested"
    monkeypatch.setenv(browser.ARTIFACTS_ENV, str(artifacts))
    saved = browser.save_screenshot(FakePage(), tmp_path, "shot.png")
    assert saved == tmp_path / "shot.png" and saved.read_bytes() == b"png"
    assert (artifacts / "shot.png").read_bytes() == b"png"
    monkeypatch.delenv(browser.ARTIFACTS_ENV)
    (tmp_path / "other").mkdir()
    assert browser.save_screenshot(FakePage(), tmp_path / "other", "shot.png").is_file()
    assert sorted(p.name for p in artifacts.iterdir()) == ["shot.png"]
