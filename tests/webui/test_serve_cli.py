"""`sound2image serve`: its flags become the app's configuration (the server itself is not started)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sound2image.cli.main import main
from sound2image.webui import app as webapp
from sound2image.webui.jobs import ModelChoice


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the server start with a recorder of what would be served."""
    calls: list[dict[str, Any]] = []

    def fake_start(demo: Any, config: Any, block: bool = False) -> str:
        app = demo.sound2image
        calls.append(
            {
                "config": config,
                "block": block,
                "choices": list(app.models.choices.values()),
                "device": app.models.device,
                "dtype": app.models.dtype,
                "decoder_dtype": app.models.decoder_dtype,
                "compile": app.models.compile,
                "cache": os.environ.get("GRADIO_TEMP_DIR"),
            }
        )
        return "http://127.0.0.1:0/"

    monkeypatch.setattr(webapp, "start", fake_start)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    return calls


def test_defaults_bind_loopback_with_one_job_and_the_baseline(started, capsys) -> None:
    assert main(["serve"]) == 0
    (call,) = started
    config = call["config"]
    assert (config.host, config.port, config.share) == ("127.0.0.1", 7860, False)
    assert (config.concurrency, config.max_queue, config.out) == (1, 16, None)
    assert (config.limits.max_upload_mb, config.limits.max_minutes) == (50.0, 10.0)
    assert call["choices"] == [ModelChoice("SounDiff baseline", "soundiff")]
    assert call["block"] is True and (call["device"], call["dtype"]) == ("auto", "auto")
    assert call["decoder_dtype"] == "float32" and call["compile"] is False
    # Gradio's cache was a folder of this server's own, removed when it stopped
    assert Path(call["cache"]).name.startswith("sound2image-serve-") and not Path(call["cache"]).exists()
    assert "GRADIO_TEMP_DIR" not in os.environ
    assert "serving on http://127.0.0.1:7860" in capsys.readouterr().out


def test_every_flag_reaches_the_app(started, tmp_path: Path) -> None:
    args = ["serve", "--host", "0.0.0.0", "--port", "8080", "--share", "--model", "baseline"]
    args += [
        "--model",
        "transformer:runs/t",
        "--unet",
        "runs/u1",
        "--unet",
        "runs/u2",
        "--out",
        str(tmp_path),
    ]
    args += ["--concurrency", "2", "--max-queue", "5", "--max-upload-mb", "3", "--max-minutes", "0.5"]
    args += ["--device", "cpu", "--dtype", "fp32", "--decoder-dtype", "float16", "--compile"]
    assert main(args) == 0
    (call,) = started
    config = call["config"]
    assert (config.host, config.port, config.share, config.out) == ("0.0.0.0", 8080, True, str(tmp_path))
    assert (config.concurrency, config.max_queue) == (2, 5)
    assert (config.limits.max_upload_mb, config.limits.max_minutes) == (3.0, 0.5)
    assert [c.label for c in call["choices"]] == [
        "SounDiff baseline",
        "Image Transformer: runs/t",
        "SounDiff fine-tuned: runs/u1",
        "SounDiff fine-tuned: runs/u2",
    ]
    assert (call["device"], call["dtype"], call["decoder_dtype"]) == ("cpu", "fp32", "float16")
    assert call["compile"] is True
    assert config.hard_upload_cap_bytes == 13_000_000  # Gradio's own cap: our 3 MB + 10 MB


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "0"], "error: --port must be an integer in [1, 65535], got 0"),
        (["--concurrency", "0"], "error: --concurrency must be an integer >= 1, got 0"),
        (["--max-upload-mb", "-1"], "error: --max-upload-mb must be finite and > 0, got -1.0"),
        (["--max-minutes", "0"], "error: --max-minutes must be finite and > 0, got 0.0"),
        (["--model", "baseline", "--model", "baseline"], "error: --model: SounDiff baseline is given twice"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(started, capsys, flags: list[str], message: str) -> None:
    assert main(["serve", *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    assert started == []


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and "--max-upload-mb" in out
