"""The evaluation report (no browser): self-contained HTML, the grid's shape, escaping, and every number
shown equal to results.json in the documented format."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image
from scipy.signal import resample_poly

from sound2image.errors import UsageError
from sound2image.evaluation.report import format_number, make_key, parse_key, write_report
from tests.evaluation.report_data import (
    CLASSES,
    EVIL_BAD_ITEM,
    EVIL_CONDITION,
    EVIL_LABEL,
    ITEMS,
    PAIRING,
    SYSTEMS,
    Node,
    documented_format,
    key_path,
    make_results,
    numbers_in,
    parse_html,
)
from tests.paths import PSEUDO_ADVANCE


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Node]:
    """One report of the synthetic results with every row shown: (results, html text, tree)."""
    out = tmp_path_factory.mktemp("report")
    results = make_results(out)
    path = write_report(results, out)
    assert path == out / "report.html"
    text = path.read_text(encoding="utf-8")
    return results, text, parse_html(text)


def _data_uri(uri: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:([\w/+.-]+);base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:60]
    return match.group(1), base64.b64decode(match.group(2))


def _grid_rows(tree: Node) -> list[Node]:
    return tree.find("table", id="grid-table").find("tbody").find_all("tr")


# --- the number format and keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.123456, "0.1235"),
        (1.0, "1"),
        (0.5, "0.5"),
        (123456.7, "1.235e+05"),
        (1.5e-05, "1.5e-05"),
        (-0.000234567, "-0.0002346"),
        (69.3812, "69.38"),
        (12, "12"),
        (float("nan"), "nan"),
    ],
)
def test_format_number_is_four_significant_digits(value: float, text: str) -> None:
    assert format_number(value) == text


def test_keys_keep_slashes_inside_a_segment() -> None:
    key = make_key("reference", "real", f"ais:{PAIRING}", "value")
    assert key == "reference/real/ais:imagebind-audio%2Funclip-clip-image/value"
    assert make_key("metrics", "100%/x", "fid", "n") == "metrics/100%25%2Fx/fid/n"
    # the standard library's percent-decoding inverts it, and so does parse_key
    assert key_path("metrics/100%25%2Fx/fid/n") == ("metrics", "100%/x", "fid", "n")
    assert parse_key("metrics/100%25%2Fx/fid/n") == ["metrics", "100%/x", "fid", "n"]


# --- self-contained -------------------------------------------------------------------------------


def test_report_makes_no_external_reference(report: tuple[dict[str, Any], str, Node]) -> None:
    _, text, tree = report
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.IGNORECASE)
    assert "<script" not in text.lower()  # no script at all (the evil condition is escaped)
    for node in tree.iter():
        if "src" in node.attrs:
            assert node.attrs["src"].startswith("data:"), node.attrs["src"][:60]
        if "href" in node.attrs:
            assert node.attrs["href"].startswith(("#", "data:")), node.attrs["href"]
    policy = tree.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in policy


# --- the grid -------------------------------------------------------------------------------------


def test_grid_has_one_row_per_clip_and_one_column_per_system(
    report: tuple[dict[str, Any], str, Node],
) -> None:
    _, _, tree = report
    table = tree.find("table", id="grid-table")
    headers = [th.text() for th in table.find("thead").find_all("th")]
    assert len(headers) == 3 + len(SYSTEMS)
    assert headers[:3] == ["Class", "Audio", "Real image"]
    for header, (_, label, condition, flag, *_rest) in zip(headers[3:], SYSTEMS, strict=True):
        assert header.startswith(label)  # the raw label, shown as text (escaped in the source)
        assert (EVIL_CONDITION in header) == (condition is not None)
        assert ("†" in header) == flag
    rows = _grid_rows(tree)
    assert len(rows) == len(ITEMS)
    for row, (label, stem) in zip(rows, ITEMS, strict=True):
        cells = row.find_all("td")
        assert len(cells) == 3 + len(SYSTEMS)
        assert cells[0].text() == f"{label}{label}/{stem}"
        assert len(cells[1].find_all("audio")) == 1
        assert len(cells[2].find_all("img")) == 1
        for cell, (sid, *_rest, seeds) in zip(cells[3:], SYSTEMS, strict=True):
            if sid == "runs/soundiff-s+cond" and stem == "00069":
                assert cell.text() == "not generated" and not cell.find_all("img")
            else:
                assert len(cell.find_all("img")) == len(seeds)
                assert [c.text() for c in cell.find_all("figcaption")] == [f"seed {s}" for s in seeds]
    assert tree.find(id="rows-shown").text() == "5" and tree.find(id="rows-total").text() == "5"


def test_max_rows_takes_clips_in_turn_from_each_class(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    tree = parse_html(write_report(results, tmp_path, max_rows=3).read_text(encoding="utf-8"))
    rows = _grid_rows(tree)
    # 3 rows of 2 airport + 2 beach + 1 forest: the first clip of each class, in the results' order
    assert [r.find_all("td")[0].find("div").text() for r in rows] == [
        "airport/00001",
        "beach/00017",
        "forest/00069",
    ]
    assert tree.find(id="rows-shown").text() == "3" and tree.find(id="rows-total").text() == "5"
    rows = _grid_rows(parse_html(write_report(results, tmp_path, max_rows=4).read_text(encoding="utf-8")))
    assert [r.find_all("td")[0].find("div").text() for r in rows] == [
        "airport/00001",
        "airport/00002",
        "beach/00017",
        "forest/00069",
    ]


def test_audio_is_the_clip_as_16_khz_mono_flac(report: tuple[dict[str, Any], str, Node]) -> None:
    _, _, tree = report
    uri = _grid_rows(tree)[0].find("audio").attrs["src"]
    mime, data = _data_uri(uri)
    assert mime == "audio/flac"
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float64")
    assert rate == 16000 and samples.ndim == 1
    original, original_rate = soundfile.read(PSEUDO_ADVANCE / "sound/airport/00001.wav", dtype="float64")
    assert original_rate == 22050 and original.shape == (220500,)  # a 10 s clip at 22.05 kHz
    assert samples.shape == (160000,)  # 10 s at 16 kHz
    # An independent resampling (scipy's polyphase filter, 22050 * 320/441 = 16000) differs only in the
    # filters' transition bands near 8 kHz and by 16-bit rounding: the signals correlate almost perfectly.
    reference = resample_poly(original, 320, 441)
    assert np.corrcoef(samples, reference)[0, 1] > 0.999


def test_images_are_embedded_small_ones_losslessly(report: tuple[dict[str, Any], str, Node]) -> None:
    results, _, tree = report
    cells = _grid_rows(tree)[0].find_all("td")
    mime, data = _data_uri(cells[2].find("img").attrs["src"])
    assert mime == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (160, 160)  # the 512×512 photo shrunk to 160 px
    # the 32×32 grayscale images (last system) are embedded as PNG with the same pixels
    out = Path(results["items"][0]["images"]["baseline"][0]["path"])  # relative to the out dir
    assert not out.is_absolute()
    for image, entry in zip(
        cells[-1].find_all("img"), results["items"][0]["images"]["transformer:runs/it/model"], strict=True
    ):
        mime, data = _data_uri(image.attrs["src"])
        assert mime == "image/png"
        shown = np.asarray(Image.open(io.BytesIO(data)))
        assert shown.shape == (32, 32)
        assert image.attrs["width"] == "128" and image.attrs["height"] == "128"
        assert entry["seed"] in (1, 2)
    # the 200×150 baseline image: shrunk to 160×120 and shown at 128×96 (the aspect ratio kept)
    image = cells[3].find("img")
    assert Image.open(io.BytesIO(_data_uri(image.attrs["src"])[1])).size == (160, 120)
    assert (image.attrs["width"], image.attrs["height"]) == ("128", "96")


def test_lossless_pixels_equal_the_cache_png(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    image = _grid_rows(tree)[0].find_all("td")[-1].find_all("img")[0]
    shown = np.asarray(Image.open(io.BytesIO(_data_uri(image.attrs["src"])[1])))
    path = tmp_path / results["items"][0]["images"]["transformer:runs/it/model"][0]["path"]
    np.testing.assert_array_equal(shown, np.asarray(Image.open(path)))


# --- numbers --------------------------------------------------------------------------------------


def test_every_number_shown_equals_results_json(report: tuple[dict[str, Any], str, Node]) -> None:
    results, _, tree = report
    shown = {key_path(n.attrs["data-key"]): n.text() for n in tree.iter() if "data-key" in n.attrs}
    expected = numbers_in(results)
    assert set(shown) == set(expected)  # every number of results.json is shown, and nothing else
    # 3 systems x 6 metrics - the absent FID, 5 reference estimates, 3 systems x 3 classes; 4 fields each
    assert len(shown) == 4 * (3 * 6 - 1 + 5 + 3 * 3)
    for path, value in expected.items():
        assert shown[path] == documented_format(value), path
        if isinstance(value, float):
            # 4 significant digits: at most half a unit in the 4th digit, 5e-4 relative
            assert float(shown[path]) == pytest.approx(value, rel=5e-4, abs=0.0), path
        else:
            assert int(shown[path]) == value


def test_metrics_table_rows_and_dash_for_absent_metric(report: tuple[dict[str, Any], str, Node]) -> None:
    results, _, tree = report
    table = tree.find("table", id="metrics-table")
    headers = [th.text() for th in table.find("thead").find_all("th")]
    assert headers == ["System", "FID ↓", "KID ↓", "AIC ↑", "AIC@3 ↑", "AIS ↑", "IIS ↑"]
    rows = table.find("tbody").find_all("tr")
    assert len(rows) == len(SYSTEMS) + 2  # + real (ceiling) and shuffled (floor)
    transformer = rows[2].find_all("td")
    assert transformer[0].text() == "\u2014"  # no FID for the transformer
    assert rows[3].find("th").text().startswith("Real images (ceiling)")
    assert PAIRING in rows[3].find("th").text()
    assert rows[4].find("th").text().startswith("Shuffled pairs (floor)")
    ais = rows[4].find_all("td")[4]  # the shuffled pairs' AIS sits in the AIS column
    value = results["reference"]["shuffled"][f"ais:{PAIRING}"]["value"]
    assert ais.find_all("span", **{"data-key": f"reference/shuffled/ais:{PAIRING.replace('/', '%2F')}/value"})
    assert ais.text().startswith(format(value, ".4g"))
    # "value [low, high] N = n"
    cell = rows[0].find_all("td")[2].text()
    aic = results["metrics"]["baseline"]["aic"]
    assert cell == f"1 [0.5, 1] N = {aic['n']}"


def test_best_of_n_is_flagged(report: tuple[dict[str, Any], str, Node]) -> None:
    _, text, tree = report
    rows = tree.find("table", id="metrics-table").find("tbody").find_all("tr")
    flagged = [r.find("th").text().endswith("†") for r in rows[:3]]
    assert flagged == [flag for _, _, _, flag, *_rest in SYSTEMS]
    assert "Best of N: SounDiff-S + condition (N = 4)" in tree.text()
    assert "AIS is therefore optimistic" in tree.text()


def test_data_text_is_escaped(report: tuple[dict[str, Any], str, Node]) -> None:
    _, text, tree = report
    for raw in (EVIL_LABEL, EVIL_CONDITION, EVIL_BAD_ITEM):
        assert raw not in text  # never written as markup ...
        assert raw in tree.text()  # ... but shown as text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert all(b.text() != "bold" for b in tree.find_all("b"))
    assert "sound2image evaluate --data DATA --systems baseline --out report/ &amp; &lt;more&gt;" in text


def test_per_class_plot_is_an_inline_png(report: tuple[dict[str, Any], str, Node]) -> None:
    _, _, tree = report
    plot = tree.find("img", **{"class": "plot"})
    mime, data = _data_uri(plot.attrs["src"])
    assert mime == "image/png"
    width, height = Image.open(io.BytesIO(data)).size
    assert width >= 600 and height >= 380  # 6 x 3.8 inches at 100 dpi at least
    classes = [
        tr.find("th").text() for tr in tree.find("table", id="per-class-table").find("tbody").find_all("tr")
    ]
    assert classes == CLASSES


def test_settings_revisions_and_bad_items_are_shown(report: tuple[dict[str, Any], str, Node]) -> None:
    _, _, tree = report
    text = tree.text()
    assert "sound2image 0.1.0" in text
    assert '"revision": "abc123"' in tree.find("table", id="systems-table").text()
    assert '"guidance_scale": 3.0' in text
    assert [li.text() for li in tree.find("ul", id="bad-items-list").find_all("li")] == [
        f"{EVIL_BAD_ITEM}: not audio (unrecognised format)"
    ]
    assert "lower is better" in text and "0.5 = chance" in text
    notes = [li.text() for li in tree.find("ul", id="metric-notes").find_all("li")]
    assert notes == [
        "FID: CLIP image features, 5 real, 5 generated <small N>",
        "AIS: circular for SounDiff",
        "Ceiling and floor: real = own audio, shuffled = a derangement",
    ]


# --- missing files and bad input ------------------------------------------------------------------


def test_unreadable_files_are_noted_and_the_report_still_written(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    missing = tmp_path / results["items"][0]["images"]["baseline"][0]["path"]
    missing.unlink()
    results["items"][1]["audio"] = str(tmp_path / "nowhere.wav")
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    rows = _grid_rows(tree)
    assert not rows[0].find_all("td")[3].find_all("img")
    assert f"{missing}: image file not found" in rows[0].find_all("td")[3].text()
    assert not rows[1].find_all("audio")
    problems = [li.text() for li in tree.find("ul", id="report-problems").find_all("li")]
    assert len(problems) == 2
    assert problems[0] == f"{missing}: image file not found"
    assert "nowhere.wav" in problems[1]


def test_optional_parts_may_be_absent(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    for part in ("reference", "per_class_aic", "metric_notes", "bad_items"):
        del results[part]
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    assert len(tree.find("table", id="metrics-table").find("tbody").find_all("tr")) == len(SYSTEMS)
    assert not tree.find_all("img", **{"class": "plot"})
    assert "None: every item was scored." in tree.text()


@pytest.mark.parametrize("max_rows", [0, -1, 2.5, True])
def test_max_rows_must_be_a_positive_integer(tmp_path: Path, max_rows: Any) -> None:
    with pytest.raises(UsageError, match=r"^max_rows must be") as caught:
        write_report(make_results(tmp_path), tmp_path, max_rows=max_rows)
    assert caught.value.parameters == ("max_rows",)
    assert not (tmp_path / "report.html").exists()


def test_results_must_be_an_evaluation(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    with pytest.raises(UsageError, match=r"^results is not a sound2image evaluation \(format 'other'"):
        write_report({**results, "format": "other"}, tmp_path)
    with pytest.raises(UsageError, match=r"^results has version 2; this sound2image reads version 1"):
        write_report({**results, "version": 2}, tmp_path)
    bad = {**results, "metrics": {**results["metrics"], "baseline": {"fid": {"value": 1.0}}}}
    with pytest.raises(UsageError, match=r"^results\['metrics'\]\['baseline'\]\['fid'\] is not an Estimate"):
        write_report(bad, tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_a_second_report_replaces_the_first(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    first = write_report(results, tmp_path).read_bytes()
    results["metrics"]["baseline"]["aic"] = {"value": 0.25, "low": 0.125, "high": 0.5, "n": 5}
    second = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert second.encode() != first
    assert "0.25 [0.125, 0.5] N = 5" in parse_html(second).text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "report.html"]  # no partial file left


# --- settings that change the page ----------------------------------------------------------------


def test_interval_level_and_k_come_from_the_settings(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    results["settings"]["bootstrap"]["level"] = 0.9
    results["settings"]["k"] = 5
    for metrics in results["metrics"].values():
        metrics["aic@5"] = metrics.pop("aic@3")
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    headers = [th.text() for th in tree.find("table", id="metrics-table").find("thead").find_all("th")]
    assert headers[4] == "AIC@5 ↑"
    assert "its 90 % bootstrap interval" in tree.text() and "95 %" not in tree.text()
    # the real images' aic@3 is not the run's AIC@k: it gets its own column
    assert headers[7:] == ["AIC@3 ↑"]
    # without settings.k the AIC@k column is named after the metrics' own aic@ key
    del results["settings"]["k"]
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    assert [th.text() for th in tree.find("table", id="metrics-table").find("thead").find_all("th")][
        4
    ] == "AIC@5 ↑"


def test_each_pairing_of_the_references_gets_its_own_row(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    results["reference"]["real"]["ais:transformer-scorer:runs/it"] = {
        "value": 0.75,
        "low": 0.5,
        "high": 1.0,
        "n": 5,
    }
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    rows = tree.find("table", id="metrics-table").find("tbody").find_all("tr")
    heads = [r.find("th").text() for r in rows[len(SYSTEMS) :]]
    assert heads == [
        "Real images (ceiling)",  # the classifier's AIC and AIC@3, no pairing
        f"Real images (ceiling)AIS in {PAIRING}",
        "Real images (ceiling)AIS in transformer-scorer:runs/it",
        f"Shuffled pairs (floor)AIS in {PAIRING}",  # with the classifier's AIC: one row
    ]
    assert rows[len(SYSTEMS) + 2].find_all("td")[4].text() == "0.75 [0.5, 1] N = 5"


def test_long_clips_are_cropped_to_30_seconds(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    rate = 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(31 * rate) / rate)  # 31 s at 8 kHz
    soundfile.write(tmp_path / "long.wav", tone, rate, subtype="PCM_16")
    results["items"][0]["audio"] = str(tmp_path / "long.wav")
    tree = parse_html(write_report(results, tmp_path).read_text(encoding="utf-8"))
    cell = _grid_rows(tree)[0].find_all("td")[1]
    samples, embedded_rate = soundfile.read(io.BytesIO(_data_uri(cell.find("audio").attrs["src"])[1]))
    assert embedded_rate == 16000 and samples.shape == (30 * 16000,)
    assert cell.text() == "first 30 s"
    # a 440 Hz tone stays a 440 Hz tone: the spectrum's peak is at bin 440 * 30 (0.0333 Hz bins)
    assert np.argmax(np.abs(np.fft.rfft(samples))) == 440 * 30
