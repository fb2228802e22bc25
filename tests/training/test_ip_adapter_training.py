"""Fine-tuning the ViT-H IP-Adapter of SD 1.5 / SDXL on sound/image pairs (``backbone="sd15-ip"|"sdxl-ip"``).

Tiny pipelines built from configs (tests/dummies.py), saved to disk with a tiny adapter in
h94/IP-Adapter's layout, so the trainer loads them through ``SounDiffPipeline.from_pretrained`` exactly
as ``train soundiff --backbone ... --model DIR --ip-adapter DIR`` does; 8 real pseudo-ADVANCE pairs.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sound2image.diffusion import SounDiffPipeline
from sound2image.diffusion.backbones import SD15IPBackbone, SDXLIPBackbone, ip_adapter_state_dict
from sound2image.diffusion.pipeline import AUDIO_ENCODER_FOLDER, save_audio_encoder
from sound2image.errors import UsageError
from sound2image.training.checkpoints import list_checkpoints
from sound2image.training.soundiff import SounDiffTrainConfig, train
from sound2image.training.soundiff.data import mix_seed
from tests.dummies import (
    get_dummy_audio_encoder,
    get_dummy_sd15_components,
    get_dummy_sdxl_components,
    write_dummy_ip_adapter,
)
from tests.paths import PSEUDO_ADVANCE
from tests.training.test_train import tiny_config

pytestmark = pytest.mark.numeric
KINDS = {"sd15-ip": SD15IPBackbone, "sdxl-ip": SDXLIPBackbone}
PROMPT = "an aerial photo"


def _pipeline_class(kind: str):
    import diffusers

    return getattr(diffusers, KINDS[kind].pipeline_class)


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def saved(kind, tmp_path_factory) -> tuple[Path, Path]:
    """``(model_dir, adapter_dir)``: the tiny pipeline (audio encoder in audio_encoder/) and the tiny
    adapter at the backbone's default weight name, with its ViT-H stand-in encoder."""
    root = tmp_path_factory.mktemp(kind)
    components = get_dummy_sd15_components() if kind == "sd15-ip" else get_dummy_sdxl_components()
    extra = {"requires_safety_checker": False} if kind == "sd15-ip" else {}
    _pipeline_class(kind)(**components, **extra).save_pretrained(root / "model")
    save_audio_encoder(get_dummy_audio_encoder(), root / "model" / AUDIO_ENCODER_FOLDER)
    write_dummy_ip_adapter(root / "adapter", components["unet"], KINDS[kind].default_weight)
    return root / "model", root / "adapter"


def _config(kind: str, saved: tuple[Path, Path], run_dir: Path, manifest: Path, cache: Path, **kw):
    model, adapter = saved
    values = {"backbone": kind, "base_model": str(model), "ip_adapter": str(adapter), "prompt": PROMPT}
    values.update(batch_size=4, max_steps=2, checkpointing_steps=2, random_flip=False)
    values.update(kw)
    return tiny_config(run_dir, manifest, cache, **values)


@pytest.fixture(scope="module")
def trained(kind, saved, tmp_path_factory, manifest8, shared_cache):
    """Two updates with half of the conditioning dropped, and the U-Net as it was before them."""
    _reset_accelerate()  # module scope: before the function-scoped reset of conftest
    run_dir = tmp_path_factory.mktemp("run") / "run"
    wav = sorted((PSEUDO_ADVANCE / "sound" / "beach").glob("*.wav"))[-1]  # not a training pair
    validation = {"validation_steps": 2, "validation_audios": [str(wav)], "validation_inference_steps": 2}
    config = _config(kind, saved, run_dir, manifest8, shared_cache, conditioning_dropout=0.5, **validation)
    base = SounDiffPipeline.from_pretrained(
        config.base_model, backbone=kind, ip_adapter=config.ip_adapter, device="cpu", dtype="float32"
    )
    before = copy.deepcopy(base.unclip.unet)
    from sound2image.training.soundiff import validation_images

    shown: list = []  # the validation images of the final weights, drawn while the run is live

    def hook(done: int, loss: float, run) -> None:
        if done == config.max_steps:
            shown.extend(validation_images(run))

    result = train(config, pipeline=base, on_step_end=hook)
    result.validation_images = shown
    _reset_accelerate()
    return config, result, before


def _reference_text(
    pipe, kind: str, prompt: str, unconditional: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text conditioning recomputed from the text encoders (diffusers' conventions): SD 1.5 takes the
    last hidden state; SDXL the penultimate hidden states of both encoders side by side and the second
    encoder's projected (pooled) output, and zeros for the empty negative (force_zeros_for_empty_prompt)."""
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    ids = ids.input_ids
    with torch.no_grad():
        if kind == "sd15-ip":
            return pipe.text_encoder(ids).last_hidden_state, None
        first = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        second = pipe.text_encoder_2(ids, output_hidden_states=True)
        states, pooled = torch.cat([first, second.hidden_states[-2]], dim=-1), second.text_embeds
    if unconditional:
        assert pipe.config.force_zeros_for_empty_prompt
        return torch.zeros_like(states), torch.zeros_like(pooled)
    return states, pooled


def _hand_loss(kind: str, config: SounDiffTrainConfig, run, unet) -> float:
    """The first update's loss recomputed from diffusers' conventions with ``unet`` (the U-Net before
    training): the documented draws, the closed-form forward process, the reference text conditioning."""
    pipe = run.pipe.unclip
    # The step's randomness, drawn in the documented order from the documented seeds.
    order = torch.randperm(8, generator=torch.Generator().manual_seed(mix_seed(config.seed, "order", 0)))
    rows = order[:4]
    generator = torch.Generator().manual_seed(mix_seed(config.seed, "noise", 0))
    shape = (4, *run.cached.latent_mean.shape[1:])
    timesteps = torch.randint(0, 1000, (4,), generator=generator)
    noise = torch.randn(shape, generator=generator)
    latent_noise = torch.randn(shape, generator=generator)
    torch.randn((4, 1024), generator=generator)  # unCLIP's embedding noise: drawn, unused here
    drop = torch.rand(4, generator=generator) < 0.5
    assert 0 < int(drop.sum()) < 4  # both branches are exercised

    # DDPM forward process of the scaled_linear schedule, in closed form; the tiny schedulers predict ε.
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)[timesteps].float()[:, None, None, None]
    latents = (run.cached.latent_mean[rows] + run.cached.latent_std[rows] * latent_noise) * float(
        pipe.vae.config.scaling_factor
    )
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    audio = run.cached.audio_embeds[rows]
    calibrated = audio / audio.norm(dim=1, keepdim=True) * run.calibration.target_norm
    cond = torch.where(drop[:, None], torch.zeros_like(calibrated), calibrated)  # guidance's negative: zeros
    text, pooled = _reference_text(pipe, kind, PROMPT, unconditional=False)
    empty_text, empty_pooled = _reference_text(pipe, kind, "", unconditional=True)
    text = torch.where(drop[:, None, None], empty_text, text)
    added = {"image_embeds": [cond[:, None, :]]}
    if kind == "sdxl-ip":
        added["text_embeds"] = torch.where(drop[:, None], empty_pooled, pooled)
        size = float(config.resolution)  # original size, crop (0, 0), target size
        added["time_ids"] = torch.tensor([[size, size, 0.0, 0.0, size, size]]).expand(4, -1)
    with torch.no_grad():
        pred = unet(noisy, timesteps, encoder_hidden_states=text, added_cond_kwargs=added).sample
    return float(((pred - noise) ** 2).mean())


def test_first_loss_equals_the_objective_recomputed_by_hand(kind, trained) -> None:
    config, result, before = trained
    expected = _hand_loss(kind, config, result.run, before)
    # The trainer computes the same float32 ops, except that add_noise takes the square roots of a float32
    # alpha-bar where this takes them in float64: ~1 ulp per term (measured: 1.0e-7 / 1.1e-7 relative on
    # the loss). 1e-6 (~8 ulp) still catches any wrong input (measured: prompt not dropped 8e-4, image
    # embedding not dropped 5e-3, SDXL time ids of another size 5e-3, uncalibrated embeddings 1.6e-6).
    assert result.losses[0] == pytest.approx(expected, rel=1e-6)


def test_ip_scale_is_the_adapters_weight_in_training(kind, saved, tmp_path, manifest8, shared_cache) -> None:
    config = _config(
        kind,
        saved,
        tmp_path / "run",
        manifest8,
        shared_cache,
        max_steps=1,
        conditioning_dropout=0.5,
        ip_scale=0.25,
    )
    base = SounDiffPipeline.from_pretrained(
        config.base_model, backbone=kind, ip_adapter=config.ip_adapter, device="cpu", dtype="float32"
    )
    before = copy.deepcopy(base.unclip.unet)
    result = train(config, pipeline=base)
    at_one = _hand_loss(kind, config, result.run, before)
    for processor in before.attn_processors.values():
        if hasattr(processor, "to_k_ip"):
            processor.scale = [0.25]  # diffusers' per-adapter weight of the image tokens
    # Tolerance as in test_first_loss_equals_the_objective_recomputed_by_hand.
    assert result.losses[0] == pytest.approx(_hand_loss(kind, config, result.run, before), rel=1e-6)
    assert abs(result.losses[0] / at_one - 1) > 1e-4  # the scale changed the loss


def test_only_the_adapter_changes(kind, trained) -> None:
    _, result, before = trained
    after = result.model
    adapter_before = ip_adapter_state_dict(before)
    adapter_after = ip_adapter_state_dict(after)
    adapter_ids = {id(p) for p in after.parameters() if p.requires_grad}
    count = sum(p.numel() for p in after.parameters() if p.requires_grad)
    expected = sum(t.numel() for part in adapter_after.values() for t in part.values())
    assert count == expected  # exactly the projection and to_k_ip / to_v_ip are trained
    moved = [
        key
        for part in adapter_after
        for key in adapter_after[part]
        if not torch.equal(adapter_after[part][key], adapter_before[part][key])
    ]
    assert len(moved) == sum(len(part) for part in adapter_after.values())  # every adapter tensor learned
    frozen = {name: p for name, p in after.named_parameters() if id(p) not in adapter_ids}
    reference = dict(before.named_parameters())
    assert frozen and all(torch.equal(p, reference[name]) for name, p in frozen.items())


def test_export_loads_into_plain_diffusers_and_changes_the_image(kind, saved, trained) -> None:
    config, result, _ = trained
    model, adapter = saved
    run_dir = Path(config.output_dir)
    assert (run_dir / "ip-adapter.safetensors").is_file() and not (run_dir / "unet").exists()
    record = json.loads((run_dir / "sound2image_soundiff.json").read_text())
    assert record["backbone"] == kind and record["steps"] == 2

    def plain(folder: Path, subfolder: str, weight_name: str):
        pipe = _pipeline_class(kind).from_pretrained(model)
        pipe.load_ip_adapter(folder, subfolder=subfolder, weight_name=weight_name, image_encoder_folder=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def image(pipe) -> torch.Tensor:
        embeds = torch.randn(1, 1, 1024, generator=torch.Generator().manual_seed(3)) * 20
        out = pipe(
            prompt=PROMPT,
            ip_adapter_image_embeds=[torch.cat([torch.zeros_like(embeds), embeds])],
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
        return out.images

    exported = plain(run_dir, "", "ip-adapter.safetensors")
    base = plain(adapter, str(Path(KINDS[kind].default_weight).parent), Path(KINDS[kind].default_weight).name)
    loaded = ip_adapter_state_dict(exported.unet)
    trained_state = ip_adapter_state_dict(result.model)
    assert all(torch.equal(loaded[p][k], trained_state[p][k]) for p in loaded for k in loaded[p])
    assert float((image(exported) - image(base)).abs().max()) > 1e-3  # the trained adapter draws otherwise

    # The library finds the run's calibration beside the exported file.
    ours = SounDiffPipeline.from_pretrained(
        model, backbone=kind, ip_adapter=run_dir / "ip-adapter.safetensors", device="cpu", dtype="float32"
    )
    assert ours.calibration == result.run.calibration


def test_validation_images_are_the_exported_adapter_s_images(kind, saved, trained) -> None:
    from sound2image.outputs import read_png_metadata

    config, result, _ = trained
    run_dir = Path(config.output_dir)
    grids = sorted((run_dir / "validation").glob("*.png"))
    assert len(grids) == 1 and read_png_metadata(grids[0])["step"] == 2
    # No validation guidance given: the backbone's own, as generation uses (diffusers' pipeline defaults).
    assert config.validation_guidance_scale is None
    assert read_png_metadata(grids[0])["guidance_scale"] == {"sd15-ip": 7.5, "sdxl-ip": 5.0}[kind]
    [ours] = result.validation_images  # the trained U-Net, through SounDiffPipeline's backbone
    fresh = SounDiffPipeline.from_pretrained(
        saved[0], backbone=kind, ip_adapter=run_dir / "ip-adapter.safetensors", device="cpu", dtype="float32"
    )
    embeds = result.run.calibration.apply(result.run.validation_embeds)
    [theirs] = fresh(
        image_embeds=embeds,
        prompt=PROMPT,
        height=config.resolution,
        width=config.resolution,
        num_inference_steps=2,
        guidance_scale={"sd15-ip": 7.5, "sdxl-ip": 5.0}[kind],
        seed=config.seed,
    ).images
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))  # same weights, same call: same pixels


def test_killed_and_resumed_run_is_bit_identical(kind, tmp_path, saved, manifest8, shared_cache) -> None:
    config = _config(kind, saved, tmp_path / "reference", manifest8, shared_cache, max_steps=4)
    reference = train(config)
    interrupted = replace(config, output_dir=str(tmp_path / "run"))

    def stop(done: int, loss: float, run) -> None:
        if done == 3:
            raise KeyboardInterrupt

    _reset_accelerate()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, on_step_end=stop)
    [checkpoint] = list_checkpoints(tmp_path / "run")
    names = sorted(p.name for p in checkpoint.iterdir())
    assert "ip_adapter.safetensors" in names  # the adapter's tensors ...
    assert not [n for n in names if n.startswith(("model", "pytorch_model"))]  # ... and no U-Net
    _reset_accelerate()
    resumed = train(replace(interrupted, resume="latest"))

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "run" / "ip-adapter.safetensors"))
    b = load_file(str(tmp_path / "reference" / "ip-adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.losses == reference.losses


def test_ip_settings_are_checked() -> None:
    base = {"data": "x", "output_dir": "y"}
    with pytest.raises(UsageError, match="backbone must be one of unclip, sd15-ip, sdxl-ip"):
        SounDiffTrainConfig(**base, backbone="sd21").resolved()
    with pytest.raises(UsageError, match="ip_adapter applies to the sd15-ip and sdxl-ip backbones"):
        SounDiffTrainConfig(**base, ip_adapter="a.bin").resolved()
    with pytest.raises(UsageError, match="lora_rank: the sd15-ip backbone trains the IP-Adapter itself"):
        SounDiffTrainConfig(**base, backbone="sd15-ip", lora_rank=4).resolved()
    with pytest.raises(UsageError, match="ip_scale"):
        SounDiffTrainConfig(**base, backbone="sd15-ip", ip_scale=-1.0).resolved()
    assert math.isclose(
        SounDiffTrainConfig(**base, backbone="sdxl-ip", ip_scale=0.5).resolved().ip_scale, 0.5
    )


@pytest.mark.slow
def test_two_cpu_processes_match_one(kind, saved, tmp_path, manifest8, shared_cache) -> None:
    """``accelerate launch`` of the CLI on 2 CPU processes (batch 2 each) against one process of batch 4."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tests.paths import PROJECT_ROOT
    from tests.training.test_multiprocess import _free_port

    single = train(_config(kind, saved, tmp_path / "single", manifest8, shared_cache, max_steps=3))
    model, adapter = saved
    flags = [
        "train", "soundiff", "--data", str(manifest8), "--output", str(tmp_path / "double"),
        "--model", str(model), "--backbone", kind, "--ip-adapter", str(adapter), "--prompt", PROMPT,
        "--resolution", "16", "--batch-size", "2", "--max-steps", "3", "--learning-rate", "1e-3",
        "--final-learning-rate", "1e-4", "--val-fraction", "0", "--checkpointing-steps", "2",
        "--report-to", "none", "--no-progress", "--no-flip", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)])
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "sound2image.cli.main", *flags,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"--backbone {kind} --ip-adapter" in done.stdout  # the CLI says how to use the export

    lines = (tmp_path / "double" / "metrics.jsonl").read_text().splitlines()
    double = [json.loads(line)["loss"] for line in lines]
    # As tests/training/test_multiprocess.py: step 1 differs only in the order of float sums (the U-Net at
    # batch 2 instead of 4, two half means): ~1e-5 at worst; later steps follow DDP's all-reduced
    # gradients through Adam: 1e-4 relative, 100x below the step-to-step change of the loss.
    assert double[0] == pytest.approx(single.losses[0], rel=1e-5)
    assert double == pytest.approx(single.losses, rel=1e-4)
    assert (tmp_path / "double" / "checkpoints" / "checkpoint-2" / "ip_adapter.safetensors").is_file()
    ours = load_file(str(tmp_path / "double" / "ip-adapter.safetensors"))
    reference = load_file(str(tmp_path / "single" / "ip-adapter.safetensors"))
    nested = torch.load(adapter / KINDS[kind].default_weight, weights_only=True)  # the adapter trained from
    start = {f"{part}.{key}": value for part, values in nested.items() for key, value in values.items()}
    assert ours.keys() == reference.keys() == start.keys()
    # Weights: the runs' difference must be tiny next to how far training moved them (single entries may
    # differ by ~lr where Adam meets a near-zero gradient whose sign flips with the order of sums).
    deviation = sum(float((ours[k] - reference[k]).pow(2).sum()) for k in ours) ** 0.5
    movement = sum(float((reference[k] - start[k]).pow(2).sum()) for k in ours) ** 0.5
    assert deviation < 1e-2 * movement


def test_cli_flags_and_a_pipeline_of_another_backbone(tmp_path, manifest8, soundiff, capsys) -> None:
    from sound2image.cli.main import main

    code = main(
        ["train", "soundiff", "--data", str(manifest8), "--output", str(tmp_path / "run"),
         "--ip-adapter", "a.bin"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err  # the library's parameter, named by its flag
    assert "error: --ip-adapter applies to the sd15-ip and sdxl-ip backbones, not unclip" in err
    config = SounDiffTrainConfig(data=str(manifest8), output_dir=str(tmp_path / "run2"), backbone="sd15-ip")
    with pytest.raises(UsageError, match="backbone is 'sd15-ip' but the pipeline given is a unclip pipeline"):
        train(config, pipeline=soundiff)
    assert not (tmp_path / "run2").exists()  # refused before anything is written


def test_every_ip_flag_reaches_its_config_field() -> None:
    from sound2image.cli.main import build_parser
    from sound2image.cli.train_soundiff import config_from_args

    argv = ["train", "soundiff", "--data", "d", "--output", "o"]
    argv += ["--backbone", "sdxl-ip", "--ip-adapter", "a.bin", "--ip-scale", "0.5"]
    config = config_from_args(build_parser().parse_args(argv))
    assert (config.backbone, config.ip_adapter, config.ip_scale) == ("sdxl-ip", "a.bin", 0.5)
    defaults = SounDiffTrainConfig()
    assert (defaults.backbone, defaults.ip_adapter, defaults.ip_scale) == ("unclip", None, 1.0)
