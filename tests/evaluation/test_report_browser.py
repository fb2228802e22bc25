"""The evaluation report in a real headless Chromium (Debian's ``chromium`` through playwright): it loads
with no console error and no request but itself, every image decodes, every audio element loads its
metadata, and every number on screen equals results.json. A full-page screenshot is kept as an artifact."""

from __future__ import annotations

from pathlib import Path

from sound2image.evaluation.report import write_report
from tests.browser import open_page, save_screenshot
from tests.evaluation.report_data import ITEMS, SYSTEMS, documented_format, key_path, make_results, numbers_in

#: Settled when every <img> has finished (decoded or failed) and every <audio> has its metadata or an error.
SETTLED = """() => Array.from(document.images).every(i => i.complete)
    && Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error !== null)"""


def test_report_loads_cleanly_and_shows_the_numbers_of_results_json(tmp_path: Path) -> None:
    out = tmp_path / "evaluation"
    out.mkdir()
    results = make_results(out)
    report = write_report(results, out)
    with open_page(report.as_uri()) as (page, log):
        page.wait_for_function(SETTLED, timeout=10_000)
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])"
        )
        audio = page.evaluate(
            "Array.from(document.querySelectorAll('audio'))"
            ".map(a => [a.readyState, a.duration, a.error && a.error.code])"
        )
        shown = page.evaluate(
            "Array.from(document.querySelectorAll('[data-key]')).map(e => [e.dataset.key, e.textContent])"
        )
        visible = page.evaluate("document.querySelector('#metrics-table').getBoundingClientRect().height")
        save_screenshot(page, tmp_path, "evaluation-report.png")
        errors = list(log.errors)
        requests = list(log.requests)
    assert errors == []
    # everything else is embedded (data: URIs, which Chromium may or may not list as requests)
    assert [url for url in requests if not url.startswith("data:")] == [report.as_uri()]
    # 5 real images + the generated ones (the best-of system lacks one clip; the transformer has 2 seeds)
    generated = sum(len(seeds) for *_, seeds in SYSTEMS) * len(ITEMS) - 1
    assert len(images) == len(ITEMS) + generated + 1  # + the per-class plot
    assert all(width > 0 and height > 0 for _, width, height in images), images
    assert len(audio) == len(ITEMS)
    for state, duration, error in audio:
        assert error is None and state >= 1
        assert abs(duration - 10.0) < 1e-3  # the 10 s clips (FLAC at 16 kHz: the exact sample count)
    expected = numbers_in(results)
    assert {key_path(key) for key, _ in shown} == set(expected)
    assert len(shown) == len(expected)  # each number shown once
    for key, text in shown:
        assert text == documented_format(expected[key_path(key)]), key
    assert visible > 0
    assert (tmp_path / "evaluation-report.png").stat().st_size > 10_000
