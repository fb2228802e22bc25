"""Load check of `sound2image serve`: 20 requests over loopback to the web app on the tiny pipeline.

The app runs in this process (127.0.0.1, a free port, Gradio's cache in a temporary folder) with the
tiny random SounDiff pipeline of the tests (32×32 images, 2 steps). ``gradio_client`` sends the
requests from ``--clients`` threads through the queue's public API (``/generate``, the same event the
page's Generate button fires), each with a real 10 s recording and its own seed. Bounded: exactly
``--requests`` requests (at most 50) and ``--budget`` seconds in all (at most 600), after which it stops
and says so.

Reported: latency percentiles (p50, p90, p99, max; seconds from submit to result), throughput, the
resident memory (RSS, this process: server and client together) after the first request and after the
run, and whether the second is within 10 % of the first; and that no request folder is left.

    python bench/bench_webapp_load.py [--requests 20] [--clients 2] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.dummies: the tiny pipeline
SHARED = Path(os.environ.get("SOUND2IMAGE_SHARED", ROOT.parent / "shared"))


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--clients", type=int, default=2, help="client threads sending at once")
    parser.add_argument("--concurrency", type=int, default=1, help="the app's jobs at once")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run")
    args = parser.parse_args()
    requests = max(1, min(args.requests, 50))
    budget = max(10.0, min(args.budget, 600.0))
    torch.set_num_threads(1)

    from gradio_client import Client, handle_file
    from tests.dummies import get_dummy_soundiff_pipeline

    from sound2image.webui.app import PageDefaults, ServeConfig, build_app, start
    from sound2image.webui.jobs import ModelCache, model_choices

    wavs = sorted((SHARED / "data" / "pseudo-advance" / "sound").glob("*/*.wav"))[:6]
    if not wavs:
        print(f"no recordings under {SHARED}/data/pseudo-advance/sound", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-webapp-") as scratch:
        work = Path(scratch)
        os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        get_dummy_soundiff_pipeline().save_pretrained(work / "tiny")
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        cache = ModelCache(model_choices([str(work / "tiny")]), device="cpu", dtype="float32")
        config = ServeConfig(
            port=port,
            concurrency=args.concurrency,
            max_queue=max(16, requests),
            temp_root=str(work / "requests"),
            defaults=PageDefaults(steps=2, size=32),
        )
        demo = build_app(cache, config)
        url = start(demo, config)
        client = Client(url, verbose=False)
        model = cache.labels[0]

        def one(index: int) -> float:
            wav = wavs[index % len(wavs)]
            began = time.perf_counter()
            job = client.submit(
                handle_file(str(wav)), [], "", model, "", "", None, 0.5, 2, 10.0, 0, "model default", 32,
                1, 1, str(1000 + index), False, 5.0, 0.0, api_name="/generate",
            )  # fmt: skip
            gallery, files, seeds, status = job.result(timeout=budget)
            assert seeds == str(1000 + index) and status == "1 image(s)", (seeds, status)
            return time.perf_counter() - began

        started = time.perf_counter()
        first = one(0)  # loads the model; its latency is reported apart
        rss_first = rss_mib()
        latencies: list[float] = []
        failures: list[str] = []
        with ThreadPoolExecutor(max_workers=max(1, args.clients)) as pool:
            futures = [pool.submit(one, i) for i in range(1, requests)]
            for future in as_completed(futures, timeout=budget - (time.perf_counter() - started)):
                try:
                    latencies.append(future.result())
                except Exception as error:  # noqa: BLE001 - counted and shown
                    failures.append(f"{type(error).__name__}: {error}")
        elapsed = time.perf_counter() - started
        rss_after = rss_mib()
        left = sorted((work / "requests").iterdir()) if (work / "requests").exists() else []
        demo.close()
        client.close()

    print(f"web app load check: {requests} requests over loopback to {url}")
    print(
        f"  tiny SounDiff pipeline, 32x32, 2 steps; app concurrency {args.concurrency}, "
        f"{args.clients} client threads"
    )
    print(f"  CPU, torch threads 1, torch {torch.__version__}")
    print(f"first request (loads the model): {first:.3f} s")
    if latencies:
        print(
            f"next {len(latencies)} requests: p50 {percentile(latencies, 50):.3f} s, "
            f"p90 {percentile(latencies, 90):.3f} s, p99 {percentile(latencies, 99):.3f} s, "
            f"max {max(latencies):.3f} s, mean {statistics.mean(latencies):.3f} s"
        )
    print(f"throughput: {requests / elapsed:.2f} requests/s ({elapsed:.1f} s in all)")
    change = (rss_after - rss_first) / rss_first * 100
    verdict = "within 10 %" if abs(change) <= 10 else "NOT within 10 %"
    print(
        f"RSS after the first request {rss_first:.1f} MiB, after the run {rss_after:.1f} MiB "
        f"({change:+.1f} %: {verdict})"
    )
    print(f"failed requests: {len(failures)}" + ("".join(f"\n  {f}" for f in failures[:5])))
    print(f"request folders left: {len(left)}")
    return 0 if not failures and abs(change) <= 10 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
