"""Time and peak memory of the encoder's preprocessing for 10 s of audio at awkward and common rates.

Run by hand:  python bench/bench_resample_rates.py [--repeats 3] [--rates 47999 44101 44100 48000]

Issue 11 (B6): a 10 s file at 47,999 or 44,101 Hz took 51 s and 15 GB, because the torchaudio-style
polyphase kernel was built whole for a gcd of 1 with 16 kHz (16,000 phases x ~48,000 taps) and kept in an
LRU cache. The goal: at most 2 s and 300 MB extra per file at any rate.

What is measured, per rate, in the same run (rates interleaved within each repeat, so that a change in
machine load hits them alike): ``preprocess_audio(path, ImageBindAudioConfig())`` on a 10 s stereo 16-bit
WAV (decode, down-mix, resample to 16 kHz, 3 x 2 s fbank), each call in a fresh child process so its
peak memory is its own:

* seconds: wall time of that first call (the kernel, when one is built, is built in it);
* peak RSS extra: the process's peak resident memory (VmHWM) minus its resident memory just before the
  call, in MiB - everything the call allocated at once, torch's buffers included;
* tracemalloc peak: Python and numpy allocations only (torch's CPU buffers are not traced), MiB.

Ratios are against the common rates measured in the same run (44,100 and 48,000 Hz: exact kernels).
Writes the printed text to bench/results/bench_resample_rates.txt (appended). The old implementation is
not run (it would need ~15 GB at 47,999 Hz); its numbers are the issue's.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 2.0
GOAL_MIB = 300.0
BASELINE_RATES = (44100, 48000)


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path: str, threads: int | None) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import tracemalloc

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from sound2image.encoders import ImageBindAudioConfig
    from sound2image.encoders.preprocess import load_mono, preprocess_audio

    if threads:
        torch.set_num_threads(threads)
    config = ImageBindAudioConfig()
    preprocess_audio((torch.zeros(16000).numpy(), 16000), config)  # import-time work out of the way
    rss_before = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    tracemalloc.start()
    start = time.perf_counter()
    features = preprocess_audio(path, config)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm_after = _status_kib("VmHWM")
    start = time.perf_counter()
    load_mono(path)  # decode, down-mix and resample only (a second call: any kernel is cached by now)
    load_seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "load_seconds": load_seconds,
                "rss_extra_mib": max(hwm_after - rss_before, 0) / 1024,
                "hwm_grew": hwm_after > hwm_before,
                "traced_peak_mib": traced_peak / 2**20,
                "shape": list(features.shape),
                "threads": torch.get_num_threads(),
            }
        )
    )


def measure(path: Path, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--child", str(path)] + (
        ["--threads", str(threads)] if threads else []
    )
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_inputs(folder: Path, rates: list[int], seconds: float) -> dict[int, Path]:
    import numpy as np
    import soundfile as sf

    paths = {}
    rng = np.random.default_rng(0)
    for rate in rates:
        n = int(round(rate * seconds))
        t = np.arange(n) / rate
        left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
        right = 0.3 * np.sin(2 * np.pi * 1500 * t) + 0.05 * rng.standard_normal(n)
        paths[rate] = folder / f"noise_{rate}.wav"
        sf.write(paths[rate], np.stack([left, right], axis=1).astype(np.float32), rate, subtype="PCM_16")
    return paths


def run(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"# python bench/bench_resample_rates.py --repeats {args.repeats} "
        f"--rates {' '.join(map(str, args.rates))} --seconds {args.seconds:g} "
        f"--threads {args.threads or 'default'} - {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} (shared machine: timings are noisy)"
    )
    rows: dict[int, list[dict]] = {rate: [] for rate in args.rates}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_inputs(Path(folder), args.rates, args.seconds)
        for _ in range(args.repeats):
            for rate in args.rates:
                rows[rate].append(measure(paths[rate], args.threads))
    threads = rows[args.rates[0]][0]["threads"]
    print(f"{args.seconds:g} s stereo 16-bit WAV -> ImageBind features; torch threads {threads}; "
          f"median (max) over {args.repeats} fresh processes")  # fmt: skip
    print(
        f"{'rate (Hz)':>10} {'gcd':>6} {'seconds':>16} {'peak RSS extra MiB':>20} {'tracemalloc MiB':>16}"
        f" {'decode+resample s':>18}"
    )
    summary = {}
    for rate in args.rates:
        secs = [r["seconds"] for r in rows[rate]]
        mibs = [r["rss_extra_mib"] for r in rows[rate]]
        traced = [r["traced_peak_mib"] for r in rows[rate]]
        loads = [r["load_seconds"] for r in rows[rate]]
        summary[rate] = (statistics.median(secs), max(secs), statistics.median(mibs), max(mibs))
        print(
            f"{rate:>10} {math.gcd(rate, 16000):>6} {statistics.median(secs):>8.3f} ({max(secs):.3f})"
            f" {statistics.median(mibs):>11.1f} ({max(mibs):.1f}) {statistics.median(traced):>9.1f}"
            f" ({max(traced):.1f}) {statistics.median(loads):>9.3f} ({max(loads):.3f})"
        )
    base = [rate for rate in BASELINE_RATES if rate in summary]
    if base:
        base_seconds = statistics.mean(summary[rate][0] for rate in base)
        base_mib = statistics.mean(summary[rate][2] for rate in base)
        print(f"ratios against the mean of {', '.join(map(str, base))} Hz measured in this run "
              f"({base_seconds:.3f} s, {base_mib:.1f} MiB):")  # fmt: skip
        for rate in args.rates:
            print(
                f"  {rate:>6} Hz: time x{summary[rate][0] / base_seconds:.2f}, "
                f"peak RSS extra x{summary[rate][2] / max(base_mib, 1e-9):.2f}"
            )
    worst_seconds = max(s[1] for s in summary.values())
    worst_mib = max(s[3] for s in summary.values())
    verdict = "met" if worst_seconds <= GOAL_SECONDS and worst_mib <= GOAL_MIB else "NOT met"
    print(
        f"goal <= {GOAL_SECONDS:g} s and <= {GOAL_MIB:g} MB extra per file: {verdict} "
        f"(worst {worst_seconds:.3f} s, {worst_mib:.1f} MiB)"
    )
    print("old implementation (issue 11): 47,999 or 44,101 Hz, 10 s: 51 s and 15 GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per rate (default 3)")
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[47999, 44101, 44100, 48000], help="input sample rates, Hz"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10 s)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--out",
        default=str(ROOT / "bench" / "results" / "bench_resample_rates.txt"),
        help="also write the printed results here ('' = do not)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads)
        return
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        run(args)
    text = buffer.getvalue()
    print(text, end="")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "a" if os.path.exists(args.out) else "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
