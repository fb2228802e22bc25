"""The image cache: keys, what is drawn, resuming a killed run, reuse across systems, bad items, and
two processes drawing what one process draws.

These tests check generation, so scoring and the report are the stand-ins of tests/evaluation/stubs.py
(fixture ``stubbed``); tests/evaluation/test_cli_evaluate.py runs the real ones end to end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sound2image.diffusion import SounDiffPipeline
from sound2image.evaluation.generation import (
    CACHE_DIR,
    GenerationOptions,
    cache_key,
    generate_images,
    sampling_settings,
)
from sound2image.evaluation.systems import SystemSpec, system_fingerprint
from sound2image.outputs import file_sha256, read_png_metadata
from tests.evaluation import stubs
from tests.evaluation.conftest import STEPS, pairs
from tests.evaluation.stubs import item_type
from tests.paths import PROJECT_ROOT

OPTIONS = GenerationOptions(steps=STEPS, device="cpu")
LAUNCHER = Path(__file__).with_name("launch_evaluate.py")


def items(count: int) -> list:
    make = item_type()
    return [
        make(
            id=f"{scene}/{audio.stem}", label=scene, audio=audio, image=image, audio_sha256=file_sha256(audio)
        )
        for audio, image, scene in pairs(count)
    ]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def count_calls(monkeypatch):
    """Count SounDiffPipeline.__call__ (one per image with candidates=1); ``fail_after`` makes call
    number ``fail_after + 1`` raise KeyboardInterrupt, as a killed run stops."""
    state = {"calls": 0, "fail_after": None}
    original = SounDiffPipeline.__call__

    def counted(self, *args, **kwargs):
        if state["fail_after"] is not None and state["calls"] >= state["fail_after"]:
            raise KeyboardInterrupt
        state["calls"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SounDiffPipeline, "__call__", counted)
    return state


def test_a_key_changes_with_each_of_its_parts_and_only_with_them() -> None:
    settings = {"prompt": "", "steps": 2}
    key = cache_key("a" * 64, "b" * 64, 1, settings)
    assert key == cache_key("a" * 64, "b" * 64, 1, dict(reversed(settings.items())))  # order-free
    assert key.startswith("a" * 16 + "/") and key.endswith(".png") and len(key) == 16 + 1 + 32 + 4
    others = {
        cache_key("c" * 64, "b" * 64, 1, settings),
        cache_key("a" * 64, "c" * 64, 1, settings),
        cache_key("a" * 64, "b" * 64, 2, settings),
        cache_key("a" * 64, "b" * 64, 1, {**settings, "steps": 3}),
        cache_key("a" * 64, "b" * 64, 1, {**settings, "prompt": "x"}),
    }
    assert key not in others and len(others) == 5


def test_the_condition_steps_size_dtype_and_device_kind_are_settings() -> None:
    plain = SystemSpec("b", "B", "soundiff", "m")
    conditioned = SystemSpec("c", "C", "soundiff", "m", condition="x")
    base = sampling_settings(plain, GenerationOptions(steps=STEPS, dtype="fp16"), "cuda:1")
    assert base == {
        "candidates": 1,
        "device": "cuda",  # which GPU does not change the pixels; the kind of device does
        "prompt": "",
        "steps": STEPS,
        "guidance_scale": 10.0,
        "size": None,
        "scheduler": None,
        "noise_level": 0,
        "dtype": "float16",
    }
    # "auto" keys as what it resolves to: float32 on the CPU, float16 on CUDA.
    assert sampling_settings(plain, OPTIONS, "cpu")["dtype"] == "float32"
    assert sampling_settings(plain, OPTIONS, "cuda")["dtype"] == "float16"
    assert sampling_settings(conditioned, OPTIONS, "cpu")["prompt"] == "x"
    it = sampling_settings(SystemSpec("t", "T", "transformer", "d"), GenerationOptions(top_k=5), "cpu")
    assert it == {
        "candidates": 1,
        "device": "cpu",
        "temperature": None,
        "top_k": 5,
        "top_p": None,
        "guidance_scale": None,
    }


@pytest.mark.numeric
def test_each_cached_image_is_the_pipelines_own_draw_with_its_record(tmp_path, base_dir) -> None:
    chosen = items(2)
    specs = [
        SystemSpec("baseline", "Baseline", "soundiff", str(base_dir)),
        SystemSpec("baseline+cond", "Baseline + c", "soundiff", str(base_dir), condition="a satellite image"),
    ]
    result = generate_images(chosen, specs, [3, 4], tmp_path / "out", OPTIONS, progress=False)
    assert (result.drawn, result.reused, result.bad_items) == (8, 0, [])
    assert sorted(result.images) == ["baseline", "baseline+cond"]
    pngs = sorted((tmp_path / "out" / CACHE_DIR).rglob("*.png"))
    assert len(pngs) == 8 and not list((tmp_path / "out").rglob("*.tmp"))
    pipe = SounDiffPipeline.from_pretrained(str(base_dir), device="cpu")
    for spec in specs:
        for item in chosen:
            images = result.images[spec.id][item.id]
            assert [image.seed for image in images] == [3, 4]
            for image in images:
                meta = read_png_metadata(image.path)
                assert meta["seed"] == image.seed and meta["prompt"] == (spec.condition or "")
                assert meta["audio"][0]["sha256"] == item.audio_sha256
                assert meta["evaluation"] == {"system": spec.id, "item": item.id}
                fingerprint = system_fingerprint(spec)
                settings = sampling_settings(spec, OPTIONS, "cpu")
                key = cache_key(fingerprint, item.audio_sha256, image.seed, settings)
                assert image.path == tmp_path / "out" / CACHE_DIR / key
    # An independent draw: the pipeline called on the sound file itself with the same seed and prompt.
    item, spec = chosen[1], specs[1]
    direct = pipe(str(item.audio), seed=4, prompt=spec.condition, num_inference_steps=STEPS).images[0]
    assert np.array_equal(pixels(result.images[spec.id][item.id][1].path), np.asarray(direct))


def test_a_killed_run_resumes_drawing_only_the_missing_images(tmp_path, base_dir, count_calls) -> None:
    chosen, seeds = items(3), [1, 2]
    specs = [SystemSpec("baseline", "Baseline", "soundiff", str(base_dir))]
    total, killed_after = len(chosen) * len(seeds), 4
    count_calls["fail_after"] = killed_after
    with pytest.raises(KeyboardInterrupt):
        generate_images(chosen, specs, seeds, tmp_path / "out", OPTIONS, progress=False)
    assert len(list((tmp_path / "out" / CACHE_DIR).rglob("*.png"))) == killed_after
    count_calls.update(calls=0, fail_after=None)
    result = generate_images(chosen, specs, seeds, tmp_path / "out", OPTIONS, progress=False)
    assert count_calls["calls"] == total - killed_after
    assert (result.drawn, result.reused) == (total - killed_after, killed_after)
    count_calls["calls"] = 0
    again = generate_images(chosen, specs, seeds, tmp_path / "out", OPTIONS, progress=False)
    assert count_calls["calls"] == 0 and again.reused == total


def test_adding_a_system_or_a_seed_draws_only_what_is_new(tmp_path, base_dir, count_calls) -> None:
    chosen = items(2)
    baseline = SystemSpec("baseline", "Baseline", "soundiff", str(base_dir))
    conditioned = SystemSpec("baseline+cond", "Baseline + c", "soundiff", str(base_dir), condition="x")
    generate_images(chosen, [baseline], [1], tmp_path / "out", OPTIONS, progress=False)
    assert count_calls["calls"] == 2
    count_calls["calls"] = 0
    generate_images(chosen, [baseline, conditioned], [1, 2], tmp_path / "out", OPTIONS, progress=False)
    # New: the conditioned column (2 items x 2 seeds) and seed 2 of the baseline (2 items).
    assert count_calls["calls"] == 4 + 2


def test_a_bad_sound_is_listed_and_the_rest_are_scored(tmp_path, base_dir, stubbed, capsys) -> None:
    good = pairs(2)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt nothing of use here")
    rows = [{"audio": str(a), "image": str(i), "label": s} for a, i, s in good]
    rows.append({"audio": str(broken), "image": str(good[0][1]), "label": "beach"})
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "audio,image,label\n" + "".join(f"{r['audio']},{r['image']},{r['label']}\n" for r in rows)
    )
    split = _all_in_val(manifest, tmp_path / "split.json")
    from sound2image.cli.main import main
    from sound2image.data import scan_pairs

    args = ["evaluate", "--data", str(manifest), "--split", str(split), "--systems", "baseline"]
    args += [
        "--model",
        str(base_dir),
        "--steps",
        str(STEPS),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 2  # some items were skipped
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    err = capsys.readouterr().err
    assert "1 item(s) skipped:" in err and "damaged WAV file" in err and "Traceback" not in err

    keys = {Path(pair.audio).name: pair.key for pair in scan_pairs(manifest).pairs}
    assert [entry["item"] for entry in results["bad_items"]] == [keys["broken.wav"]]
    problem = results["bad_items"][0]["problem"]
    assert "broken.wav" in problem and "damaged WAV file" in problem and "\n" not in problem
    scored_ids, generated = stubbed[0]
    assert sorted(generated["baseline"]) == sorted(keys[Path(a).name] for a, _, _ in good)
    assert sorted(scored_ids) == sorted(generated["baseline"])  # the bad item is not scored
    assert sorted(item["id"] for item in results["items"]) == sorted(generated["baseline"])
    assert results["data"]["n_items"] == 2


def _all_in_val(data: Path, path: Path) -> Path:
    """A split file putting every pair of ``data`` in validation."""
    from sound2image.data import Split, SplitSettings, pairs_fingerprint, scan_pairs

    found = scan_pairs(data).pairs
    Split([], found, SplitSettings(), pairs_fingerprint(found), False).save(path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # ~40 s on 2 shared cores: accelerate starts two Python processes that each load the model
def test_two_processes_draw_exactly_what_one_process_draws(tmp_path, base_dir, monkeypatch) -> None:
    # Real scoring when it is there (then the numbers are compared too), else the stand-ins on both sides.
    if not stubs.scoring_available():
        stubs.install(monkeypatch.setattr)
    manifest = tmp_path / "pairs.csv"
    rows = pairs(3)
    manifest.write_text("audio,image,label\n" + "".join(f"{a},{i},{s}\n" for a, i, s in rows))
    split = _all_in_val(manifest, tmp_path / "split.json")
    args = [
        "evaluate", "--data", str(manifest), "--split", str(split), "--systems", "baseline",
        "--conditions", "none,a satellite image", "--model", str(base_dir), "--seeds", "1", "2",
        "--steps", str(STEPS), "--features", "clip", "--resamples", "50", "--device", "cpu",
    ]  # fmt: skip
    from sound2image.cli.main import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(LAUNCHER), *args, "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    # Only the main process scores and writes (CI once saw a second writer of report.html).
    assert done.stderr.count("evaluated 3 item(s)") == 1, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [item["images"] for item in two["items"]] == [item["images"] for item in one["items"]]
    assert len(one["items"]) == 3 and all(len(item["images"]["baseline+cond"]) == 2 for item in one["items"])
    for item in one["items"]:
        for images in item["images"].values():
            for image in images:
                assert np.array_equal(
                    pixels(tmp_path / "two" / image["path"]), pixels(tmp_path / "one" / image["path"])
                )
    # 3 items x 2 seeds x 2 columns, and nothing else.
    assert len(list((tmp_path / "two" / CACHE_DIR).rglob("*.png"))) == 12
    for part in ("metrics", "reference", "per_class_aic", "data", "systems", "bad_items"):
        assert two[part] == one[part], part


@pytest.fixture
def transformer_dir(tmp_path) -> Path:
    """A tiny random Image Transformer (8×8 images, 6 × 10 features) with a tiny scorer in reranker/."""
    import torch

    from sound2image.audio.sections import SectionFeatureConfig
    from sound2image.transformer.reranker import AudioImageScorer, RerankerConfig
    from tests.transformer.tiny import tiny_model

    directory = tmp_path / "it" / "model"
    features = SectionFeatureConfig(sample_rate=8000, duration=0.015, num_sections=6)  # 6 x 10 bins
    assert features.num_bins == 10
    tiny_model().save_pretrained(directory, {"features": features.to_dict(), "classes": ["a", "b"]})
    torch.manual_seed(0)
    shape = dict(
        audio_sections=6, audio_bins=10, image_size=8, embed_dim=16, audio_channels=16, image_width=8
    )
    AudioImageScorer(RerankerConfig(**shape)).eval().save_pretrained(directory / "reranker")
    return directory


def test_transformer_images_are_cached_and_redraw_from_their_records(tmp_path, transformer_dir) -> None:
    from sound2image.evaluation.run import TransformerPairing
    from sound2image.transformer.runner import regenerate

    chosen = items(2)
    spec = SystemSpec("it", "IT", "transformer", str(transformer_dir), candidates=2)
    result = generate_images(chosen, [spec], [1, 2], tmp_path / "out", OPTIONS, progress=False)
    assert (result.drawn, result.bad_items) == (4, [])
    for item in chosen:
        for image in result.images["it"][item.id]:
            meta = read_png_metadata(image.path)
            assert meta["best_of"]["candidates"] == 2 and meta["audio"][0]["sha256"] == item.audio_sha256
            assert pixels(image.path).shape == (8, 8, 3)
            again = regenerate(image.path)  # the runner's own redraw from the PNG's record alone
            assert np.array_equal(np.asarray(Image.open(image.path)), again.image)
    pairing = TransformerPairing(str(transformer_dir))
    audio = pairing.embed_audio(chosen)
    images = pairing.embed_images([Image.open(result.images["it"][i.id][0].path) for i in chosen])
    assert tuple(audio.shape) == tuple(images.shape) == (2, 16)
    # The scorer's embeddings are unit vectors (float32 norm: within a few eps of 1).
    assert np.allclose(audio.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_the_progress_bar_shows_the_rate_and_the_time_left(tmp_path, base_dir, monkeypatch) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    specs = [SystemSpec("baseline", "Baseline", "soundiff", str(base_dir))]
    generate_images(items(2), specs, [1], tmp_path / "out", OPTIONS, progress=True)
    shown = screen.getvalue()
    # tqdm's meter after an image: "generating:  50%|#####     | 1/2 [00:00<00:01,  1.25image/s]" (or
    # "2.50s/image" when slower than one image a second, as on a busy machine), that is
    # [elapsed<time left, rate] (redrawn after every image).
    import re

    rate = r"(?:[\d.]+image/s|[\d.]+s/image)"
    assert re.search(rf"generating: +50%.*1/2 \[\d\d:\d\d<\d\d:\d\d, +{rate}\]", shown), shown


def test_a_failed_image_is_listed_and_its_items_other_images_are_still_drawn(tmp_path, base_dir, monkeypatch):
    original = SounDiffPipeline.__call__
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the first item's seed 2 (items are drawn item by item, seed by seed)
            raise RuntimeError("out of memory")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SounDiffPipeline, "__call__", flaky)
    chosen = items(2)
    specs = [
        SystemSpec("baseline", "Baseline", "soundiff", str(base_dir)),
        SystemSpec("baseline+cond", "Baseline + c", "soundiff", str(base_dir), condition="x"),
    ]
    result = generate_images(chosen, specs, [1, 2], tmp_path / "out", OPTIONS, progress=False)
    assert result.bad_items == [
        {"item": chosen[0].id, "problem": "baseline seed 2: RuntimeError: out of memory"}
    ]
    assert [image.seed for image in result.images["baseline"][chosen[0].id]] == [1]
    assert [image.seed for image in result.images["baseline+cond"][chosen[0].id]] == [1, 2]
    assert result.drawn == 7 and calls["n"] == 8


@pytest.mark.numeric
def test_the_soundiff_pairing_embeds_sounds_in_batches_as_one_by_one(base_dir) -> None:
    import torch

    from sound2image.audio import load_audio
    from sound2image.evaluation.run import SounDiffPairing

    pipe = SounDiffPipeline.from_pretrained(str(base_dir), device="cpu")
    pairing = SounDiffPairing(pipe, batch_size=2)
    chosen = items(3)
    batched = pairing.embed_audio(chosen)  # batches of 2 + 1
    alone = torch.cat([pipe.encode_audio([load_audio(item.audio, mono=False)]) for item in chosen])
    # Same clips, other batch sizes: only the float order inside batched matmuls differs (~1e-7 relative);
    # the vectors have norm ~20 (ImageBind's scale), so 1e-4 absolute is ~1,000x that rounding.
    assert tuple(batched.shape) == (3, 1024)
    assert torch.allclose(batched, alone, atol=1e-4, rtol=0)
    assert pairing.circular and pairing.name.startswith("imagebind-audio/")
    picture = Image.open(pairs(1)[0][1])
    assert torch.allclose(
        pairing.embed_images([picture]), pipe.encode_image(picture.convert("RGB")), atol=1e-5
    )


def test_compile_option_samples_every_transformer_step_through_the_compiled_step(
    tmp_path, transformer_dir, monkeypatch
) -> None:
    """``GenerationOptions(compile=True)`` (``evaluate --compile``) reaches the sampling step: every step
    of every image goes through what ``torch.compile`` returned (a counting pass-through here, so no
    compiler runs), and the pixels are the eager run's (the same arithmetic)."""
    import dataclasses

    import torch

    steps: list[int] = []
    monkeypatch.setattr(torch, "compile", lambda f, **o: lambda *a: steps.append(1) or f(*a))
    chosen = items(2)
    spec = SystemSpec("it", "IT", "transformer", str(transformer_dir))
    eager = generate_images(chosen, [spec], [1], tmp_path / "eager", OPTIONS, progress=False)
    assert steps == []
    compiled_options = dataclasses.replace(OPTIONS, compile=True)
    compiled = generate_images(chosen, [spec], [1], tmp_path / "compiled", compiled_options, progress=False)
    assert len(steps) >= 8 * 8 and len(steps) % (8 * 8) == 0  # whole images, batched or not
    for item in chosen:
        (a,), (b,) = eager.images["it"][item.id], compiled.images["it"][item.id]
        assert np.array_equal(pixels(a.path), pixels(b.path))
