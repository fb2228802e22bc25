"""`sound2image evaluate` on the IP-Adapter backbones: ``--backbone sd15-ip`` makes ``baseline`` the zero-shot
adapter and a DIR entry an adapter training run; the images are the pipeline's own draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sound2image.cli.main import main
from sound2image.diffusion import SounDiffPipeline
from sound2image.diffusion.pipeline import AUDIO_ENCODER_FOLDER, save_audio_encoder
from sound2image.errors import UsageError
from sound2image.evaluation.systems import parse_systems, system_fingerprint
from sound2image.outputs import read_png_metadata
from tests.evaluation.conftest import CALIBRATION, STEPS
from tests.paths import PSEUDO_ADVANCE

WEIGHT = "models/ip-adapter_sd15.bin"


@pytest.fixture(scope="module")
def sd15(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(model_dir, adapter_dir, run_dir)``: the tiny SD 1.5 pipeline (audio encoder inside), the tiny
    adapter in h94's layout, and a "trained" adapter export (every adapter tensor moved by a seeded 10 %)."""
    from diffusers import StableDiffusionPipeline

    from sound2image.diffusion.backbones import ip_adapter_state_dict
    from sound2image.training.export import export_ip_adapter
    from tests.dummies import get_dummy_audio_encoder, get_dummy_sd15_components, write_dummy_ip_adapter

    root = tmp_path_factory.mktemp("sd15-ip")
    components = get_dummy_sd15_components()
    pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipe.save_pretrained(root / "model")
    save_audio_encoder(get_dummy_audio_encoder(), root / "model" / AUDIO_ENCODER_FOLDER)
    write_dummy_ip_adapter(root / "adapter", components["unet"], WEIGHT)
    pipe.load_ip_adapter(root / "adapter", subfolder="models", weight_name="ip-adapter_sd15.bin")
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tensor in [
            t for part in ip_adapter_state_dict(pipe.unet, detach=False).values() for t in part.values()
        ]:
            tensor.add_(0.1 * float(tensor.std()) * torch.randn(tensor.shape, generator=generator))
    export_ip_adapter(pipe.unet, root / "run", calibration=CALIBRATION, record={"backbone": "sd15-ip"})
    return root / "model", root / "adapter", root / "run"


def test_an_sd15_ip_evaluation_draws_the_pipelines_own_images(tmp_path, sd15) -> None:
    model, adapter, run = sd15
    out = tmp_path / "out"
    args = [
        "evaluate", "--data", str(PSEUDO_ADVANCE), "--backbone", "sd15-ip", "--model", str(model),
        "--ip-adapter", str(adapter), "--systems", f"baseline,{run}", "--steps", str(STEPS),
        "--device", "cpu", "--features", "clip", "--resamples", "20", "--max-items", "2", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert [s["id"] for s in results["systems"]] == ["baseline", "run"]
    pngs = [(path, read_png_metadata(path)) for path in sorted((out / "cache").rglob("*.png"))]
    assert len(pngs) == 4  # 2 systems x 2 items x 1 seed
    path, meta = next((p, m) for p, m in pngs if m["evaluation"]["system"] == "run")
    assert meta["model"]["backbone"] == "sd15-ip" and meta["guidance_scale"] == 7.5  # SD 1.5's own default
    # An independent draw: the trained adapter loaded by the library, called on the sound file itself.
    pipe = SounDiffPipeline.from_pretrained(
        model, backbone="sd15-ip", ip_adapter=run / "ip-adapter.safetensors", device="cpu", dtype="float32"
    )
    assert pipe.calibration == CALIBRATION  # found beside the exported adapter
    audio = Path(meta["audio"][0]["path"])
    assert audio.is_relative_to(PSEUDO_ADVANCE)
    direct = pipe(str(audio), seed=meta["seed"], num_inference_steps=STEPS).images[0]
    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(direct))


def test_the_fingerprint_covers_backbone_adapter_and_scale(sd15) -> None:
    model, adapter, run = sd15
    base, trained = parse_systems(
        f"baseline,{run}", model=str(model), backbone="sd15-ip", ip_adapter=str(adapter)
    )
    assert (trained.ip_adapter, trained.unet) == (str(run / "ip-adapter.safetensors"), None)
    prints = {system_fingerprint(base), system_fingerprint(trained)}
    [scaled] = parse_systems(
        "baseline", model=str(model), backbone="sd15-ip", ip_adapter=str(adapter), ip_scale=0.5
    )
    [again] = parse_systems("baseline", model=str(model), backbone="sd15-ip", ip_adapter=str(adapter))
    prints.add(system_fingerprint(scaled))
    assert len(prints) == 3 and system_fingerprint(again) == system_fingerprint(base)
    assert base.model_key != scaled.model_key


def test_ip_systems_name_their_mistakes(tmp_path, sd15) -> None:
    model, adapter, _ = sd15
    with pytest.raises(
        UsageError, match=r"systems: .*: no ip-adapter.safetensors \(a train soundiff --backbone"
    ):
        parse_systems(str(tmp_path), model=str(model), backbone="sd15-ip")
    with pytest.raises(
        UsageError, match="ip_adapter applies to the sd15-ip and sdxl-ip backbones, not unclip"
    ):
        parse_systems("baseline", ip_adapter=str(adapter))
    with pytest.raises(UsageError, match="backbone must be one of unclip, sd15-ip, sdxl-ip"):
        parse_systems("baseline", backbone="sd21")
