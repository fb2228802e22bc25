"""Both trainers follow the same rules (issue 11, E and G): resume only with the same settings, checked
before anything is written; stop on NaN/Inf keeping the last good checkpoint; say how many processes
train at which batch sizes, and refuse or warn when the launcher did not start what was asked."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sound2image.errors import OutputExistsError, UsageError
from sound2image.training.checkpoints import (
    TrainingDivergedError,
    changed_settings,
    check_launch,
    describe_processes,
    list_checkpoints,
)
from sound2image.training.rundir import STATE_FILE, check_metrics_schema, read_config, read_metrics
from sound2image.training.soundiff import train
from sound2image.training.transformer import train_transformer
from sound2image.transformer import ImageTransformer
from tests.paths import PROJECT_ROOT
from tests.training.test_train import tiny_config
from tests.transformer.test_training import make_dataset, tiny_run

LAUNCH_VARIABLES = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "ACCELERATE_MIXED_PRECISION",
    "ACCELERATE_DYNAMO_BACKEND",
    "ACCELERATE_USE_CPU",
)
#: The device accelerate picks by itself (SounDiff); the transformer runs are pinned to the CPU.
ACCELERATE_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _not_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a plain `python -m pytest` process (no launcher variables)."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _transformer_config(tmp_path: Path, **overrides: object):
    make_dataset(tmp_path, count=3)
    values = {"max_steps": 4, "checkpoint_every": 2, "device": "cpu", **overrides}
    return tiny_run(tmp_path, tmp_path / "run", **values)


def _snapshot(run_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[bytes, int]]:
    return {name: ((run_dir / name).read_bytes(), (run_dir / name).stat().st_mtime_ns) for name in names}


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(value).all()) for value in state.values() if value.is_floating_point())


# --- resume: same settings, checked before anything is written -------------------------------------


def test_transformer_resume_with_changed_settings_is_refused_before_writing(tmp_path) -> None:
    config = _transformer_config(tmp_path)
    train_transformer(config)
    run = tmp_path / "run"
    files = ("split.json", "training_config.json")
    before = _snapshot(run, files)
    checkpoints = [p.name for p in list_checkpoints(run)]
    changed = replace(config, resume="latest", lr=1e-3, model=replace(config.model, d_model=64))
    with pytest.raises(UsageError) as info:
        train_transformer(changed)
    assert str(info.value) == (
        f"{run}: cannot resume with different settings (lr, model.d_model): lr 0.003 -> 0.001, "
        f"model.d_model 48 -> 64; see {run / 'training_config.json'}"
    )
    assert _snapshot(run, files) == before  # neither rewritten nor touched
    assert [p.name for p in list_checkpoints(run)] == checkpoints
    # A new run into the old directory is refused too (as SounDiff does), still writing nothing.
    with pytest.raises(OutputExistsError) as refused:
        train_transformer(replace(config, lr=1e-3))
    assert str(refused.value) == (
        f"{run}: already holds a training run "
        "(pass resume='latest' to continue it, or choose a new output_dir)"
    )
    assert refused.value.parameters == ("resume", "output_dir")
    assert _snapshot(run, files) == before
    # What may change on resume (the step budget) is accepted and recorded.
    resumed = train_transformer(replace(config, resume="latest", max_steps=6))
    assert resumed.steps == 6
    assert '"max_steps": 6' in (run / "training_config.json").read_text()
    assert (run / "split.json").read_bytes() == before["split.json"][0]


def test_soundiff_resume_with_changed_settings_is_refused_before_writing(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    run = tmp_path / "run"
    config = tiny_config(run, manifest8, shared_cache, max_steps=2, checkpointing_steps=2)
    train(config, pipeline=copy.deepcopy(soundiff))
    files = ("split.json", "training_config.json")
    before = _snapshot(run, files)
    with pytest.raises(UsageError) as info:
        train(replace(config, resume="latest", learning_rate=5e-4, seed=7), pipeline=soundiff)
    assert str(info.value) == (
        f"{run}: cannot resume with different settings (learning_rate, seed): learning_rate 0.001 -> 0.0005, "
        f"seed 42 -> 7; see {run / 'training_config.json'}"
    )
    assert _snapshot(run, files) == before


def test_changed_settings_compares_nested_groups_leaf_by_leaf() -> None:
    saved = {"lr": 1.0, "model": {"d": 4, "heads": 2}, "reranker": {"epochs": 3}, "max_steps": 5}
    given = {"lr": 1.0, "model": {"d": 8, "heads": 2}, "reranker": None, "max_steps": 9}
    assert changed_settings(saved, given, {"max_steps"}) == [
        ("model.d", 4, 8),
        ("reranker", "{...}", None),
    ]
    assert changed_settings(saved, saved, ()) == []
    assert changed_settings({"sizes": (1, 2)}, {"sizes": [1, 2]}) == []  # JSON turns tuples into lists


# --- one set of run-directory files --------------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_both_trainers_write_the_same_run_directory_files(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    s_run, t_run = tmp_path / "s", tmp_path / "run"
    s_config = tiny_config(s_run, manifest8, shared_cache, max_steps=2, checkpointing_steps=2)
    s_result = train(s_config, pipeline=soundiff)
    t_config = _transformer_config(tmp_path, max_steps=2, checkpoint_every=2, eval_every=2)
    t_result = train_transformer(t_config)
    shared = {"training_config.json", "split.json", "metrics.jsonl", "checkpoints"}
    old = {"train_config.json", "log.jsonl", "history.json", "samples"}
    for run, export in ((s_run, "unet"), (t_run, "model")):
        names = _tree(run)
        assert shared <= names and not old & names and export in names, (run, sorted(names))
    # The checkpoints: both hold the shared trainer state (step, elapsed time, losses, the settings).
    s_state, t_state = (
        json.loads((run / "checkpoints" / "checkpoint-2" / STATE_FILE).read_text()) for run in (s_run, t_run)
    )
    for state, run, result in ((s_state, s_run, s_result), (t_state, t_run, t_result)):
        assert {"step", "elapsed_s", "losses", "config"} <= set(state)
        assert state["step"] == 2 and state["losses"] == result.losses and len(result.losses) == 2
        assert state["config"] == read_config(run) and 0 < state["elapsed_s"] <= result.elapsed_s
        assert result.output_dir == run and result.steps == 2 and result.metrics_path == run / "metrics.jsonl"
    assert s_state["config"] == s_config.resolved().to_dict() and t_state["config"]["lr"] == t_config.lr
    # The metrics: one schema; a train line per update holding the loss the result reports and the
    # learning rate of each trainer's schedule, by hand.
    s_lines, t_lines = read_metrics(s_run), read_metrics(t_run)
    for line in s_lines + t_lines:
        check_metrics_schema(line)
    s_train, t_train = read_metrics(s_run, "train"), read_metrics(t_run, "train")
    assert {tuple(sorted(line)) for line in s_train + t_train} == {
        ("elapsed_s", "kind", "loss", "lr", "step")
    }
    assert [line["step"] for line in s_train] == [line["step"] for line in t_train] == [1, 2]
    assert [line["loss"] for line in s_train] == s_result.losses
    assert [line["loss"] for line in t_train] == t_result.losses
    # SounDiff: linear from 1e-3 to 1e-4 over updates 0..1; transformer: warm-up x cosine over the run.
    assert [line["lr"] for line in s_train] == pytest.approx([1e-3, 1e-4], rel=1e-12)
    warm = [min(1.0, (s + 1) / t_config.warmup_steps) for s in range(2)]
    cosine = [
        t_config.min_lr + 0.5 * (t_config.lr - t_config.min_lr) * (1 + math.cos(math.pi * s / 2))
        for s in range(2)
    ]
    assert [line["lr"] for line in t_train] == pytest.approx(
        [w * c for w, c in zip(warm, cosine, strict=True)], rel=1e-12
    )
    assert [line["step"] for line in read_metrics(t_run, "eval")] == [2]  # eval_every 2
    assert t_result.history == [
        {k: v for k, v in line.items() if k != "kind"} for line in read_metrics(t_run, "eval")
    ]


# --- the NaN/Inf guard -----------------------------------------------------------------------------


def _poison_at(step: int):
    def hook(done: int, loss: float, model: torch.nn.Module) -> None:
        if done == step:  # after checkpoint-<step> was written
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(float("nan"))

    return hook


def test_transformer_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    config = _transformer_config(tmp_path, max_steps=6)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as info:
        train_transformer(config, on_step_end=_poison_at(2))
    assert str(info.value) == (
        f"{run}: the loss became nan at step 3; stopped without saving (last good checkpoint: "
        f"{run / 'checkpoints' / 'checkpoint-2'} (resume='latest')); try a lower lr or mixed_precision 'no'"
    )
    assert info.value.parameters == ("resume", "lr", "mixed_precision")
    assert info.value.exit_code == 1
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2"]  # no NaN checkpoint-3 or later
    assert not (run / "model").exists()  # no export of a diverged run
    model = ImageTransformer.from_pretrained(run / "checkpoints" / "checkpoint-2" / "model")
    assert _finite(model.state_dict())
    # The kept checkpoint is the good state: resuming from it ends where an undisturbed run ends.
    resumed = train_transformer(replace(config, resume="latest"))
    straight = train_transformer(replace(config, output_dir=str(tmp_path / "straight")))
    assert resumed.steps == straight.steps == 6
    ours = ImageTransformer.from_pretrained(resumed.model_dir).state_dict()
    # Resume restores weights, optimizer and RNG exactly and replays the same float32 ops in the same order
    # (one thread), so the runs agree bit for bit on one machine; assert_close's float32 defaults (rtol
    # 1.3e-6, atol 1e-5) only absorb a reordered sum. A NaN-poisoned checkpoint could not pass at all.
    for key, value in ImageTransformer.from_pretrained(straight.model_dir).state_dict().items():
        torch.testing.assert_close(ours[key], value, msg=key)


def test_transformer_infinite_gradients_stop_before_a_checkpoint_saves_them(tmp_path) -> None:
    config = _transformer_config(tmp_path, max_steps=6, checkpoint_every=1)

    def explode(done: int, loss: float, model: torch.nn.Module) -> None:
        if done == 2:
            model.get_parameter("head.weight").register_hook(lambda grad: grad * float("inf"))

    diverged = r"gradient norm became (inf|nan) at step 3; .*checkpoint-2"
    with pytest.raises(TrainingDivergedError, match=diverged):
        train_transformer(config, on_step_end=explode)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-1", "checkpoint-2"]


@pytest.mark.numeric
def test_soundiff_nan_loss_keeps_a_loadable_checkpoint_that_resumes_to_the_undisturbed_run(
    tmp_path, manifest8, shared_cache, _base_soundiff
) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "run"
    config = tiny_config(run, manifest8, shared_cache, max_steps=4, checkpointing_steps=2)

    def poison(done: int, loss: float, live) -> None:
        _poison_at(2)(done, loss, live.accelerator.unwrap_model(live.unet))

    with pytest.raises(TrainingDivergedError) as info:
        train(config, pipeline=copy.deepcopy(_base_soundiff), on_step_end=poison)
    assert str(info.value) == (
        f"{run}: the loss became nan at step 3; stopped without saving (last good checkpoint: "
        f"{run / 'checkpoints' / 'checkpoint-2'} (resume='latest')); "
        "try a lower learning_rate or mixed_precision 'bf16' or 'no'"
    )
    assert info.value.parameters == ("resume", "learning_rate", "mixed_precision")
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2"]
    kept = load_file(str(run / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert len(kept) > 0 and _finite(kept)
    resumed = train(replace(config, resume="latest"), pipeline=copy.deepcopy(_base_soundiff))
    straight = train(
        replace(config, output_dir=str(tmp_path / "straight")), pipeline=copy.deepcopy(_base_soundiff)
    )
    # Same float operations in the same order on one thread: equal to float32 rounding of a few ulps.
    worst = max(
        float((a - b).abs().max())
        for a, b in zip(
            resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
        )
    )
    assert worst <= 1e-6


# --- processes and batch sizes -------------------------------------------------------------------


def test_describe_processes_multiplies_out_the_global_batch() -> None:
    assert describe_processes(2, "cpu", 2) == (
        "training on 2 processes (cpu): batch 2 per process, global batch 4"
    )
    assert describe_processes(1, "cuda", 4, accumulation=3) == (
        "training on 1 process (cuda): batch 4 per process, 3 accumulation steps, global batch 12"
    )


def test_each_trainer_prints_its_processes_and_batches(
    tmp_path, manifest8, shared_cache, soundiff, capsys
) -> None:
    from sound2image.metrics import ClassifierConfig
    from sound2image.training.classifier import train_classifier
    from sound2image.training.reranker import RerankerTrainConfig, train_reranker

    train(
        tiny_config(tmp_path / "s", manifest8, shared_cache, batch_size=2, gradient_accumulation_steps=2,
                    max_steps=1),
        pipeline=soundiff,
    )  # fmt: skip
    train_transformer(_transformer_config(tmp_path, max_steps=1, batch_size=3))
    rng = np.random.default_rng(0)
    train_reranker(
        torch.from_numpy(rng.standard_normal((5, 8, 64)).astype(np.float32)),
        torch.from_numpy(rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)),
        RerankerTrainConfig(epochs=1, batch_size=128),
    )
    train_classifier(
        rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
        ["a", "b"] * 3,
        ClassifierConfig(epochs=1, batch_size=4),
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "training on" in line]
    assert lines == [
        f"SounDiff-L: training on 1 process ({ACCELERATE_DEVICE}): batch 2 per process, "
        "2 accumulation steps, global batch 4",
        "transformer: training on 1 process (cpu): batch 3 per process, global batch 3",
        "scorer: training on 1 process (cpu): batch 5 per process, global batch 5",  # 5 pairs < batch 128
        "classifier: training on 1 process (cpu): batch 4 per process, global batch 4",
    ]


def test_a_launch_that_does_not_form_one_run_is_refused_or_warned(monkeypatch) -> None:
    assert check_launch(1, "train soundiff") is None  # a plain process
    # torchrun-style launch of 2 processes that accelerate runs each alone (--multi_gpu, no GPU, no
    # ACCELERATE_USE_CPU): both would train the whole run into the same directory.
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError) as info:
        check_launch(1, "train soundiff")
    assert str(info.value) == (
        "the launcher started 2 processes (WORLD_SIZE=2) but accelerate sees 1: each would train alone into "
        "the same directory; on a machine without GPUs use ACCELERATE_USE_CPU=true accelerate launch "
        "--multi_gpu --num_processes 2 ..."
    )
    assert check_launch(2, "train soundiff") is None  # the processes form one run
    one_process = r"^train transformer runs in one process, but the launcher started 2 \(WORLD_SIZE=2\)"
    with pytest.raises(UsageError, match=one_process):
        check_launch(1, "train transformer", distributed=False)
    # accelerate launch --cpu --num_processes 2: one process, with MASTER_ADDR but no WORLD_SIZE.
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert check_launch(1, "train soundiff") == (
        "warning: accelerate launch was asked for several processes but started one (--cpu alone runs a "
        "single process); for several CPU processes use ACCELERATE_USE_CPU=true accelerate launch "
        "--multi_gpu --num_processes N ..."
    )


def test_transformer_under_a_multiprocess_launcher_is_refused_before_writing(tmp_path, monkeypatch) -> None:
    config = _transformer_config(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="train transformer runs in one process"):
        train_transformer(config)
    assert not (tmp_path / "run").exists()


def _launch(*flags: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from tests.training.test_multiprocess import _free_port

    command = [
        sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(Path(__file__).with_name("launch_announce.py")),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=PROJECT_ROOT)


@pytest.mark.slow  # two real launches, ~6 s each
def test_real_accelerate_launches_without_gpus_are_named(tmp_path) -> None:
    # A machine without GPUs (hidden ones count as none); no ACCELERATE_USE_CPU.
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT))
    single = _launch("--cpu", env=env)  # starts ONE process
    assert single.returncode == 0, single.stderr[-2000:]
    assert single.stdout == "probe: training on 1 process (cpu): batch 2 per process, global batch 2\n"
    assert "warning: accelerate launch was asked for several processes but started one" in single.stderr
    split = _launch("--multi_gpu", env=env)  # starts two processes that do not form one run
    assert split.returncode != 0 and split.stdout == ""
    # Each process refuses; neither trains. (Counted, not split into lines: the two processes write to
    # one pipe at the same moment, so their lines can interleave.)
    refusal = "error: the launcher started 2 processes (WORLD_SIZE=2) but accelerate sees 1: "
    assert split.stderr.count(refusal) == 2, split.stderr[-3000:]
