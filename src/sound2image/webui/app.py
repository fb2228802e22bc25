"""The Gradio page of ``sound2image serve``: it builds the page and wires its events to
:mod:`sound2image.webui.jobs` (which turns the page's values into library calls).

Each press of "Generate" runs in its own temporary folder (:func:`~sound2image.webui.jobs.request_folder`),
removed before the response is sent: the PNGs are first copied into Gradio's file cache (each into a
folder of its own, never shared with another request), which serves them as they are — the download is
our file, with its metadata, not a re-encoded image. Every error reaches the page as one line
(``gr.Error`` with the library's message); a traceback only goes to the server's log.
"""

import functools
import html
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image.errors import MissingExtraError, Sound2ImageError, UsageError
from sound2image.webui.jobs import (
    RANDOM_SEED,
    GenerateRequest,
    JobCancelled,
    Limits,
    ModelCache,
    keep_copies,
    parse_weights,
    regenerate_png,
    request_folder,
    run_job,
)

LOG = logging.getLogger("sound2image.webui")
#: The scheduler choice that keeps the model's own.
MODEL_SCHEDULER = "model default"


def import_gradio() -> Any:
    """``gradio``, or a one-line MissingExtraError naming the extra to install."""
    try:
        import gradio
    except ImportError:
        raise MissingExtraError('the web app needs Gradio: pip install "sound2image[app]"') from None
    return gradio


@dataclass
class PageDefaults:
    """The values the page starts with (SounDiff's library defaults; ``size`` 0 = the model's own)."""

    steps: int = 20
    guidance_scale: float = 10.0
    noise_level: int = 0
    size: int = 0
    num_images: int = 1
    candidates: int = 1
    window: float = 5.0
    hop: float = 0.0


@dataclass
class ServeConfig:
    """How the app serves: address, queue, limits and where results may be written.

    Attributes:
        host, port, share: Gradio's ``server_name``, ``server_port`` and ``share`` (a public link; off).
        concurrency: jobs running at once (Gradio's ``default_concurrency_limit``; 1 suits one GPU).
        max_queue: requests waiting at most; more are refused by the queue.
        limits: upload size, audio length and images per request.
        out: a folder that keeps a copy of every result (None: results live only in temporary folders).
        temp_root: where per-request folders are made (None: the system's temp folder).
        cache_seconds: Gradio's ``delete_cache``: uploads and served files older than this are deleted
            (checked as often).
        cancel_wait_seconds: how long Cancel waits for the job to stop (it stops at its next denoising or
            pixel step) before answering; a job still running then is reported as "cancelling…".
        defaults: the page's starting values.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 1
    max_queue: int = 16
    limits: Limits = field(default_factory=Limits)
    out: str | None = None
    temp_root: str | None = None
    cache_seconds: int = 3600
    cancel_wait_seconds: float = 30.0
    defaults: PageDefaults = field(default_factory=PageDefaults)

    @property
    def hard_upload_cap_bytes(self) -> int:
        """Gradio's own ``max_file_size``: well above our limit, so a file between the two reaches our
        check and gets our message, while a much larger one is refused before it fills the disk."""
        limit = self.limits.max_upload_mb * 1e6
        return int(max(2 * limit, limit + 10e6))


def page_error(error: BaseException) -> Exception:
    """The ``gr.Error`` the page shows for ``error``: our one line (HTML-escaped), never a traceback."""
    gr = import_gradio()
    if isinstance(error, Sound2ImageError):
        message = str(error)
    else:
        LOG.error("request failed", exc_info=error)
        message = f"{type(error).__name__}: {error}"
    line = " ".join(message.split()) or type(error).__name__
    return gr.Error(html.escape(line), print_exception=False)


def _in_page(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``handler`` and turn any exception into :func:`page_error`."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        gr = import_gradio()
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - the page's one error boundary
            raise page_error(error) from None

    return wrapped


CANCELLED = "cancelled"
CANCELLING = "cancelling… (the job stops at its next step)"


@dataclass
class _RunningJob:
    """A running request's two signals: ``cancel`` (set by Cancel) and ``ended`` (set when it returns)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)


class WebApp:
    """The app's state (models, limits, the running requests' cancel and end signals) and its event handlers.

    Nothing here holds a user's data after their request: a request's files live in its own folder, its
    signals are dropped when it ends.
    """

    def __init__(self, models: ModelCache, config: ServeConfig | None = None) -> None:
        self.models = models
        self.config = config or ServeConfig()
        self._jobs: dict[str, _RunningJob] = {}
        self._jobs_lock = threading.Lock()
        self.cache_dir: str | None = None  # Gradio's file cache, known once the page is built

    # ------------------------------------------------------------------ helpers

    def publish(self, files: Sequence[Path]) -> list[str]:
        """Copy ``files`` into Gradio's cache, each request's files into a fresh folder, and return the
        copies' paths (Gradio serves these as they are; the request's own folder can then go)."""
        if not files:
            return []
        target = Path(self.cache_dir or ".") / f"sound2image-{uuid.uuid4().hex}"
        target.mkdir(parents=True)
        return [str(shutil.copy2(f, target / f.name)) for f in files]

    def _start_job(self, session: str) -> _RunningJob:
        with self._jobs_lock:
            job = _RunningJob()
            self._jobs[session] = job
            return job

    def _end_job(self, session: str, job: _RunningJob) -> None:
        with self._jobs_lock:
            if self._jobs.get(session) is job:
                del self._jobs[session]
        job.ended.set()

    def running(self) -> int:
        """Requests running now."""
        with self._jobs_lock:
            return len(self._jobs)

    # ------------------------------------------------------------------ handlers

    def generate(
        self,
        sound: str | None,
        more: Sequence[str] | None,
        weights: str,
        model: str,
        prompt: str,
        negative_prompt: str,
        image: str | None,
        image_weight: float,
        steps: float,
        guidance_scale: float,
        noise_level: float,
        scheduler: str,
        size: float,
        num_images: float,
        candidates: float,
        seed: str,
        storyboard: bool,
        window: float,
        hop: float,
        session: str = "",
        progress: Callable[..., Any] | None = None,
    ) -> tuple[list[tuple[str, str]], list[str], str, str]:
        """One "Generate": returns (gallery items, PNG paths to download, seeds used, status line)."""
        sounds = [s for s in [sound, *(more or [])] if s]
        request = GenerateRequest(
            model=model,
            sounds=[str(s) for s in sounds],
            weights=parse_weights(weights, len(sounds)),
            prompt=prompt or "",
            negative_prompt=negative_prompt or None,
            image=image or None,
            image_weight=_number("image_weight", image_weight),
            steps=int(_number("steps", steps)),
            guidance_scale=_number("guidance_scale", guidance_scale),
            noise_level=int(_number("noise_level", noise_level)),
            scheduler=None if scheduler in (None, "", MODEL_SCHEDULER) else scheduler,
            size=int(_number("size", size)) or None,
            num_images=int(_number("num_images", num_images)),
            candidates=int(_number("candidates", candidates)),
            seed=seed if seed not in (None, "") else RANDOM_SEED,
            storyboard=bool(storyboard),
            window=_number("window", window),
            hop=_number("hop", hop) or None,
        )

        def report(done: int, total: int, text: str) -> None:
            if progress is not None:
                progress((done, total), desc=text)

        key = session or uuid.uuid4().hex
        job = self._start_job(key)
        try:
            with request_folder(self.config.temp_root) as folder:
                result = run_job(request, self.models, folder, self.config.limits, report, job.cancel)
                keep_copies(result.files, self.config.out)
                served = self.publish(result.files)
        except JobCancelled:
            return [], [], "", CANCELLED
        finally:
            self._end_job(key, job)
        captions = [i.caption for i in result.images] + ["contact sheet"] * len(result.sheets)
        gallery = list(zip(served, captions, strict=True))
        seeds = " ".join(str(s) for s in result.seeds)
        status = f"{len(result.images)} image(s)" + (
            f" and {len(result.sheets)} contact sheet(s)" if result.sheets else ""
        )
        return gallery, served, seeds, status

    def cancel(self, session: str) -> str:
        """Stop the session's running job at its next step; the status line to show.

        Waits up to ``config.cancel_wait_seconds`` for the job to end, so the answer is the job's final
        state ("cancelled") whichever of the two handlers' answers reaches the page last: Gradio runs
        Cancel outside the queue and cancels the Generate event, whose own answer may or may not arrive.
        """
        with self._jobs_lock:
            job = self._jobs.get(session)
        if job is None:
            return "nothing to cancel"
        job.cancel.set()
        return CANCELLED if job.ended.wait(self.config.cancel_wait_seconds) else CANCELLING

    def regenerate(
        self, png: str | None, model: str, sound: str | None
    ) -> tuple[list[tuple[str, str]], list[str], str]:
        """One "Regenerate": (gallery item, PNG path, status saying whether the pixels are identical)."""
        import numpy as np
        from PIL import Image

        if not png:
            raise page_error(Sound2ImageError("no PNG given: drop a PNG made by sound2image"))
        with request_folder(self.config.temp_root) as folder:
            drawn = regenerate_png(png, self.models, folder, model, sound, self.config.limits)
            with Image.open(png) as given, Image.open(drawn.path) as again:
                same = given.size == again.size and np.array_equal(np.asarray(given), np.asarray(again))
            keep_copies([drawn.path], self.config.out)
            served = self.publish([drawn.path])
        status = "identical pixels to the PNG given" if same else "the pixels differ from the PNG given"
        return [(served[0], drawn.caption)], served, status


def build_app(models: ModelCache, config: ServeConfig | None = None) -> Any:
    """The Gradio ``Blocks`` page over ``models`` (queue set up; call :func:`start` to serve it)."""
    gr = import_gradio()
    from sound2image.diffusion.pipeline import SCHEDULERS

    app = WebApp(models, config)
    config, d = app.config, app.config.defaults
    labels = models.labels
    cache_age = (config.cache_seconds, config.cache_seconds)
    with gr.Blocks(title="sound2image", delete_cache=cache_age, analytics_enabled=False) as demo:
        gr.Markdown(
            "## sound2image\nUpload or record a sound and get a picture. Each download is a PNG that "
            "holds every setting: drop it on *Regenerate from PNG* to draw it again."
        )
        with gr.Tab("Generate"), gr.Row():
            with gr.Column():
                sound = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Sound", elem_id="sound"
                )
                with gr.Accordion("Blend more sounds", open=False):
                    more = gr.File(label="More sounds", file_count="multiple", type="filepath")
                    weights = gr.Textbox(label="Weights, one per sound (blank: equal)", placeholder="0.7 0.3")
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
                prompt = gr.Textbox(label="Prompt", placeholder="optional")
                negative = gr.Textbox(label="Negative prompt", placeholder="optional")
                with gr.Accordion("Reference image", open=False):
                    image = gr.Image(type="filepath", label="Reference image", sources=["upload"])
                    image_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Image weight")
                with gr.Row():
                    seed = gr.Textbox(value=RANDOM_SEED, label="Seed (a number or random)", elem_id="seed")
                    num_images = gr.Number(
                        value=d.num_images, precision=0, minimum=1, label="Images", elem_id="num-images"
                    )
                with gr.Accordion("Settings", open=False):
                    steps = gr.Number(value=d.steps, precision=0, minimum=1, label="Steps")
                    guidance = gr.Number(value=d.guidance_scale, minimum=0, label="Guidance")
                    noise = gr.Number(
                        value=d.noise_level, precision=0, minimum=0, maximum=999, label="Noise level"
                    )
                    scheduler = gr.Dropdown(
                        [MODEL_SCHEDULER, *SCHEDULERS], value=MODEL_SCHEDULER, label="Scheduler"
                    )
                    size = gr.Number(
                        value=d.size, precision=0, minimum=0, step=8, label="Size (px, 0: model's own)"
                    )
                    candidates = gr.Number(
                        value=d.candidates, precision=0, minimum=1, label="Candidates (best of N)"
                    )
                with gr.Accordion("Storyboard (long sounds)", open=False):
                    storyboard = gr.Checkbox(
                        value=False, label="Storyboard: one frame per window", elem_id="storyboard"
                    )
                    window = gr.Number(value=d.window, minimum=0.1, label="Window (s)", elem_id="window")
                    hop = gr.Number(value=d.hop, minimum=0, label="Hop (s, 0: the window)", elem_id="hop")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Cancel", elem_id="cancel")
            with gr.Column():
                gallery = gr.Gallery(label="Images", elem_id="gallery", columns=3, format="png")
                seeds_used = gr.Textbox(label="Seeds used", interactive=False, elem_id="seeds")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                files = gr.File(
                    label="Download PNGs (with settings)",
                    file_count="multiple",
                    elem_id="downloads",
                    interactive=False,
                )
        with gr.Tab("Regenerate from PNG"), gr.Row():
            with gr.Column():
                png = gr.File(
                    label="A PNG made by sound2image",
                    file_types=[".png"],
                    type="filepath",
                    elem_id="png-in",
                )
                regen_model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="regen-model")
                regen_sound = gr.Audio(
                    sources=["upload"],
                    type="filepath",
                    label="Its sound (Image Transformer only)",
                    elem_id="regen-sound",
                )
                again = gr.Button("Regenerate", variant="primary", elem_id="regenerate")
            with gr.Column():
                regen_gallery = gr.Gallery(label="Redrawn", elem_id="regen-gallery", format="png")
                regen_status = gr.Textbox(label="Status", interactive=False, elem_id="regen-status")
                regen_files = gr.File(
                    label="Download", file_count="multiple", elem_id="regen-downloads", interactive=False
                )

        @_in_page
        def on_generate(
            sound: Any, more: Any, weights: Any, model: Any, prompt: Any, negative: Any, image: Any,
            image_weight: Any, steps: Any, guidance: Any, noise: Any, scheduler: Any, size: Any,
            num_images: Any, candidates: Any, seed: Any, storyboard: Any, window: Any, hop: Any,
            request: gr.Request, progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way
        ) -> Any:  # fmt: skip
            return app.generate(
                sound, more, weights, model, prompt, negative, image, image_weight, steps, guidance,
                noise, scheduler, size, num_images, candidates, seed, storyboard, window, hop,
                session=_session(request), progress=progress,
            )  # fmt: skip

        @_in_page
        def on_upload(path: str | None) -> None:
            if path:  # refused as soon as it is dropped, with the message Generate would give
                app.config.limits.check_audio(path)

        @_in_page
        def on_cancel(request: gr.Request) -> str:
            return app.cancel(_session(request))

        @_in_page
        def on_regenerate(png_path: str | None, choice: str, audio: str | None) -> Any:
            return app.regenerate(png_path, choice, audio)

        inputs = [sound, more, weights, model, prompt, negative, image, image_weight, steps, guidance, noise]
        inputs += [scheduler, size, num_images, candidates, seed, storyboard, window, hop]
        sound.upload(on_upload, sound, None, concurrency_limit=None, show_progress="hidden")
        event = run.click(on_generate, inputs, [gallery, files, seeds_used, status], api_name="generate")
        stop.click(on_cancel, None, status, cancels=[event], queue=False, api_name="cancel")
        again.click(
            on_regenerate,
            [png, regen_model, regen_sound],
            [regen_gallery, regen_files, regen_status],
            api_name="regenerate",
        )
    app.cache_dir = str(gallery.GRADIO_CACHE)
    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.max_queue)
    demo.sound2image = app  # the handlers' state, for tests and the load check
    return demo


def _number(name: str, value: Any) -> float:
    """A number box's value; an emptied box is a one-line UsageError naming the setting."""
    if value is None or value == "":
        raise UsageError(f"{name}: a number is needed", parameters=[name])
    return float(value)


def _session(request: Any) -> str:
    """The page session's id (one per browser tab)."""
    return str(getattr(request, "session_hash", None) or "")


def start(demo: Any, config: ServeConfig, block: bool = False) -> str:
    """Serve ``demo`` (:func:`build_app`) on ``config.host:config.port``; return its local URL. With
    ``block`` False the server runs in the background (``demo.close()`` stops it)."""
    demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        prevent_thread_lock=not block,
        max_file_size=config.hard_upload_cap_bytes,
        show_error=False,
        quiet=True,
        ssr_mode=False,
    )
    return str(demo.local_url)
