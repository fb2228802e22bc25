"""Embedding throughput of the ImageBind-huge audio encoder (random weights) on this machine.

Run by hand:  python bench/bench_embed.py [--repeats 5] [--files 8] [--dtype float32] [--device cpu]

Measures, interleaved so that a change in machine load hits every variant alike (medians reported):

* preprocessing alone (decode 22.05 kHz WAV, resample, 3 x 2 s fbank), per 10 s file;
* model alone on precomputed features: ours at batch 1 (3 clips) and batched (``--files`` files);
* a reference-style baseline built in the same run: the same weights in ImageBind's own layout
  (``nn.MultiheadAttention(add_bias_kv=True)`` on (L, B, D) tensors), one file at a time;
* end to end (``encoder.embed``, preprocessing included) at batch 1 and batched.

Prints seconds per 10 s file (3 clips), clips per second and the ratios; also writes the printed text
to bench/results/bench_embed.txt. The reference implementation takes about 0.65 s per 10 s file on
this CPU when it is otherwise idle (number given with the issue; it cannot be installed here).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.paths import PSEUDO_ADVANCE  # noqa: E402

from sound2image.encoders import ImageBindAudioEncoder  # noqa: E402
from sound2image.encoders.imagebind import resolve_dtype  # noqa: E402
from sound2image.encoders.preprocess import preprocess_audio  # noqa: E402

REFERENCE_SECONDS_PER_FILE = 0.65


class ReferenceStyleBlock(nn.Module):
    """ImageBind's BlockWithMasking as the reference runs it: nn.MultiheadAttention on (L, B, D)."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        dim = ours.norm_1.normalized_shape[0]
        self.norm_1, self.norm_2, self.mlp = ours.norm_1, ours.norm_2, ours.mlp
        self.attn = nn.MultiheadAttention(dim, ours.attn.num_heads, add_bias_kv=True)
        self.attn.load_state_dict(ours.attn.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (L, B, D)
        y = self.norm_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class ReferenceStyleEncoder(nn.Module):
    """The same weights in the reference's computation layout (baseline measured in the same run)."""

    def __init__(self, ours: ImageBindAudioEncoder) -> None:
        super().__init__()
        self.ours = ours
        self.blocks = nn.ModuleList(ReferenceStyleBlock(block) for block in ours.blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.ours.stem(features)
        x = torch.cat([self.ours.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.ours.pos_embed
        x = x.transpose(0, 1)  # (L, B, D) as ImageBind's SimpleTransformer
        for block in self.blocks:
            x = block(x)
        return self.ours.head(x.transpose(0, 1))


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def run(args: argparse.Namespace) -> None:
    files = sorted(PSEUDO_ADVANCE.glob("sound/*/*.wav"))[: args.files]
    if len(files) < args.files:
        raise SystemExit(f"need {args.files} wav files under {PSEUDO_ADVANCE}/sound")
    torch.manual_seed(0)
    dtype = resolve_dtype(args.dtype)
    model = ImageBindAudioEncoder().to(args.device, dtype).eval()
    reference = ReferenceStyleEncoder(model).to(args.device, dtype).eval()
    config = model.config
    clips = config.clips_per_file
    print(
        f"ImageBind-huge audio encoder, random weights, {args.device} {args.dtype}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"inputs: {len(files)} x 10 s 22,050 Hz WAV from {PSEUDO_ADVANCE.name}; "
        f"{args.repeats} interleaved repeats"
    )
    print(f"load before: {load_average()}")

    features = [preprocess_audio(path, config) for path in files]  # warm caches (kernels, mel banks)
    batch = torch.cat(features).to(args.device, dtype)
    with torch.inference_mode():
        model(batch[:clips])
        reference(batch[:clips])
    names = ("preprocess", "model_b1", "reference_b1", "model_batched", "embed_b1", "embed_batched")
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}

    def record(name: str, fn: Callable[[], object], files_done: int) -> None:
        wall_s, cpu_s = timed(fn)
        samples[name].append(wall_s / files_done)
        cpu[name].append(cpu_s / files_done)

    n = len(files)
    for _ in range(args.repeats):  # interleaved: every variant sees the same load drift
        with torch.inference_mode():
            record("preprocess", lambda: [preprocess_audio(p, config) for p in files], n)
            record("model_b1", lambda: model(batch[:clips]), 1)
            record("reference_b1", lambda: reference(batch[:clips]), 1)
            record("model_batched", lambda: model(batch), n)
        record("embed_b1", lambda: model.embed(files[0]), 1)
        record("embed_batched", lambda: model.embed(files, batch_size=n), n)

    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"load after:  {load_average()}")
    print()
    header = ("measurement (median of wall time)", "s / 10 s file", "clips / s", "CPU s / file")
    print(f"{header[0]:44s} {header[1]:>14s} {header[2]:>10s} {header[3]:>13s}")
    labels = {
        "preprocess": "preprocessing only (decode+resample+fbank)",
        "reference_b1": "model, reference layout, batch 1 (baseline)",
        "model_b1": "model, ours, batch 1",
        "model_batched": f"model, ours, batch {len(files)} files",
        "embed_b1": "embed() end to end, batch 1",
        "embed_batched": f"embed() end to end, batch {len(files)} files",
    }
    for name, label in labels.items():
        spread = f"  (min {min(samples[name]):.3f}, max {max(samples[name]):.3f})"
        cpu_median = statistics.median(cpu[name])
        print(f"{label:44s} {median[name]:14.3f} {clips / median[name]:10.2f} {cpu_median:13.3f}{spread}")
    print()
    ratios = {
        "ours / reference layout, model at batch 1": median["model_b1"] / median["reference_b1"],
        "batched / batch 1 per clip, model only": median["model_batched"] / median["model_b1"],
        "batched / batch 1 per clip, end to end": median["embed_batched"] / median["embed_b1"],
        "end-to-end batched / reference's 0.65 s per file": median["embed_batched"]
        / REFERENCE_SECONDS_PER_FILE,
    }
    for label, value in ratios.items():
        print(f"{label + ':':50s} {value:.3f}")
    print("(the 0.65 s of the reference was measured on an idle machine; see the load above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out",
        default=str(ROOT / "bench" / "results" / "bench_embed.txt"),
        help="also write the printed results here ('' = do not)",
    )
    args = parser.parse_args()
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        run(args)
    text = buffer.getvalue()
    print(text, end="")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "a" if os.path.exists(args.out) else "w", encoding="utf-8") as handle:
            handle.write(
                f"$ python bench/bench_embed.py --repeats {args.repeats} --files {args.files} "
                f"--dtype {args.dtype} --device {args.device}\n{text}\n"
            )


if __name__ == "__main__":
    main()
