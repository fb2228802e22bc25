"""Two-process CPU training through ``accelerate launch`` matches the single-process run."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sound2image.training.soundiff import METRICS_FILE, train
from tests.paths import PROJECT_ROOT
from tests.training.test_train import tiny_config

pytestmark = pytest.mark.numeric
LAUNCHER = Path(__file__).with_name("launch_train.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_follow_the_single_process_loss_curve(
    tmp_path, manifest8, shared_cache, _base_soundiff
) -> None:
    # One process with batch 4 and two processes with batch 2 make the same global batches and draws.
    single = train(
        tiny_config(tmp_path / "single", manifest8, shared_cache, batch_size=4, max_steps=4),
        pipeline=copy.deepcopy(_base_soundiff),
    )
    # A fresh cache, so that the two ranks split the cache pass between them.
    config = tiny_config(tmp_path / "double", manifest8, tmp_path / "cache", batch_size=2, max_steps=4)
    config.save(tmp_path / "config.json")
    # accelerate's CPU multi-process mode: torchrun + gloo ("--cpu" alone starts a single process).
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(LAUNCHER), str(tmp_path / "config.json"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    # The start line, printed once (main process): 2 processes of batch 2 make global batches of 4.
    assert [line for line in done.stdout.splitlines() if "training on" in line] == [
        "SounDiff-L: training on 2 processes (cpu): batch 2 per process, global batch 4"
    ]

    shards = {p.name.split("-")[1] for p in (tmp_path / "cache").rglob("shard-*.safetensors")}
    assert shards == {"r0", "r1"}  # each rank cached its share
    metrics = [json.loads(line) for line in (tmp_path / "double" / METRICS_FILE).read_text().splitlines()]
    double = [m["loss"] for m in metrics]
    # Step 1 starts from identical weights on identical samples: only the order of float sums differs
    # (mean of two halves vs one mean of 1,024 terms: <= eps * log2(1024) ~ 1.2e-6), and the U-Net runs at
    # batch 2 instead of 4, for which kernels may block differently (~eps * sqrt(K) ~ 3e-6 per output,
    # doubled by the square): ~1e-5 worst case, 1,000x below the step-to-step change of the loss.
    assert double[0] == pytest.approx(single.losses[0], rel=1e-5)
    # Later steps follow gradients averaged by DDP's all-reduce instead of one batch mean: differences of
    # ~1e-7 relative in the gradients, which Adam's normalisation can enlarge for near-zero gradients.
    # 1e-4 relative is ~1,000x that noise yet 100x smaller than the step-to-step change of the loss.
    assert double == pytest.approx(single.losses, rel=1e-4)

    from safetensors.torch import load_file

    exported = load_file(str(tmp_path / "double" / "unet" / "diffusion_pytorch_model.safetensors"))
    trained = single.model.state_dict()
    start = _base_soundiff.unclip.unet.state_dict()
    # Weights: the runs' difference must be tiny next to how far training moved them. Single entries can
    # differ by up to ~lr (Adam's update of a near-zero gradient flips sign when float sums are reordered;
    # measured: 4.9e-4 of the movement); a run on other data or another seed differs by O(1) of it.
    deviation = sum(float((exported[k] - trained[k]).pow(2).sum()) for k in trained) ** 0.5
    movement = sum(float((trained[k] - start[k]).pow(2).sum()) for k in trained) ** 0.5
    assert deviation < 1e-2 * movement
