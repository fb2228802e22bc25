"""SounDiff fine-tuning on CPU with the tiny random pipeline and 8 real pseudo-ADVANCE pairs."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sound2image.errors import OutputExistsError, UsageError
from sound2image.training import soundiff as sd
from sound2image.training.checkpoints import list_checkpoints
from sound2image.training.soundiff import SounDiffTrainConfig, TrainingDivergedError, train
from sound2image.training.soundiff import checkpoint as sd_checkpoint

pytestmark = pytest.mark.numeric


def tiny_config(run_dir: Path, manifest: Path, cache: Path, **overrides: object) -> SounDiffTrainConfig:
    """Paper settings except what a CPU test needs: 16 px, a learning rate for a tiny random U-Net."""
    values = {
        "data": str(manifest),
        "output_dir": str(run_dir),
        "resolution": 16,
        "batch_size": 4,
        "max_steps": 6,
        "learning_rate": 1e-3,
        "final_learning_rate": 1e-4,
        "val_fraction": 0.0,
        "checkpointing_steps": 3,
        "report_to": "none",
        "progress": False,
        "cache_dir": str(cache),
    }
    values.update(overrides)
    return SounDiffTrainConfig(**values)


def unet_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def fixed_draw_loss(result: sd.TrainResult, unet: torch.nn.Module, seeds: range) -> float:
    """Mean loss over fixed draws (timesteps, noise, dropout) on all training pairs: a steady yardstick."""
    run = result.run
    cached = run.cached
    embeds = run.calibration.apply(cached.audio_embeds)
    losses = []
    with torch.no_grad():
        for seed in seeds:
            draw = run.objective.draw(
                len(cached),
                tuple(cached.latent_mean.shape[1:]),
                embeds.shape[1],
                torch.Generator().manual_seed(seed),
            )
            out = run.objective.loss(
                unet,
                cached.latent_mean,
                cached.latent_std,
                embeds,
                run.prompt_embeds,
                run.empty_prompt_embeds,
                draw,
            )
            losses.append(float(out.loss))
    return sum(losses) / len(losses)


def test_overfitting_eight_real_pairs_halves_the_loss(tmp_path, manifest8, shared_cache, soundiff) -> None:
    base_unet = copy.deepcopy(soundiff.unclip.unet).eval()
    config = tiny_config(
        tmp_path / "run",
        manifest8,
        shared_cache,
        resolution=32,
        batch_size=8,
        max_steps=30,
        learning_rate=2e-3,
        final_learning_rate=2e-3,
        checkpointing_steps=1000,
    )
    result = train(config, pipeline=soundiff)
    assert len(result.run.cached) == 8 and result.problems == []
    trained = result.model.eval()
    before = fixed_draw_loss(result, base_unet, range(100, 104))
    after = fixed_draw_loss(result, trained, range(100, 104))
    assert after <= 0.5 * before, (before, after)
    # The logged training loss falls too (means of the first and last 5 updates).
    assert sum(result.losses[-5:]) < 0.75 * sum(result.losses[:5])
    metrics = [json.loads(line) for line in (tmp_path / "run" / sd.METRICS_FILE).read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 31))


def _run(config: SounDiffTrainConfig, base, hook=None) -> sd.TrainResult:
    return train(config, pipeline=copy.deepcopy(base), on_step_end=hook)


def _stop_at(step: int):
    def hook(done: int, loss: float, run) -> None:
        if done == step:
            raise KeyboardInterrupt  # what Ctrl-C or a pre-empted job looks like to the loop

    return hook


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, manifest8, shared_cache, _base_soundiff):
    """6 uninterrupted updates with EMA and gradient accumulation (2 micro-batches of 4)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    config = tiny_config(
        run_dir, manifest8, shared_cache, ema=True, ema_decay=0.9, gradient_accumulation_steps=2
    )
    return config, _run(config, _base_soundiff)


def _exported(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "unet" / "diffusion_pytorch_model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    # Resume restores weights, optimizer, EMA and RNG states bit for bit and replays the same float32 ops in
    # the same shapes, so the runs agree exactly on any one machine; 1e-6 (~10 ulp of weights ~0.1) only
    # absorbs a reordered sum (e.g. another thread count) in the remaining steps.
    assert worst <= 1e-6, worst


def test_interrupted_and_resumed_run_ends_with_the_same_weights(
    tmp_path, reference_run, _base_soundiff
) -> None:
    config, reference = reference_run
    run_dir = tmp_path / "run"
    interrupted = replace(config, output_dir=str(run_dir))
    with pytest.raises(KeyboardInterrupt):
        _run(interrupted, _base_soundiff, _stop_at(4))
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-3"]
    assert not (run_dir / "unet").exists()  # no export from an unfinished run
    resumed = _run(replace(interrupted, resume="latest"), _base_soundiff)
    _assert_same_weights(unet_state(resumed.model), unet_state(reference.model))
    _assert_same_weights(_exported(run_dir), _exported(Path(config.output_dir)))
    assert resumed.losses == pytest.approx(
        reference.losses, abs=1e-6
    )  # losses 1-3 restored from the checkpoint; the rest replayed exactly (losses ~0.1-1: a few ulp)


def test_crash_while_writing_a_checkpoint_resumes_from_the_previous_one(
    tmp_path, reference_run, _base_soundiff, monkeypatch
) -> None:
    config, reference = reference_run
    run_dir = tmp_path / "run"
    crashing = replace(config, output_dir=str(run_dir))
    real_write = sd_checkpoint.write_trainer_state

    def write_then_die(directory: Path, run, step: int) -> None:
        real_write(directory, run, step)
        if step == 6:
            raise OSError("No space left on device")  # inside the atomic write, after most files exist

    monkeypatch.setattr(sd_checkpoint, "write_trainer_state", write_then_die)
    with pytest.raises(OSError, match="No space"):
        _run(crashing, _base_soundiff)
    monkeypatch.undo()
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-3"]  # no half-written checkpoint-6
    resumed = _run(replace(crashing, resume="latest"), _base_soundiff)
    _assert_same_weights(unet_state(resumed.model), unet_state(reference.model))


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    config = tiny_config(tmp_path / "run", manifest8, shared_cache, checkpointing_steps=2)

    def poison(done: int, loss: float, run) -> None:
        if done == 2:  # after checkpoint-2 was written
            with torch.no_grad():
                next(run.accelerator.unwrap_model(run.unet).parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"step 3.*checkpoint-2"):
        train(config, pipeline=soundiff, on_step_end=poison)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    assert not (tmp_path / "run" / "unet").exists()
    lines = (tmp_path / "run" / sd.METRICS_FILE).read_text().splitlines()
    assert len(lines) == 2  # nothing logged for the NaN step


def test_export_loads_into_generation_and_changes_its_output(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    from sound2image.diffusion import SounDiffPipeline
    from sound2image.diffusion.calibration import EmbeddingCalibration

    base_dir = soundiff.save_pretrained(tmp_path / "base")
    run_dir = tmp_path / "run"
    config = tiny_config(
        run_dir, manifest8, shared_cache, max_steps=3, learning_rate=1e-2, final_learning_rate=1e-2
    )
    result = train(config, pipeline=soundiff)
    assert json.loads((run_dir / "sound2image_soundiff.json").read_text())["variant"] == "L"

    base = SounDiffPipeline.from_pretrained(base_dir, device="cpu")
    tuned = SounDiffPipeline.from_pretrained(base_dir, device="cpu", unet=run_dir)
    assert tuned.calibration == EmbeddingCalibration.load(run_dir)
    _assert_same_weights(unet_state(tuned.unclip.unet), unet_state(result.model))
    embeds = tuned.calibration.apply(torch.randn(1, 1024, generator=torch.Generator().manual_seed(0)))
    kwargs = {
        "image_embeds": embeds,
        "num_inference_steps": 2,
        "height": 32,
        "width": 32,
        "seed": 0,
        "output_type": "np",
    }
    before, after = base(**kwargs).images, tuned(**kwargs).images
    assert abs(after - before).mean() > 1e-3


def test_lora_export_is_merged_and_matches_the_adapted_unet(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    from diffusers import UNet2DConditionModel

    probe = {
        "sample": torch.randn(1, 4, 8, 8),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 77, 32),
        "class_labels": torch.randn(1, 2048),
    }
    seen = {}

    def remember(done: int, loss: float, run) -> None:
        if done == 2:
            with torch.no_grad():
                seen["out"] = run.accelerator.unwrap_model(run.unet)(**probe).sample

    config = tiny_config(
        tmp_path / "run", manifest8, shared_cache, max_steps=2, lora_rank=4, learning_rate=1e-2
    )
    base_out = soundiff.unclip.unet(**probe).sample.detach()
    train(config, pipeline=soundiff, on_step_end=remember)
    exported = UNet2DConditionModel.from_pretrained(tmp_path / "run" / "unet")
    assert not any("lora" in key for key in exported.state_dict())
    with torch.no_grad():
        merged = exported(**probe).sample
    # Merging W + s * B A changes the adapted layers' float32 sums (attention projections, K <= 64; the class
    # MLP, K = 2048): rounding ~eps * sqrt(K) ~ 5e-6 relative each (eps * K = 2.4e-4 only if all roundings
    # align), through a few layers of outputs ~1. Measured 7e-7 (AVX2) and 1.1e-6 (default kernels).
    torch.testing.assert_close(merged, seen["out"], rtol=1e-4, atol=1e-5)
    assert (merged - base_out).abs().max() > 1e-4  # the adapters learned something (10x the merge tolerance)


def test_variant_defaults_are_the_papers() -> None:
    large = SounDiffTrainConfig(data="d", output_dir="o", variant="L").resolved()
    small = SounDiffTrainConfig(data="d", output_dir="o", variant="S").resolved()
    assert (large.batch_size, large.epochs, large.prompt) == (4, 80, "")
    assert (small.batch_size, small.epochs, small.prompt) == (
        2,
        280,
        "a satellite image with details on the ground",
    )
    for config in (large, small):
        assert (config.adam_beta1, config.adam_beta2, config.weight_decay) == (0.9, 0.999, 0.01)
        assert (config.learning_rate, config.final_learning_rate, config.seed) == (1e-6, 1e-7, 42)
        assert (config.resolution, config.val_fraction, config.conditioning_dropout) == (768, 0.1, 0.25)
    custom = SounDiffTrainConfig(
        data="d", output_dir="o", variant="S", prompt="aerial photo", batch_size=8
    ).resolved()
    assert (custom.prompt, custom.batch_size) == ("aerial photo", 8)


def test_learning_rate_decays_from_1e6_to_1e7() -> None:
    config = SounDiffTrainConfig(data="d", output_dir="o").resolved()
    assert sd.learning_rate_at(config, 0, 101) == pytest.approx(1e-6)
    assert sd.learning_rate_at(config, 50, 101) == pytest.approx(0.55e-6)
    assert sd.learning_rate_at(config, 100, 101) == pytest.approx(1e-7)


def test_config_round_trips_and_is_saved_with_the_run(tmp_path, reference_run) -> None:
    config, _ = reference_run
    saved = SounDiffTrainConfig.load(Path(config.output_dir) / sd.CONFIG_FILE)
    assert saved == config.resolved()
    state = json.loads((Path(config.output_dir) / "checkpoints" / "checkpoint-6" / sd.STATE_FILE).read_text())
    assert state["config"] == config.resolved().to_dict() and state["step"] == 6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variant": "M"}, "variant must be one of L, S"),
        ({"resolution": 30}, "multiple of 8"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"conditioning_dropout": -0.1}, "conditioning_dropout"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_settings_are_one_line_usage_errors(overrides, message) -> None:
    with pytest.raises(UsageError, match=message):
        SounDiffTrainConfig(data="d", output_dir="o", **overrides).resolved()


def test_unknown_class_and_reused_output_are_refused(
    tmp_path, manifest8, shared_cache, reference_run, soundiff
) -> None:
    with pytest.raises(UsageError, match="no class 'train station'.*airport, beach, forest, lake"):
        train(
            tiny_config(tmp_path / "a", manifest8, shared_cache, classes=["train station"]), pipeline=soundiff
        )
    config, _ = reference_run
    refused = r"a training run \(pass resume='latest' to continue it, or choose a new output_dir\)"
    with pytest.raises(OutputExistsError, match=refused):
        train(replace(config, resume=None), pipeline=soundiff)
    with pytest.raises(UsageError, match=r"cannot resume with different settings \(learning_rate\)"):
        train(replace(config, resume="latest", learning_rate=5e-4), pipeline=soundiff)


def test_bad_pairs_are_skipped_and_reported(tmp_path, manifest8, shared_cache, soundiff) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not a jpeg")
    manifest = tmp_path / "pairs.csv"
    lines = manifest8.read_text().splitlines()
    audio = lines[1].split(",")[0]
    manifest.write_text("\n".join([*lines, f"{audio},{corrupt},airport"]) + "\n")
    config = tiny_config(tmp_path / "run", manifest, shared_cache, max_steps=1)
    result = train(config, pipeline=soundiff)
    assert len(result.run.cached) == 8
    assert len(result.problems) == 1 and str(corrupt) in result.problems[0]
    assert str(corrupt) in (tmp_path / "run" / sd.BAD_ITEMS_FILE).read_text()


def test_missing_extras_name_the_extra(monkeypatch, tmp_path) -> None:
    import builtins

    from sound2image.errors import MissingExtraError

    real_import = builtins.__import__

    def no_optional(name, *args, **kwargs):
        if name in ("bitsandbytes", "peft"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optional)
    config = SounDiffTrainConfig(data="d", output_dir="o", use_8bit_adam=True, lora_rank=4).resolved()
    with pytest.raises(MissingExtraError, match=r"sound2image\[bnb\]"):
        sd.make_optimizer(config, [torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(MissingExtraError, match=r"sound2image\[lora\]"):
        sd.prepare_unet(config, torch.nn.Linear(1, 1))


def test_without_tensorboard_logging_falls_back_cleanly(monkeypatch, tmp_path) -> None:
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    config = SounDiffTrainConfig(data="d", output_dir=str(tmp_path)).resolved()
    accelerator = sd.make_accelerator(config, tmp_path)
    assert not accelerator.log_with
    accelerator.log({"train/loss": 1.0}, step=1)  # a no-op, not an error


def test_bf16_checkpointing_snr_and_validation_grid_from_the_split(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    config = tiny_config(
        tmp_path / "run", manifest8, shared_cache, max_steps=2, mixed_precision="bf16",
        gradient_checkpointing=True, snr_gamma=5.0, validation_steps=2, validation_inference_steps=2,
        val_fraction=0.5,
    )  # fmt: skip
    result = train(config, pipeline=soundiff)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert next(result.model.parameters()).dtype == torch.float32  # master weights stay fp32 under autocast
    from sound2image.outputs import read_png_metadata

    meta = read_png_metadata(tmp_path / "run" / "validation" / "step-0000002.png")
    val_audios = {p.audio.name for p in result.run.cached.pairs}
    assert (
        len(meta["audios"]) == 4 and not set(meta["audios"]) & val_audios
    )  # fixed audios from the val split


def test_infinite_gradients_stop_before_a_checkpoint_saves_nan_weights(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    # Checkpoint after every step: without the gradient check, step 3 would save NaN weights as checkpoint-3.
    config = tiny_config(tmp_path / "run", manifest8, shared_cache, checkpointing_steps=1)

    def explode(done: int, loss: float, run) -> None:
        if done == 2:
            weight = next(run.accelerator.unwrap_model(run.unet).parameters())
            weight.register_hook(lambda grad: grad * float("inf"))

    with pytest.raises(TrainingDivergedError, match=r"gradient norm became (inf|nan) at step 3"):
        train(config, pipeline=soundiff, on_step_end=explode)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-1", "checkpoint-2"]


def test_unclip_validation_images_are_the_plain_diffusers_call(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    """Validation goes through SounDiffPipeline for every backbone; for unCLIP that must be exactly the plain
    diffusers call with the trained (EMA) U-Net, the calibrated embedding and a CPU generator seeded with the
    run's seed (guidance: unCLIP's default 10)."""
    import numpy as np
    from diffusers import StableUnCLIPImg2ImgPipeline

    from tests.paths import PSEUDO_ADVANCE

    wav = sorted((PSEUDO_ADVANCE / "sound" / "beach").glob("*.wav"))[-1]
    config = tiny_config(
        tmp_path / "run", manifest8, shared_cache, max_steps=2, validation_steps=2,
        validation_audios=[str(wav)], validation_inference_steps=2, ema=True, ema_decay=0.5,
    )  # fmt: skip
    pairs: list = []

    def hook(done: int, loss: float, run) -> None:
        if done == config.max_steps:
            ours = sd.validation_images(run)
            run.ema.store(run.params)
            run.ema.copy_to(run.params)  # the weights validation shows
            plain = StableUnCLIPImg2ImgPipeline(**run.pipe.unclip.components)
            plain.set_progress_bar_config(disable=True)
            embeds = run.calibration.apply(run.validation_embeds)
            theirs = plain(
                image_embeds=embeds[:1], prompt="", height=16, width=16, num_inference_steps=2,
                guidance_scale=10.0, generator=torch.Generator("cpu").manual_seed(config.seed),
            ).images  # fmt: skip
            run.ema.restore(run.params)
            pairs.append((ours, theirs))

    _run(config, soundiff, hook)
    [(ours, theirs)] = pairs
    assert len(ours) == 1
    assert np.array_equal(np.asarray(ours[0]), np.asarray(theirs[0]))
