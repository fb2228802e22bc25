"""KV-cache sampling vs recomputing the whole prefix at every step (the reference code's way).

Paper-size Image Transformer (512-d, 6 + 6 layers, 8 heads, local attention: query blocks of 64,
memory 128) with random weights, 500 × 220 audio features, 1,024 sampling steps, on the CPU:

    python bench/bench_kv_cache.py                  # batch 1 and 16
    python bench/bench_kv_cache.py --threads 2 --full-uncached-batch1

Both paths compute the encoder once; "uncached" re-runs the decoder over the whole prefix at each step.
The cached path is always measured in full. The uncached path at full length takes very long on a
CPU, so by default its per-step cost is measured at several prefix lengths (each timed over repeats),
fitted with a least-squares polynomial in the prefix length t (degree 2: attention over a local window
makes a step O(t), global attention would add t²), and summed over t = 1..1024. ``--full-uncached-*``
measures it directly instead. Peak memory: each configuration runs in a fresh subprocess and reports
its peak resident memory above the loaded model, plus the bytes held by the KV caches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PREFIX_LENGTHS = (64, 256, 512, 768, 1024)


def build(seed: int = 0):
    from sound2image.transformer import ImageTransformer, ImageTransformerConfig

    torch.manual_seed(seed)
    return ImageTransformer(ImageTransformerConfig(dropout=0.0)).eval()  # defaults = paper size


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@torch.no_grad()
def child(mode: str, batch: int, steps: int, repeats: int, device: str) -> dict:
    """One measurement in this (fresh) process; prints a JSON line."""
    from sound2image.transformer import SamplingConfig, generate

    model = build().to(device)
    audio = torch.randn(batch, 500, 220, device=device)
    base = current_rss_mb()
    result: dict = {"mode": mode, "batch": batch, "device": device}
    if mode == "cached":
        start = time.perf_counter()
        tokens = generate(model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=steps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        result["seconds"] = time.perf_counter() - start
        result["tokens"] = tokens[:, :64].tolist()
        caches = model.allocate_caches(batch, device)
        result["cache_bytes"] = sum(c.nbytes() for c in caches)
        result["full_cache_bytes"] = result["cache_bytes"] * model.config.seq_len // caches[0].window
    elif mode == "uncached-full":
        start = time.perf_counter()
        tokens = generate(
            model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=steps, use_cache=False
        )
        result["seconds"] = time.perf_counter() - start
        result["tokens"] = tokens[:, :64].tolist()
    elif mode == "uncached-steps":
        # Time single uncached steps (decoder over a prefix of length t + head) at several t.
        memory_kv = model.project_memory(model.encode(audio))
        per_step = {}
        for length in PREFIX_LENGTHS:
            tokens = torch.randint(0, 257, (batch, length), device=device)
            model.decode(tokens, memory_kv)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                model.decode(tokens, memory_kv)[:, -1]
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_step[length] = (time.perf_counter() - start) / repeats
        result["per_step"] = per_step
    elif mode == "uncached-prefix-check":
        tokens = generate(
            model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=64, use_cache=False
        )
        result["tokens"] = tokens.tolist()
    result["peak_rss_above_model_mb"] = rss_mb() - base
    if device.startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result))
    return result


def run_child(args: argparse.Namespace, mode: str, batch: int) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--batch", str(batch),
               "--threads", str(args.threads), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--device", args.device]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def extrapolate(per_step: dict[str, float], steps: int) -> tuple[float, np.ndarray]:
    """Fit seconds(t) = c0 + c1·t + c2·t² on the measured prefix lengths; sum it over t = 1..steps."""
    lengths = np.array([float(k) for k in per_step])
    seconds = np.array(list(per_step.values()))
    coefficients = np.polyfit(lengths, seconds, deg=min(2, len(lengths) - 1))
    t = np.arange(1, steps + 1, dtype=np.float64)
    return float(np.polyval(coefficients, t).sum()), coefficients


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per uncached prefix length")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--full-uncached-batch1", action="store_true", help="measure uncached batch 1 in full"
    )
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.batch, args.steps, args.repeats, args.device)
        return 0

    model = build()
    lines = [
        f"command: python bench/bench_kv_cache.py {' '.join(sys.argv[1:])}",
        f"model: {model.config} ({model.num_parameters() / 1e6:.1f} M parameters), random weights",
        f"device: {args.device}, torch {torch.__version__}, threads {args.threads}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()}",
        f"steps: {args.steps} (32 × 32 pixels), sampling temperature 1, seed 0",
    ]
    check = run_child(args, "uncached-prefix-check", 1)
    for batch in args.batches:
        cached = run_child(args, "cached", batch)
        shared = min(64, args.steps)
        same = cached["tokens"][0][:shared] == check["tokens"][0][:shared] if batch == 1 else None
        lines.append(
            f"batch {batch:2d} cached:   {cached['seconds']:8.1f} s  "
            f"{batch * args.steps / cached['seconds']:8.1f} tokens/s  "
            f"peak RSS +{cached['peak_rss_above_model_mb']:.0f} MB  KV cache "
            f"{cached['cache_bytes'] / 2**20:.1f} MB (a full-length cache would be "
            f"{cached['full_cache_bytes'] / 2**20:.1f} MB)"
            + (f"  cuda peak {cached['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in cached else "")
        )
        if same is not None:
            lines.append(f"  first {shared} tokens identical to the uncached path (same seed): {same}")
        if batch == 1 and args.full_uncached_batch1:
            full = run_child(args, "uncached-full", batch)
            uncached_s, how = full["seconds"], "measured in full"
            memory = full["peak_rss_above_model_mb"]
        else:
            steps = run_child(args, "uncached-steps", batch)
            uncached_s, coefficients = extrapolate(steps["per_step"], args.steps)
            memory = steps["peak_rss_above_model_mb"]
            measured = ", ".join(f"t={k}: {v * 1000:.0f} ms" for k, v in steps["per_step"].items())
            how = (
                f"extrapolated: one step measured at prefix lengths {measured} "
                f"({args.repeats} repeats each); "
                f"fit s(t) = {coefficients[-1]:.3g} + {coefficients[-2]:.3g}·t"
                + (f" + {coefficients[0]:.3g}·t²" if len(coefficients) == 3 else "")
                + f", summed over t = 1..{args.steps}"
            )
        lines.append(
            f"batch {batch:2d} uncached: {uncached_s:8.1f} s  "
            f"{batch * args.steps / uncached_s:8.1f} tokens/s  "
            f"peak RSS +{memory:.0f} MB  ({how})"
        )
        lines.append(f"batch {batch:2d} speed-up of the cache: {uncached_s / cached['seconds']:.1f}×")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
