"""The SD 1.5 and SDXL IP-Adapter backbones: one audio vector drives diffusers' own pipelines.

Every backbone test runs on tiny pipelines built from configs (tests/dummies.py), saved to disk in the
layouts the library loads (a diffusers pipeline directory; an adapter in h94/IP-Adapter's layout with
its image encoder in ``models/image_encoder``), so loading, generation, records and regeneration all go
through the library's own paths. The reference is always plain diffusers, loaded independently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sound2image.cli.main import main
from sound2image.diffusion import EmbeddingCalibration, GenerationRecord, SounDiffPipeline, regenerate
from sound2image.diffusion.backbones import SD15IPBackbone, SDXLIPBackbone
from sound2image.diffusion.calibration import normalize
from sound2image.diffusion.pipeline import AUDIO_ENCODER_FOLDER, save_audio_encoder
from sound2image.errors import UsageError, WeightsError
from sound2image.outputs import read_png_metadata
from tests.diffusion.conftest import STEPS
from tests.dummies import (
    EMBED_DIM,
    get_dummy_audio_encoder,
    get_dummy_image_encoder,
    get_dummy_sd15_components,
    get_dummy_sdxl_components,
    write_dummy_ip_adapter,
)

KINDS = {"sd15-ip": SD15IPBackbone, "sdxl-ip": SDXLIPBackbone}


def _pipeline_class(kind: str):
    import diffusers

    return getattr(diffusers, KINDS[kind].pipeline_class)


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def saved(kind, tmp_path_factory):
    """``(model_dir, adapter_dir)``: the tiny pipeline (with the tiny audio encoder in audio_encoder/, as
    a saved SounDiff directory holds it) and the tiny adapter at the backbone's default weight name."""
    root = tmp_path_factory.mktemp(kind)
    components = get_dummy_sd15_components() if kind == "sd15-ip" else get_dummy_sdxl_components()
    extra = {"requires_safety_checker": False} if kind == "sd15-ip" else {}
    _pipeline_class(kind)(**components, **extra).save_pretrained(root / "model")
    save_audio_encoder(get_dummy_audio_encoder(), root / "model" / AUDIO_ENCODER_FOLDER)
    write_dummy_ip_adapter(root / "adapter", components["unet"], KINDS[kind].default_weight)
    return root / "model", root / "adapter"


@pytest.fixture(scope="module")
def ours(kind, saved) -> SounDiffPipeline:
    model, adapter = saved
    return SounDiffPipeline.from_pretrained(model, backbone=kind, ip_adapter=adapter, device="cpu")


@pytest.fixture(scope="module")
def plain(kind, saved):
    """Plain diffusers: the same saved pipeline and adapter through ``load_ip_adapter``."""
    model, adapter = saved
    pipe = _pipeline_class(kind).from_pretrained(model)
    folder, _, weight = KINDS[kind].default_weight.rpartition("/")
    pipe.load_ip_adapter(
        adapter, subfolder=folder, weight_name=weight, image_encoder_folder="models/image_encoder"
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _plain_call(plain, embeds, guidance, seed, prompt="", negative_prompt=None, scale=1.0):
    """diffusers' documented ``ip_adapter_image_embeds``: a list (one per adapter) of (batch, num_images,
    D) tensors holding the negative embedding first when guidance is on; the negative of an image is
    zeros (``encode_image``'s ``torch.zeros_like``)."""
    positive = embeds[:, None, :]
    stacked = torch.cat([torch.zeros_like(positive), positive]) if guidance > 1 else positive
    plain.set_ip_adapter_scale(scale)
    return plain(
        prompt=prompt,
        negative_prompt=negative_prompt,
        ip_adapter_image_embeds=[stacked],
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images


@pytest.mark.parametrize(("guidance", "prompt"), [(1.0, ""), (5.0, ""), (5.0, "a red house")])
def test_audio_call_equals_plain_diffusers_with_the_same_embeds(ours, plain, wavs, guidance, prompt):
    output = ours(
        wavs[0], seed=7, num_inference_steps=STEPS, guidance_scale=guidance, prompt=prompt, output_type="np"
    )
    # The conditioning is the audio vector on the calibrated scale (here ImageBind's own 20).
    raw = ours.audio_encoder.embed([wavs[0]], device="cpu").float()
    torch.testing.assert_close(output.image_embeds, normalize(raw) * 20.0, rtol=0, atol=1e-5)
    expected = _plain_call(plain, output.image_embeds, guidance, 7, prompt)
    assert np.array_equal(output.images, expected)  # bit-identical pixels


def test_the_record_names_the_backbone_model_adapter_and_scale(ours, kind, saved, wavs):
    model, adapter = saved
    record = ours(wavs[0], seed=1, num_inference_steps=STEPS, output_type="np").records[0]
    folder, _, weight = KINDS[kind].default_weight.rpartition("/")
    assert record.model["backbone"] == kind
    assert record.model["pipeline"] == str(model.resolve())
    assert record.model["ip_adapter"] == str(adapter.resolve())
    assert (record.model["ip_adapter_subfolder"], record.model["ip_adapter_weight_name"]) == (folder, weight)
    assert record.model["ip_scale"] == 1.0
    assert record.settings.height == record.settings.width == 32  # the tiny U-Net's 16 × VAE factor 2
    # The backbone's usual guidance (diffusers' SD 1.5 / SDXL defaults), recorded as used.
    assert record.settings.guidance_scale == {"sd15-ip": 7.5, "sdxl-ip": 5.0}[kind]


def test_ip_scale_takes_effect_in_the_pixels(ours, wavs):
    two = [ours.encode_audio(w) for w in wavs[:2]]
    kwargs = {"seed": 3, "num_inference_steps": STEPS, "guidance_scale": 1.0, "output_type": "np"}

    def draw(scale, embeds):
        ours.backbone.ip_scale = scale
        try:
            return ours(image_embeds=embeds, **kwargs).images
        finally:
            ours.backbone.ip_scale = 1.0

    # At scale 0 the adapter's branch adds 0 × its attention: the sound cannot show in the image.
    assert np.array_equal(draw(0.0, two[0]), draw(0.0, two[1]))
    assert not np.array_equal(draw(1.0, two[0]), draw(1.0, two[1]))
    assert not np.array_equal(draw(0.5, two[0]), draw(1.0, two[0]))


def test_the_prompt_still_works_beside_the_sound(ours, wavs):
    kwargs = {"seed": 3, "num_inference_steps": STEPS, "guidance_scale": 5.0, "output_type": "np"}
    with_prompt = ours(wavs[0], prompt="a red house", **kwargs).images
    assert not np.array_equal(with_prompt, ours(wavs[0], prompt="", **kwargs).images)


def test_library_regeneration_from_the_record_alone_is_identical(ours, wavs):
    ours.backbone.ip_scale = 0.7
    try:
        output = ours(wavs[1], seed=11, num_inference_steps=STEPS, guidance_scale=4.0, prompt="sea")
    finally:
        ours.backbone.ip_scale = 1.0
    metadata = json.loads(json.dumps(output.records[0].to_metadata()))  # what a PNG stores
    again = regenerate(metadata, device="cpu")  # loads the recorded model, adapter and scale itself
    assert again.records[0].model["ip_scale"] == 0.7
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(output.images[0]))
    # Given our pipeline (now at scale 1), the recorded 0.7 applies and 1.0 is restored after.
    given = regenerate(metadata, ours)
    assert np.array_equal(np.asarray(given.images[0]), np.asarray(output.images[0]))
    assert ours.backbone.ip_scale == 1.0


def test_cli_generate_and_from_metadata_are_identical(kind, saved, wavs, tmp_path):
    model, adapter = saved
    common = ["--model", str(model), "--steps", str(STEPS), "--device", "cpu"]
    args = [str(wavs[0]), "--backbone", kind, "--ip-adapter", str(adapter), "--ip-scale", "0.8"]
    assert (
        main(["generate", *args, *common, "--seed", "5", "--prompt", "sky", "--out", str(tmp_path / "a")])
        == 0
    )
    png = tmp_path / "a" / f"{wavs[0].stem}_seed5.png"
    metadata = read_png_metadata(png)
    assert metadata["model"]["backbone"] == kind and metadata["model"]["ip_scale"] == 0.8
    assert metadata["guidance_scale"] == KINDS[kind].default_guidance_scale  # the backbone's default
    assert main(["generate", "--from-metadata", str(png), "--out", str(tmp_path / "b")]) == 0
    from PIL import Image

    first = np.asarray(Image.open(png))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / f"{png.stem}_regen.png")), first)


def test_best_of_n_scores_with_the_adapters_image_encoder(ours, saved, wavs):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    _, adapter = saved
    output = ours(wavs[0], seed=2, num_inference_steps=STEPS, guidance_scale=1.0, candidates=2)
    best_of = output.records[0].best_of
    # Independent scores: the adapter's saved image encoder, loaded on its own, on each candidate.
    encoder = CLIPVisionModelWithProjection.from_pretrained(adapter / "models" / "image_encoder").eval()
    pixels = CLIPImageProcessor(size=32, crop_size=32)(images=output.candidates, return_tensors="pt")
    with torch.no_grad():
        embeds = encoder(pixels.pixel_values).image_embeds
    scores = torch.nn.functional.cosine_similarity(embeds, output.image_embeds, dim=-1)
    # float32 cosine of 1,024-d vectors: the same maths in another batch order, ~1e-6 apart at most.
    assert best_of["scores"] == pytest.approx(scores.tolist(), abs=1e-5)
    assert best_of["kept"] == int(scores.argmax())
    kept_seed = best_of["seeds"][best_of["kept"]]
    alone = ours(
        image_embeds=output.image_embeds, seed=kept_seed, num_inference_steps=STEPS, guidance_scale=1.0
    )
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(output.images[0]))


def test_storyboard_frames_run_and_each_is_its_windows_image(ours, wavs):
    from sound2image.audio import load_audio
    from sound2image.diffusion import iter_images
    from sound2image.diffusion.storyboard import storyboard_windows

    clip = load_audio(wavs[0], mono=False)
    windows = storyboard_windows(clip, 5.0, 5.0)
    assert len(windows) == 2  # a 10 s recording in 5 s windows
    runs = iter_images(ours, [clip], [4], windows=windows, num_inference_steps=STEPS, guidance_scale=1.0)
    frames = [drawn for _, draws in runs for drawn in draws]
    assert [f.record.extra["storyboard"]["index"] for f in frames] == [0, 1]
    for frame in frames:
        alone = ours(
            image_embeds=frame.record.image_embeds, seed=4, num_inference_steps=STEPS, guidance_scale=1.0
        )
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(frame.image))


def test_calibration_uses_the_adapters_image_encoder_and_is_applied(kind, saved, photos, tmp_path, wavs):
    from PIL import Image
    from transformers import CLIPImageProcessor

    model, adapter = saved
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "calib"
    common = ["--model", str(model), "--backbone", kind, "--ip-adapter", str(adapter), "--device", "cpu"]
    assert main(["generate", "--calibrate-images", str(folder), *common, "--out", str(out)]) == 0
    stored = EmbeddingCalibration.load(out)
    # Independently: the mean norm of the adapter's image encoder's embeddings of the photos.
    encoder = get_dummy_image_encoder()
    pixels = CLIPImageProcessor(size=32, crop_size=32)(
        images=[Image.open(p).convert("RGB") for p in photos], return_tensors="pt"
    )
    with torch.no_grad():
        norms = encoder(pixels.pixel_values).image_embeds.norm(dim=-1)
    # float32 norms of 1,024-d vectors averaged over 3: relative error ~1e-6.
    assert stored.target_norm == pytest.approx(float(norms.mean()), rel=1e-5)
    assert stored.num_images == len(photos)
    # Stored beside the adapter's weight file, it is the pipeline's own: the conditioning has its norm.
    copy = tmp_path / "adapter-copy"
    weight = KINDS[kind].default_weight
    (copy / weight).parent.mkdir(parents=True)
    (copy / weight).write_bytes((adapter / weight).read_bytes())
    stored.save((copy / weight).parent)
    pipe = SounDiffPipeline.from_pretrained(model, backbone=kind, ip_adapter=copy / weight, device="cpu")
    conditioning = pipe.build_image_embeds(wavs[0])
    torch.testing.assert_close(conditioning.norm(dim=-1), torch.tensor([stored.target_norm]))


def test_mixing_sounds_and_a_reference_image_uses_the_adapters_encoder(ours, wavs, photos):
    from transformers import CLIPImageProcessor

    from sound2image.data import load_image

    picture = load_image(photos[0])
    mixed = ours.build_image_embeds(wavs[:2], [3.0, 1.0], image=picture, image_weight=0.25)
    # Closed form: unit(0.75 · unit(0.75 · a0 + 0.25 · a1) + 0.25 · unit(image)) × 20 (ImageBind's scale),
    # the image embedded by the adapter's own ViT-H encoder, loaded independently.
    audio = normalize(ours.audio_encoder.embed(list(wavs[:2]), device="cpu").float())
    pixels = CLIPImageProcessor(size=32, crop_size=32)(images=[picture], return_tensors="pt").pixel_values
    with torch.no_grad():
        image = normalize(get_dummy_image_encoder()(pixels).image_embeds)[0]
    sound = normalize(0.75 * audio[0] + 0.25 * audio[1])
    expected = normalize(0.75 * sound + 0.25 * image)[None, :] * 20.0
    # float32 sums and norms of 1,024-d vectors of norm ~20: ~1e-6 relative error.
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)


def test_noise_level_and_unet_are_unclip_only(ours, kind, saved):
    with pytest.raises(UsageError, match=f"noise_level is unCLIP's; the {kind} backbone takes 0, got 3"):
        ours(image_embeds=torch.ones(1, EMBED_DIM), noise_level=3, num_inference_steps=STEPS)
    with pytest.raises(UsageError, match=f"unet applies to the unclip backbone, not {kind}"):
        SounDiffPipeline.from_pretrained(saved[0], backbone=kind, unet=saved[0], device="cpu")


def test_a_bigg_adapter_is_refused_naming_the_space(kind, saved, tmp_path):
    model, _ = saved
    unet = _pipeline_class(kind).from_pretrained(model).unet
    weight = "sdxl_models/ip-adapter_sdxl.bin"
    write_dummy_ip_adapter(tmp_path, unet, weight, image_embed_dim=1280, with_encoder=False)
    with pytest.raises(WeightsError) as info:
        SounDiffPipeline.from_pretrained(model, backbone=kind, ip_adapter=tmp_path / weight, device="cpu")
    message = str(info.value)
    assert "reads 1280-d image embeddings" in message and "1024-d ViT-H space" in message
    assert "\n" not in message and info.value.parameters == ("ip_adapter",)


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("SOUND2IMAGE_OFFLINE", "1")


def test_offline_missing_model_and_adapter_are_one_line_naming_what_to_supply(
    kind, saved, offline_empty_cache, tmp_path, wavs, capsys
):
    default = KINDS[kind].default_model
    with pytest.raises(WeightsError) as info:
        SounDiffPipeline.from_pretrained(backbone=kind, device="cpu")
    message = str(info.value)
    assert message.startswith(f"{default}: {KINDS[kind].what} weights are not in the Hugging Face cache")
    assert "pass model=DIR" in message and "\n" not in message
    with pytest.raises(WeightsError) as info:
        SounDiffPipeline.from_pretrained(saved[0], backbone=kind, device="cpu")
    message = str(info.value)
    assert message.startswith(f"h94/IP-Adapter: IP-Adapter ({KINDS[kind].default_weight}) weights are not")
    assert "pass ip_adapter=FILE" in message and "\n" not in message
    # Through the CLI the parameter is written as its flag.
    args = ["generate", str(wavs[0]), "--backbone", kind, "--model", str(saved[0]), "--out", str(tmp_path)]
    assert main([*args, "--ip-adapter", str(tmp_path / "nope.bin")]) == 1
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith("error: ")
        and "nope.bin: IP-Adapter weights not found; pass --ip-adapter=FILE" in error
    )


def test_adapter_flags_are_refused_for_unclip(saved, tmp_path, capsys):
    assert main(["generate", "x.wav", "--ip-scale", "0.5", "--out", str(tmp_path)]) == 2
    assert "--ip-scale: only for --backbone sd15-ip or sdxl-ip" in capsys.readouterr().err
    with pytest.raises(UsageError, match="ip_adapter applies to the sd15-ip and sdxl-ip backbones"):
        SounDiffPipeline.from_pretrained(saved[0], ip_adapter=saved[1], device="cpu")


def test_unclip_records_name_no_backbone(pipe):
    # The default backbone's records are exactly what they were before backbones existed.
    record = pipe(image_embeds=torch.ones(1, EMBED_DIM), seed=0, num_inference_steps=1).records[0]
    assert "backbone" not in record.model and "ip_scale" not in record.model
    assert pipe.backbone.name == "unclip" and pipe.default_guidance_scale == 10.0
    assert GenerationRecord.from_metadata(record.to_metadata()).model == record.model


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_an_exported_adapter_loads_into_plain_diffusers_and_changes_the_image(
    ours, plain, kind, saved, tmp_path, suffix
):
    from sound2image.diffusion.backbones import ip_adapter_parameters, save_ip_adapter

    model, _ = saved
    unet = ours.unclip.unet
    embeds = torch.linspace(-1.0, 1.0, EMBED_DIM)[None, :]
    # The trainable set: the image projection (weight, bias, LayerNorm) and one to_k_ip/to_v_ip pair
    # per cross-attention layer, and nothing else of the U-Net.
    trainable = ip_adapter_parameters(unet)
    cross = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    assert len(trainable) == 4 + 2 * len(cross)
    original = trainable[4].detach().clone()
    with torch.no_grad():
        trainable[4].mul_(3.0)  # "fine-tune": the first to_k_ip
    try:
        path = save_ip_adapter(unet, tmp_path / f"tuned{suffix}")
        fresh = _pipeline_class(kind).from_pretrained(model)
        fresh.set_progress_bar_config(disable=True)
        fresh.load_ip_adapter(tmp_path, subfolder="", weight_name=path.name, image_encoder_folder=None)
        tuned = _plain_call(fresh, embeds, 5.0, 9)
        # Plain diffusers with the exported file draws what our pipeline draws with the tuned weights ...
        kwargs = {"seed": 9, "num_inference_steps": STEPS, "guidance_scale": 5.0, "output_type": "np"}
        assert np.array_equal(tuned, ours(image_embeds=embeds, **kwargs).images)
    finally:
        with torch.no_grad():
            trainable[4].copy_(original)
    # ... and differs from the original adapter's image.
    assert not np.array_equal(tuned, _plain_call(plain, embeds, 5.0, 9))


def test_a_weight_file_takes_the_vit_h_encoder_not_the_bigg_one_beside_it(kind, saved, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model, adapter = saved
    weight = KINDS[kind].default_weight
    big = CLIPVisionConfig(
        hidden_size=32, projection_dim=1280, num_hidden_layers=1, num_attention_heads=4, image_size=32,
        intermediate_size=37, patch_size=4,
    )  # fmt: skip
    # h94's layout: a 1,280-d (bigG) encoder beside the weights, the ViT-H one in models/image_encoder.
    copy = tmp_path / "h94"
    (copy / weight).parent.mkdir(parents=True)
    (copy / weight).write_bytes((adapter / weight).read_bytes())
    CLIPVisionModelWithProjection(big).save_pretrained((copy / weight).parent / "image_encoder")
    get_dummy_image_encoder().save_pretrained(copy / "models" / "image_encoder")
    pipe = SounDiffPipeline.from_pretrained(model, backbone=kind, ip_adapter=copy / weight, device="cpu")
    assert pipe.unclip.image_encoder.config.projection_dim == EMBED_DIM
    # A file whose only nearby encoder is in another space loads without one, and says so when asked.
    lone = tmp_path / "lone" / "w.bin"
    lone.parent.mkdir()
    lone.write_bytes((adapter / weight).read_bytes())
    CLIPVisionModelWithProjection(big).save_pretrained(lone.parent / "image_encoder")
    other = SounDiffPipeline.from_pretrained(model, backbone=kind, ip_adapter=lone, device="cpu")
    assert other.unclip.image_encoder is None
    with pytest.raises(UsageError, match="loaded without an image encoder"):
        other.encode_image(None)


def test_attention_slicing_is_refused_because_it_drops_the_adapter(ours, kind, saved, wavs, tmp_path, capsys):
    # diffusers' set_attention_slice installs SlicedAttnProcessor everywhere, replacing the adapter's
    # IPAdapterAttnProcessor2_0: the image branch would be gone. Refused before anything loads or changes.
    with pytest.raises(UsageError, match=f"attention_slicing: not with the {kind} backbone"):
        ours.enable_low_memory(attention_slicing=True)
    assert {type(p).__name__ for n, p in ours.unclip.unet.attn_processors.items() if "attn2" in n} == {
        "IPAdapterAttnProcessor2_0"
    }
    model, adapter = saved
    args = [str(wavs[0]), "--backbone", kind, "--model", str(model), "--ip-adapter", str(adapter)]
    assert main(["generate", *args, "--attention-slicing", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert f"error: --attention-slicing: not with the {kind} backbone" in capsys.readouterr().err


def test_several_rows_are_refused_and_images_per_prompt_share_the_row(ours, plain):
    # diffusers repeats an adapter's embeddings for the whole batch and its attention processor folds
    # them into the batch dimension, so two rows would mix into every image: refused, naming the input.
    rows = torch.stack([torch.linspace(-1.0, 1.0, EMBED_DIM), torch.linspace(1.0, -1.0, EMBED_DIM)])
    with pytest.raises(UsageError, match="image_embeds: the .* backbone draws one conditioning row per call"):
        ours(image_embeds=rows, num_inference_steps=STEPS)
    # One row, two images: plain diffusers with num_images_per_prompt=2 and the same generators.
    generators = [torch.Generator("cpu").manual_seed(s) for s in (10, 11)]
    kwargs = {"num_inference_steps": STEPS, "guidance_scale": 5.0, "output_type": "np"}
    output = ours(image_embeds=rows[:1], num_images_per_prompt=2, generator=generators, **kwargs)
    plain.set_ip_adapter_scale(1.0)
    stacked = torch.cat([torch.zeros(1, 1, EMBED_DIM), rows[:1, None, :]])
    generators = [torch.Generator("cpu").manual_seed(s) for s in (10, 11)]
    expected = plain(
        prompt="", ip_adapter_image_embeds=[stacked], num_images_per_prompt=2, generator=generators, **kwargs
    ).images
    assert np.array_equal(output.images, expected)
    assert [r.seed for r in output.records] == [None, None]  # not redrawable from a seed alone
