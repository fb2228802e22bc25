"""`sound2image serve` in a real headless Chromium (Debian's, through playwright and tests/browser.py):
the app runs in-process on 127.0.0.1 with the tiny SounDiff pipeline and a tiny trained Image Transformer.

Screenshots of each state are saved as test artifacts (``$SOUND2IMAGE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sound2image.outputs import read_png_metadata
from sound2image.webui.jobs import Limits
from tests.browser import open_page, save_screenshot

TIMEOUT_MS = 30_000  # a generous wait for one tiny image on a loaded 2-core machine (it takes ~1 s)


def _upload(page: Any, path: Path, component: str = "#sound") -> None:
    """Put ``path`` in an audio component (clearing what it holds first)."""
    clear = page.locator(f"{component} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator(f"{component} input[type=file]").set_input_files(str(path))


def _generate(page: Any, expected: int = 1) -> list[str]:
    """Press Generate and wait for ``expected`` download links; their file names."""
    page.click("#generate")
    return _results(page, expected)


def _results(page: Any, expected: int = 1) -> list[str]:
    """Wait for ``expected`` download links; their file names."""
    links = page.locator("#downloads a[download]")
    page.wait_for_function(
        f"document.querySelectorAll('#downloads a[download]').length >= {expected}", timeout=TIMEOUT_MS
    )
    page.wait_for_selector("#gallery img", timeout=TIMEOUT_MS)
    return [links.nth(i).get_attribute("download") for i in range(links.count())]


def _download(page: Any, index: int, folder: Path) -> Path:
    """Click download link ``index`` as a user would and save the file the browser receives."""
    with page.expect_download() as caught:
        page.locator("#downloads a[download]").nth(index).click()
    target = folder / caught.value.suggested_filename
    caught.value.save_as(target)
    return target


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


def _message(page: Any, text: str, count: int = 1) -> None:
    """Wait until the page shows ``text`` ``count`` times in its error toasts (Gradio groups the messages
    of one kind in one toast, one line each)."""
    lines = page.locator("[data-testid='toast-text']", has_text=text)
    lines.nth(count - 1).wait_for(state="visible", timeout=TIMEOUT_MS)


def _close_messages(page: Any) -> None:
    for button in page.locator("[data-testid='toast-close']").all():
        button.click()
    page.locator("[data-testid='toast-text']").first.wait_for(state="detached")


def _requests_left(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "requests"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_upload_gives_an_image_whose_png_regenerates_identical_pixels(
    serve, tiny_dir, wavs, tmp_path
) -> None:
    from sound2image.diffusion import regenerate

    demo, url = serve([str(tiny_dir)])
    with open_page(url) as (page, log):
        page.wait_for_selector("#generate")
        _upload(page, wavs[0])
        page.locator("#sound button[aria-label='Clear']").first.wait_for()
        save_screenshot(page, tmp_path, "webapp_1_uploaded.png")
        page.locator("#seed textarea").fill("42")
        (name,) = _generate(page)
        assert name == "00017_seed42.png"
        assert page.locator("#seeds textarea").input_value() == "42"
        save_screenshot(page, tmp_path, "webapp_2_image.png")
        png = _download(page, 0, tmp_path)
        # the file served is ours: its metadata is the whole record, and the library redraws its pixels
        metadata = read_png_metadata(png)
        assert metadata["seed"] == 42 and metadata["num_inference_steps"] == 2 and metadata["height"] == 32
        assert metadata["audio"][0]["file"] == "00017.wav"
        again = regenerate(png, device="cpu", dtype="float32")  # loads the recorded model by itself
        assert np.array_equal(np.asarray(again.images[0]), _pixels(png))

        # the page's own "Regenerate from PNG" tab says the same
        page.get_by_role("tab", name="Regenerate from PNG").click()
        page.locator("#png-in input[type=file]").set_input_files(str(png))
        page.click("#regenerate")
        page.wait_for_function(
            "document.querySelector('#regen-status textarea')?.value.length > 0", timeout=TIMEOUT_MS
        )
        assert page.locator("#regen-status textarea").input_value() == "identical pixels to the PNG given"
        save_screenshot(page, tmp_path, "webapp_3_regenerated.png")
        assert log.page_errors == []
        # Aborted on purpose by the page itself: the audio player's blob: media loads (when it redraws) and
        # Gradio's event stream (/queue/data, closed by its client when no event is pending). Nothing else
        # (page, uploads, files) may fail.
        expected = ("blob:", f"{url.rstrip('/')}/gradio_api/queue/data?")
        assert [r for r in log.failed_requests if not r.startswith(expected)] == []
    assert _requests_left(tmp_path) == []


def test_bad_files_show_our_message_and_the_app_keeps_serving(
    serve, tiny_dir, wavs, bad_files, tmp_path
) -> None:
    demo, url = serve([str(tiny_dir)], limits=Limits(max_upload_mb=1))
    messages = {
        "corrupt": "broken.wav: truncated: the header declares 10.000 s",
        "text": "notes.wav: not a recognised audio format (looks like text)",
        "big": "big.wav: 1.5 MB, more than the 1 MB upload limit",
    }
    with open_page(url) as (page, log):
        page.wait_for_selector("#generate")
        for kind, message in messages.items():
            _upload(page, bad_files[kind])
            _message(page, message)  # refused as soon as it is dropped
            page.click("#generate")
            _message(page, message, count=2)  # and again when Generate is pressed
            save_screenshot(page, tmp_path, f"webapp_error_{kind}.png")
            assert "Traceback" not in page.content()
            _close_messages(page)
        _upload(page, wavs[1])
        (name,) = _generate(page)
        assert name.startswith("00018_seed")
        save_screenshot(page, tmp_path, "webapp_error_then_image.png")
        assert log.page_errors == []
    assert _requests_left(tmp_path) == []


def test_two_pages_at_once_each_get_their_own_images(serve, tiny_dir, wavs, tmp_path) -> None:
    demo, url = serve([str(tiny_dir)], concurrency=2)
    app = demo.sound2image
    # Each request waits in the app until the other one is there too: with one job at a time the second
    # would never arrive and the first would fail after 20 s (BrokenBarrierError).
    both_in = threading.Barrier(2, timeout=20)
    met: list[int] = []
    original = app.generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        met.append(both_in.wait())
        return original(*args, **kwargs)

    app.generate = counted
    with open_page(url) as (first, _):
        # a second visitor: another page of the same browser, in a context (cookies, storage) of its own
        second = first.context.browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        second.goto(url, wait_until="load")
        for page, wav, seed in ((first, wavs[0], "5"), (second, wavs[1], "6")):
            page.wait_for_selector("#generate")
            _upload(page, wav)
            page.locator("#seed textarea").fill(seed)
        first.click("#generate")
        second.click("#generate")
        for page, stem, seed in ((first, "00017", 5), (second, "00018", 6)):
            page.wait_for_function(
                "document.querySelectorAll('#downloads a[download]').length >= 1", timeout=TIMEOUT_MS
            )
            png = _download(page, 0, tmp_path)
            metadata = read_png_metadata(png)
            assert (png.name, metadata["seed"], metadata["audio"][0]["file"]) == (
                f"{stem}_seed{seed}.png",
                seed,
                f"{stem}.wav",
            )
        save_screenshot(first, tmp_path, "webapp_concurrent_1.png")
        save_screenshot(second, tmp_path, "webapp_concurrent_2.png")
    assert sorted(met) == [0, 1]  # both requests were in the app at once (the queue let two run)
    assert _requests_left(tmp_path) == [] and app.running() == 0
    # Gradio's own copies (the uploads, the results it served) go when the server stops (delete_cache)
    cached = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()]
    assert any(p.name == "00017.wav" for p in cached) and any(p.name == "00018_seed6.png" for p in cached)
    demo.close()
    assert [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()] == []


def test_storyboard_mode_gives_one_frame_per_window(serve, tiny_dir, wavs, tmp_path) -> None:
    demo, url = serve([str(tiny_dir)])
    with open_page(url) as (page, _):
        page.wait_for_selector("#generate")
        _upload(page, wavs[0])
        page.get_by_text("Storyboard (long sounds)").click()
        page.locator("#storyboard input[type=checkbox]").check()
        page.locator("#window input[type=number]").fill("2.5")
        names = _generate(page, expected=5)
        save_screenshot(page, tmp_path, "webapp_storyboard.png")
    frames = [n for n in names if "_t0" in n]
    assert len(frames) == 4  # 10 s in 2.5 s windows
    assert [n for n in names if n not in frames] == [next(n for n in names if "storyboard" in n)]


def test_transformer_model_from_the_dropdown(serve, tiny_dir, transformer_dir, wavs, tmp_path) -> None:
    from sound2image.transformer.runner import regenerate

    demo, url = serve([str(tiny_dir), f"transformer:{transformer_dir}"])
    with open_page(url) as (page, _):
        page.wait_for_selector("#generate")
        page.locator("#model input").click()
        page.get_by_role("option", name=f"Image Transformer: {transformer_dir}").click()
        _upload(page, wavs[0])
        page.locator("#seed textarea").fill("3")
        page.locator("#num-images input[type=number]").fill("2")
        page.click("#generate")
        page.get_by_text("pixels").first.wait_for(timeout=TIMEOUT_MS)  # the pixel loop's progress bar
        save_screenshot(page, tmp_path, "webapp_transformer_progress.png")
        names = _results(page, expected=2)
        name = names[0]
        save_screenshot(page, tmp_path, "webapp_transformer.png")
        png = _download(page, 0, tmp_path)
    assert name == "00017_seed3.png"
    again = regenerate(png, audio=wavs[0])  # the library's redraw, from the PNG's record
    assert np.array_equal(again.image, _pixels(png))


@pytest.fixture(autouse=True)
def _no_request_folders_left(tmp_path: Path) -> Any:
    yield
    assert _requests_left(tmp_path) == []


def test_cancel_stops_the_running_job(serve, tiny_dir, wavs, tmp_path) -> None:
    demo, url = serve([str(tiny_dir)])
    app = demo.sound2image
    with open_page(url) as (page, _):
        page.wait_for_selector("#generate")
        _upload(page, wavs[0])
        page.locator("#num-images input[type=number]").fill("60")  # ~10 s of work: time to press Cancel
        page.click("#generate")
        page.get_by_text("denoising").first.wait_for(timeout=TIMEOUT_MS)  # the progress bar's label
        save_screenshot(page, tmp_path, "webapp_progress.png")
        page.click("#cancel")
        # Cancel answers once the job has stopped; Generate's own answer (if Gradio still delivers it)
        # says the same, so whichever arrives last the page ends on "cancelled"
        page.wait_for_function(
            "document.querySelector('#status textarea')?.value === 'cancelled'", timeout=TIMEOUT_MS
        )
        assert app.running() == 0
        save_screenshot(page, tmp_path, "webapp_cancelled.png")
        assert page.locator("#downloads a[download]").count() == 0  # no result of the cancelled job
        (name,) = _generate(page.locator("#num-images input[type=number]").fill("1") or page)
        assert name.startswith("00017_seed")  # and the next request runs
