"""The page's handlers without a browser: values -> files served from Gradio's cache, --out copies,
errors as one line, no state left behind."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from sound2image.errors import NotAudioError, UsageError
from sound2image.outputs import read_png_metadata
from sound2image.webui.app import CANCELLED, CANCELLING, MODEL_SCHEDULER, ServeConfig, WebApp, page_error
from sound2image.webui.jobs import ModelCache, model_choices
from tests.webui.conftest import SIZE, STEPS


def _values(sound: str, model: str, **changes: object) -> dict:
    values = dict(
        sound=sound, more=None, weights="", model=model, prompt="", negative_prompt="", image=None,
        image_weight=0.5, steps=STEPS, guidance_scale=10.0, noise_level=0, scheduler=MODEL_SCHEDULER,
        size=SIZE, num_images=2, candidates=1, seed="random", storyboard=False, window=5.0, hop=0.0,
    )  # fmt: skip
    values.update(changes)
    return values


@pytest.fixture
def app(tiny_dir: Path, tmp_path: Path) -> WebApp:
    cache = ModelCache(model_choices([str(tiny_dir)]), device="cpu", dtype="float32")
    web = WebApp(cache, ServeConfig(temp_root=str(tmp_path / "requests"), out=str(tmp_path / "out")))
    web.cache_dir = str(tmp_path / "gradio")
    return web


def test_generate_serves_copies_keeps_out_copies_and_leaves_nothing(app: WebApp, wavs, tmp_path) -> None:
    model = app.models.labels[0]
    gallery, files, seeds, status = app.generate(**_values(str(wavs[0]), model))
    first, second = (int(s) for s in seeds.split())
    assert second == first + 1 and status == "2 image(s)"  # "random" resolved once, then +1 per image
    assert [Path(f).name for f in files] == [f"00017_seed{first}.png", f"00017_seed{second}.png"]
    assert [path for path, _ in gallery] == files
    for path in files:  # served from Gradio's cache, each request in a folder of its own
        assert Path(path).parent.parent == tmp_path / "gradio"
        assert read_png_metadata(path)["seed"] in (first, second)
    (kept,) = list((tmp_path / "out").iterdir())  # --out: one folder per request
    assert sorted(p.name for p in kept.iterdir()) == sorted(Path(f).name for f in files)
    assert list((tmp_path / "requests").iterdir()) == [] and app.running() == 0


def test_a_emptied_number_box_and_a_bad_file_are_one_line(app: WebApp, wavs, bad_files, tmp_path) -> None:
    model = app.models.labels[0]
    with pytest.raises(UsageError, match=r"^steps: a number is needed$"):
        app.generate(**_values(str(wavs[0]), model, steps=None))
    with pytest.raises(NotAudioError, match=r"^notes\.wav: not a recognised audio format"):
        app.generate(**_values(str(bad_files["text"]), model))
    assert app.running() == 0 and list((tmp_path / "requests").iterdir()) == []


def _generate_in_background(
    app: WebApp, wav: Path, session: str, release: threading.Event
) -> tuple[threading.Thread, list]:
    """Start a long Generate (60 images) for ``session``; return once its first step has reported. Each
    progress report then waits for ``release``: the job cannot reach its next step until it is set."""
    started, answers = threading.Event(), []

    def progress(*_: object, **__: object) -> None:
        started.set()
        assert release.wait(60)

    def run() -> None:
        values = _values(str(wav), app.models.labels[0], num_images=60)
        answers.append(app.generate(**values, session=session, progress=progress))

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60)  # a generous bound for the tiny model's first step on a loaded machine
    return thread, answers


@pytest.mark.parametrize("job_held", [False, True])
def test_cancel_answers_the_jobs_final_state_once_it_has_stopped(
    app: WebApp, wavs, tmp_path, job_held: bool
) -> None:
    """Cancel's status and Generate's may reach the page in either order: both say "cancelled" once the
    job has stopped, and Cancel says "cancelling…" only when the job outlives its wait."""
    # held: Cancel's wait runs out while the job is held; free: a generous wait for one tiny step
    app.config = replace(app.config, cancel_wait_seconds=0.2 if job_held else 60.0)
    release = threading.Event()
    if not job_held:
        release.set()
    assert app.cancel("tab-1") == "nothing to cancel"
    thread, answers = _generate_in_background(app, wavs[0], "tab-1", release)
    assert app.cancel("tab-2") == "nothing to cancel"  # another tab's Cancel leaves this job alone
    assert app.running() == 1
    answer = app.cancel("tab-1")
    release.set()
    thread.join(60)
    # held: the job sits in a progress report until after Cancel has answered, so it is still running
    assert answer == (CANCELLING if job_held else CANCELLED) and not thread.is_alive()
    assert answers == [([], [], "", CANCELLED)]  # and no images of the cancelled job
    assert app.running() == 0 and list((tmp_path / "requests").iterdir()) == []
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_page_errors_are_one_escaped_line_without_traceback() -> None:
    import gradio as gr

    error = page_error(UsageError("a <b>.wav: bad\nsecond line"))
    assert isinstance(error, gr.Error) and error.message == "a &lt;b&gt;.wav: bad second line"
    error = page_error(RuntimeError("boom"))
    assert error.message == "RuntimeError: boom" and error.print_exception is False
