"""`sound2image serve`: the web app (Gradio) over the library — record or upload a sound, get an image.

Thin layer over :mod:`sound2image.webui`: flags -> :class:`~sound2image.webui.app.ServeConfig` and the
model list, then serve until interrupted. Gradio is the ``app`` extra (``pip install "sound2image[app]"``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from sound2image.devices import DECODER_DTYPES, DTYPES

SERVE_EPILOG = """\
Examples:
  sound2image serve                                   (the baseline on http://127.0.0.1:7860)
  sound2image serve --unet runs/soundiff-s --model transformer:runs/transformer/model
  sound2image serve --port 8080 --concurrency 2 --max-queue 32 --out kept/

Every model in the list loads once, on its first use. Uploads over --max-upload-mb, sounds over
--max-minutes and files that are not audio are refused in the page with a one-line message. Each
request works in its own temporary folder, removed after the response; only --out keeps copies.
--share asks Gradio for a public link: anyone with it can use your machine.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command."""
    parser = subparsers.add_parser(
        "serve",
        help="the web app: record or upload a sound, get an image (needs the [app] extra)",
        description="Serve a web page (Gradio) that turns uploaded or recorded sounds into images.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio link (off)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model of the list: baseline, transformer:DIR or a SounDiff pipeline (hub id or DIR); "
        "repeatable (default: baseline)",
    )
    parser.add_argument(
        "--unet", action="append", default=[], metavar="DIR", help="a fine-tuned SounDiff U-Net; repeatable"
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="keep a copy of every result here")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs running at once (default 1)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests waiting at most (default 16)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload (default 50 MB)")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="longest sound (default 10 min)")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:1, mps, cpu")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: fp16 on CUDA")
    parser.add_argument(
        "--decoder-dtype",
        choices=DECODER_DTYPES,
        default="float32",
        help="Image Transformer models: the decoder's weights (float16: ~1.7x faster one-image sampling "
        "on a CPU at the paper's size; the images are recorded as drawn with it)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="Image Transformer models: compile the sampling step (torch.compile) when a model loads; its "
        "first image per batch size waits 4-13 s, the later ones are ~1.1-1.2x faster on a CPU",
    )
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Build the model list and the page, and serve until Ctrl-C."""
    from sound2image.errors import UsageError
    from sound2image.validation import check_int
    from sound2image.webui.app import ServeConfig, build_app, import_gradio, start
    from sound2image.webui.jobs import Limits, ModelCache, model_choices

    import_gradio()  # the missing extra is one line, before anything else
    for flag, value in (
        ("--port", args.port),
        ("--concurrency", args.concurrency),
        ("--max-queue", args.max_queue),
    ):
        try:
            check_int(flag, value, minimum=1, maximum=65535 if flag == "--port" else None)
        except UsageError as error:
            raise UsageError(str(error)) from None
    try:
        limits = Limits(max_upload_mb=args.max_upload_mb, max_minutes=args.max_minutes)
    except UsageError as error:
        raise UsageError(
            str(error).replace("max_upload_mb", "--max-upload-mb").replace("max_minutes", "--max-minutes")
        ) from None
    try:
        choices = model_choices(args.model, args.unet)
    except UsageError as error:
        raise UsageError(str(error).replace("models:", "--model:")) from None
    config = ServeConfig(
        host=args.host,
        port=args.port,
        share=args.share,
        concurrency=args.concurrency,
        max_queue=args.max_queue,
        limits=limits,
        out=args.out,
    )
    # Gradio's file cache (uploads, served results) in a folder of this server's own, removed at exit,
    # unless the caller chose one with GRADIO_TEMP_DIR.
    cache = None
    if not os.environ.get("GRADIO_TEMP_DIR"):
        cache = tempfile.mkdtemp(prefix="sound2image-serve-")
        os.environ["GRADIO_TEMP_DIR"] = cache
    try:
        models = ModelCache(
            choices,
            device=args.device,
            dtype=args.dtype,
            decoder_dtype=args.decoder_dtype,
            compile=args.compile,
        )
        demo = build_app(models, config)
        print(f"serving on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
        try:
            start(demo, config, block=True)
        finally:
            demo.close()
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
            del os.environ["GRADIO_TEMP_DIR"]
    return 0
