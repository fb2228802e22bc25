"""KV-cache sampling vs recomputing the whole prefix at every step (the reference code's way).

Paper-size Image Transformer (512-d, 6 + 6 layers, 8 heads, local attention: query blocks of 64,
memory 128) with random weights, 500 × 220 audio features, 1,024 sampling steps, on the CPU
(``--model av-digits``: preset av-digits' 64-d, 2 + 4 layer model on 50 × 80 features instead):

    python bench/bench_kv_cache.py                  # batch 1 and 16
    python bench/bench_kv_cache.py --threads 2 --baseline-ref main --repeats-cached 3
    python bench/bench_kv_cache.py --threads 2 --full-uncached-batch1
    python bench/bench_kv_cache.py --threads 2 --weights float16 --breakdown   # vs float32, same run

Both paths compute the encoder once; "uncached" re-runs the decoder over the whole prefix at each step.
The cached path is always measured in full, ``--repeats-cached`` times (medians reported). With
``--baseline-ref REF`` the same cached runs are also made with the ``src/`` tree of git revision REF
(``git archive``), interleaved with the current code's runs (baseline, current, baseline, ...), so the
ratio between them is measured under the same machine load; the full token sequences of the two are
compared too. The uncached path at full length takes very long on a CPU, so by default its per-step cost
is measured at several prefix lengths (each timed over repeats), fitted with a least-squares polynomial
in the prefix length t (degree 2: attention over a local window makes a step O(t), global attention would
add t²), and summed over t = 1..1024. ``--full-uncached-batch1`` measures it directly instead and
compares all its tokens with the cached run's (without it: the first 64). Peak memory: each
configuration runs in a fresh subprocess and reports its peak resident memory above the loaded model,
plus the bytes held by the KV caches. ``--breakdown`` adds a timing of one batch-1 cached step by parts
(linear layers, attention, the rest) and the time to stream the decoder's weights once.
``--weights float16`` (or ``bfloat16``) samples with ``ImageTransformer.half_decoder``; unless
``--baseline-ref`` is given, the float32 model of the same code is then the interleaved baseline, and the
report adds how far the half-precision model's next-pixel distributions are from the float32 model's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PREFIX_LENGTHS = (64, 256, 512, 768, 1024)


def build(size: str = "paper", seed: int = 0, weights: str = "float32"):
    """A random-weight model of ``size``: ``paper`` (the defaults: 512-d, 6 + 6 layers, 500 × 220
    features) or a preset's model (``av-digits``: 64-d, 2 + 4 layers, 50 × 80 features); ``weights``
    ``float16``/``bfloat16``: its decoder converted (the same float32 weights before)."""
    from dataclasses import replace

    from sound2image.training.transformer import preset
    from sound2image.transformer import ImageTransformer, ImageTransformerConfig

    torch.manual_seed(seed)
    config = ImageTransformerConfig() if size == "paper" else preset(size, "data", "out").model
    model = ImageTransformer(replace(config, dropout=0.0)).eval()
    return model if weights == "float32" else model.half_decoder(weights)


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@torch.no_grad()
def child(
    mode: str,
    batch: int,
    steps: int,
    repeats: int,
    device: str,
    size: str = "paper",
    weights: str = "float32",
    compiled: bool = False,
) -> dict:
    """One measurement in this (fresh) process; prints a JSON line. ``compiled``: the cached runs use
    ``compile_decode_step``, compiled by a 2-step warm-up timed apart (``compile_seconds``)."""
    from sound2image.transformer import SamplingConfig, generate

    if mode == "drift":
        return drift(size, steps, weights)
    model = build(size, weights=weights).to(device)
    audio = torch.randn(batch, model.config.audio_sections, model.config.audio_bins, device=device)
    base = current_rss_mb()
    result: dict = {"mode": mode, "batch": batch, "device": device}
    if mode == "cached" and compiled:
        start = time.perf_counter()
        model.compile_decode_step()
        generate(model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=2)
        result["compile_seconds"] = time.perf_counter() - start
    if mode == "cached":
        start, cpu = time.perf_counter(), time.process_time()
        tokens = generate(model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=steps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        result["seconds"] = time.perf_counter() - start
        result["cpu_seconds"] = time.process_time() - cpu
        result["tokens"] = tokens[:1].tolist()  # the first row, every step
        caches = model.allocate_caches(batch, device)
        result["cache_bytes"] = sum(c.nbytes() for c in caches)
        result["full_cache_bytes"] = result["cache_bytes"] * model.config.seq_len // caches[0].window
    elif mode == "uncached-full":
        start = time.perf_counter()
        tokens = generate(
            model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=steps, use_cache=False
        )
        result["seconds"] = time.perf_counter() - start
        result["tokens"] = tokens[:1].tolist()  # the first row, every step: compared with the cached run's
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
    elif mode == "breakdown":
        result.update(breakdown(model, audio))
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


def median_seconds(function, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (this process) seconds of ``function()`` over ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


@torch.no_grad()
def drift(size: str, steps: int, weights: str) -> dict:
    """How far the half-precision model's next-pixel distributions are from the float32 model's,
    teacher-forced on the float32 model's own batch-1 sample: mean KL(float32 || half) in bits, the
    largest |logit difference| and how often the likeliest pixel is the same."""
    from sound2image.transformer import SamplingConfig, generate

    model = build(size)
    audio = torch.randn(1, model.config.audio_sections, model.config.audio_bins)
    tokens = generate(model, audio, SamplingConfig(temperature=1.0, seed=0), num_steps=steps)
    inputs = torch.cat([torch.full((1, 1), model.config.start_token), tokens[:, :-1]], dim=1)
    memory = model.encode(audio)
    reference = model.decode(inputs, model.project_memory(memory)).double()  # (1, T, 256)
    model.half_decoder(weights)
    half = model.decode(inputs, model.project_memory(memory)).double()
    p, log_p, log_q = reference.softmax(-1), reference.log_softmax(-1), half.log_softmax(-1)
    kl_bits = float((p * (log_p - log_q)).sum(-1).mean()) / np.log(2)
    result = {
        "kl_bits": kl_bits,
        "max_logit_diff": float((half - reference).abs().max()),
        "argmax_same": float((half.argmax(-1) == reference.argmax(-1)).double().mean()),
        "entropy_bits": float(-(p * log_p).sum(-1).mean()) / np.log(2),
    }
    print("RESULT " + json.dumps(result))
    return result


def breakdown(model, audio: torch.Tensor, repeats: int = 200) -> dict:
    """Median times of one batch-1 cached step and of its parts, each timed on its own (milliseconds).

    "linear": the decoder's 36 linear layers and the output head on one token; "self attention" and
    "cross attention": the six layers' attention computations (given q, k, v); "stream": summing the
    weights of those linear layers once (a memory-bandwidth floor: a step must read them all).
    """
    import torch.nn.functional as F

    from sound2image.modules import HalfLinear, linear

    parts: dict[str, float] = {}
    with torch.inference_mode():
        memory_kv = model.project_memory(model.encode(audio))
        caches = model.allocate_caches(1)
        token = torch.full((1, 1), model.config.start_token)
        for _ in range(300):  # warm up, and fill the caches past the first query blocks
            model.decode_step(token, memory_kv, caches)
        wall, cpu = median_seconds(lambda: model.decode_step(token, memory_kv, caches), repeats)
        parts["step"], parts["step_cpu"] = wall * 1e3, cpu * 1e3
        # every Linear a step applies: not cross_attn.kv, which project_memory applies once per image
        linears = [
            module
            for block in model.decoder
            for name, module in block.named_modules()
            if isinstance(module, (torch.nn.Linear, HalfLinear)) and name != "cross_attn.kv"
        ] + [model.head]
        inputs = [torch.randn(1, 1, m.in_features) for m in linears]

        def apply_linears() -> None:
            for module, x in zip(linears, inputs, strict=True):
                linear(x, module)

        parts["linear"] = median_seconds(apply_linears, repeats)[0] * 1e3
        parts["linear_layers"] = len(linears)
        heads, width = model.config.n_heads, model.config.d_model
        q = torch.randn(1, heads, 1, width // heads)

        def cross() -> None:
            for kv in memory_kv:
                F.scaled_dot_product_attention(q, *kv)

        def self_attention() -> None:
            for cache in caches:
                F.scaled_dot_product_attention(q, cache.keys, cache.values, attn_mask=cache.bias[None, :])

        parts["cross attention"] = median_seconds(cross, repeats)[0] * 1e3
        parts["self attention"] = median_seconds(self_attention, repeats)[0] * 1e3
        # every byte of their weights (half-precision ones too), summed as float32 words: one pass
        tensors = [t.detach().flatten() for m in linears for t in (*m.parameters(), *m.buffers())]
        raw = torch.cat([t.view(torch.uint8) for t in tensors])
        flat = raw[: raw.numel() // 4 * 4].view(torch.float32)
        parts["stream"] = median_seconds(flat.sum, 50)[0] * 1e3
        parts["stream_mb"] = raw.numel() / 1e6
    return parts


def run_child(
    args: argparse.Namespace,
    mode: str,
    batch: int,
    src: Path | None = None,
    weights: str | None = None,
    compiled: bool | None = None,
) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--batch", str(batch),
               "--threads", str(args.threads), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--device", args.device,
               "--model", args.model, "--weights", weights or args.weights]  # fmt: skip
    if args.compile if compiled is None else compiled:
        command.append("--compile")
    source = str(src or ROOT / "src")
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def export_source(ref: str) -> Path:
    """``src/`` of git revision ``ref`` in a temporary directory (kept until the process ends)."""
    directory = Path(tempfile.mkdtemp(prefix="bench_kv_baseline_"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "src"


def summarize_runs(runs: list[dict], tokens: int) -> tuple[float, str]:
    """Median wall seconds of full cached runs, and its report text (tokens/s, every run, median CPU)."""
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    rate = tokens / seconds
    text = f"{seconds:8.2f} s  {rate:8.1f} tokens/s  (median of {len(runs)}: {each} s; CPU {cpu:.2f} s)"
    return seconds, text


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
        "--full-uncached-batch1",
        action="store_true",
        help="measure uncached batch 1 in full (and compare every token with the cached run)",
    )
    parser.add_argument("--repeats-cached", type=int, default=3, help="full cached runs per batch size")
    parser.add_argument(
        "--baseline-ref", default=None, help="git revision whose src/ to time too (interleaved), e.g. main"
    )
    parser.add_argument(
        "--model",
        choices=("paper", "av-digits"),
        default="paper",
        help="model size: the paper's (default) or preset av-digits' (what the digits runs sample with)",
    )
    parser.add_argument(
        "--weights",
        choices=("float32", "float16", "bfloat16"),  # sound2image.devices.DECODER_DTYPES
        default="float32",
        help="the decoder's weights (a half dtype: baseline float32, unless --baseline-ref)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="sample with ImageTransformer.compile_decode_step (baseline: the eager float32 model, unless "
        "--baseline-ref); its compile time is reported apart",
    )
    parser.add_argument("--breakdown", action="store_true", help="time one (eager) batch-1 step by parts")
    parser.add_argument(
        "--skip-uncached", action="store_true", help="time the cached path only (no uncached extrapolation)"
    )
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(
            args.child, args.batch, args.steps, args.repeats, args.device, args.model, args.weights,
            args.compile,
        )  # fmt: skip
        return 0

    model = build(args.model)
    baseline = ""
    float_baseline = (args.weights != "float32" or args.compile) and not args.baseline_ref
    baseline_name = "float32" if float_baseline else args.baseline_ref
    if float_baseline:
        baseline = "baseline: the eager float32 model (same code, same random weights), interleaved\n"
    if args.baseline_ref:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline_ref],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        baseline = f"baseline: src/ of {args.baseline_ref} ({commit}), interleaved with the current code\n"

    class Lines(list):
        """The report's lines, each also printed as soon as it is known (a long run shows progress)."""

        def append(self, line: str) -> None:
            print(line, flush=True)
            super().append(line)

    lines = Lines()
    lines += [
        f"command: python bench/bench_kv_cache.py {' '.join(sys.argv[1:])}",
        f"model: {model.config} ({model.num_parameters() / 1e6:.1f} M parameters), random weights"
        + ("" if args.weights == "float32" else f", decoder weights in {args.weights}")
        + (", sampling step compiled (compile_decode_step)" if args.compile else ""),
        f"device: {args.device}, torch {torch.__version__}, threads {args.threads}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()}",
        f"steps: {args.steps} (32 × 32 pixels), sampling temperature 1, seed 0",
    ]
    print("\n".join(lines), flush=True)
    if baseline:
        lines.append(baseline.rstrip())
    baseline_src = export_source(args.baseline_ref) if args.baseline_ref else None
    check = run_child(args, "uncached-prefix-check", 1)
    for batch in args.batches:
        runs: dict[str, list[dict]] = {"current": [], "baseline": []}
        for _ in range(args.repeats_cached):  # interleaved: both see the same load
            if baseline_src is not None:
                runs["baseline"].append(run_child(args, "cached", batch, baseline_src))
            elif float_baseline:
                runs["baseline"].append(run_child(args, "cached", batch, weights="float32", compiled=False))
            runs["current"].append(run_child(args, "cached", batch))
        cached = runs["current"][-1]
        seconds, timing = summarize_runs(runs["current"], batch * args.steps)
        lines.append(
            f"batch {batch:2d} cached:   {timing}  "
            f"peak RSS +{cached['peak_rss_above_model_mb']:.0f} MB  KV cache "
            f"{cached['cache_bytes'] / 2**20:.1f} MB (a full-length cache would be "
            f"{cached['full_cache_bytes'] / 2**20:.1f} MB)"
            + (f"  cuda peak {cached['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in cached else "")
            + (
                "  (compiling first: "
                + ", ".join(f"{r['compile_seconds']:.1f}" for r in runs["current"])
                + " s)"
                if "compile_seconds" in cached
                else ""
            )
        )
        if runs["baseline"]:
            base, timing = summarize_runs(runs["baseline"], batch * args.steps)
            lines.append(f"batch {batch:2d} baseline {baseline_name}: {timing}")
            mine, theirs = runs["current"][0]["tokens"][0], runs["baseline"][0]["tokens"][0]
            same_all = all(r["tokens"] == runs["current"][0]["tokens"] for r in runs["baseline"])
            agree = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b), len(mine))
            lines.append(
                f"batch {batch:2d} current / baseline speed: {base / seconds:.2f}×; "
                f"all {args.steps} tokens of row 0 identical to the baseline's: {same_all}"
                + ("" if same_all else f" (the first {agree} are)")
            )
        if batch == 1:
            shared = min(64, args.steps)
            same = cached["tokens"][0][:shared] == check["tokens"][0][:shared]
            lines.append(f"  first {shared} tokens identical to the uncached path (same seed): {same}")
        if batch == 1 and args.breakdown:
            parts = run_child(args, "breakdown", 1)
            rest = parts["step"] - parts["linear"] - parts["self attention"] - parts["cross attention"]
            lines.append(
                f"batch  1 one cached step (median of 200): {parts['step']:.2f} ms wall, "
                f"{parts['step_cpu']:.2f} ms CPU; parts timed alone: {parts['linear_layers']} linear layers "
                f"{parts['linear']:.2f} ms, self-attention {parts['self attention']:.2f} ms, "
                f"cross-attention {parts['cross attention']:.2f} ms, the rest (norms, residuals, GELU, "
                f"cache writes, embedding, dispatch) {rest:.2f} ms; streaming the "
                f"{parts['stream_mb']:.0f} MB of decoder weights once: {parts['stream']:.2f} ms"
            )
        if args.skip_uncached:
            continue
        if batch == 1 and args.full_uncached_batch1:
            full = run_child(args, "uncached-full", batch)
            uncached_s, how = full["seconds"], "measured in full"
            mine, theirs = cached["tokens"][0], full["tokens"][0]
            agree = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b), len(mine))
            lines.append(
                f"  all {args.steps} tokens identical to the uncached path (same seed): {agree == len(mine)}"
                + ("" if agree == len(mine) else f" (the first {agree} are)")
            )
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
        lines.append(f"batch {batch:2d} speed-up of the cache: {uncached_s / seconds:.1f}×")
    if args.weights != "float32":
        d = run_child(args, "drift", 1)
        lines.append(
            f"{args.weights} vs float32 next-pixel distributions (teacher-forced on the float32 "
            f"model's batch-1 sample, "
            f"{args.steps} steps): mean KL(float32 || {args.weights}) {d['kl_bits']:.2e} bits (entropy "
            f"{d['entropy_bits']:.2f} bits), largest |logit difference| {d['max_logit_diff']:.3g}, same "
            f"likeliest pixel {d['argmax_same']:.4f}"
        )
    lines.append(f"load average at the end {os.getloadavg()}")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
