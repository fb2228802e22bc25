"""Overhead of SounDiffPipeline over the bare diffusers StableUnCLIPImg2ImgPipeline call.

Both calls run on the *same* tiny unCLIP components (tests/dummies.py: 32×32 images, the real 1,024-d
embedding width) with the same embedding, seed and settings, interleaved (ours, bare, ours, bare, ...)
so that load drifts hit both equally; we report medians and the ratio. Goal: overhead ≤ 2 %.
diffusers wants the embedding already on its device and dtype; ours does that cast itself (timed).
Outputs are numpy arrays (``output_type="np"``), so the device->host copy is in both timings.

    python bench/bench_pipeline_overhead.py [--repeats 41] [--steps 20 2] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sound2image.diffusion import SounDiffPipeline


def time_pair(ours: SounDiffPipeline, embeds: torch.Tensor, steps: int, repeats: int) -> tuple[list, list]:
    """Interleaved wall-clock times (s) of our call and the bare diffusers call."""
    bare = ours.unclip
    bare_embeds = embeds.to(ours.device, ours.dtype)
    ours_times, bare_times = [], []
    for index in range(repeats + 2):  # two warm-up rounds, not recorded
        start = time.perf_counter()
        mine = ours(image_embeds=embeds, seed=index, num_inference_steps=steps, output_type="np").images
        middle = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(index)
        theirs = bare(
            image_embeds=bare_embeds, generator=generator, num_inference_steps=steps, output_type="np"
        )
        end = time.perf_counter()
        assert np.array_equal(mine, theirs.images), "outputs differ: the comparison would be meaningless"
        if index >= 2:
            ours_times.append(middle - start)
            bare_times.append(end - middle)
    return ours_times, bare_times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 2])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable when shared)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tiny model lives in tests/dummies.py
    from tests.dummies import get_dummy_unclip_pipeline

    torch.manual_seed(0)
    ours = SounDiffPipeline(get_dummy_unclip_pipeline()).to(args.device)
    embeds = torch.randn(1, 1024) * 20
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {args.threads}, {args.repeats} repeats")
    print(f"{'steps':>5} {'bare median ms':>15} {'ours median ms':>15} {'overhead ms':>12} {'ratio':>8}")
    for steps in args.steps:
        mine, bare = time_pair(ours, embeds, steps, args.repeats)
        m_ours, m_bare = statistics.median(mine), statistics.median(bare)
        # Median of paired differences: robust to drifts that affect a pair's two calls alike.
        paired = statistics.median(a - b for a, b in zip(mine, bare, strict=True))
        print(
            f"{steps:>5} {m_bare * 1e3:>15.2f} {m_ours * 1e3:>15.2f} {paired * 1e3:>12.3f} "
            f"{m_ours / m_bare:>8.4f}  ({(m_ours / m_bare - 1) * 100:+.2f} %;"
            f" paired {paired / m_bare * 100:+.2f} %)"
        )


if __name__ == "__main__":
    main()
