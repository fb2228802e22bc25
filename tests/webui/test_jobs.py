"""The web app's job module without a browser: page values -> library calls -> files; limits; temporary
folders; cancelling; no module globals."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sound2image.errors import AudioTooLongError, CorruptAudioError, NotAudioError, UsageError
from sound2image.outputs import read_png_metadata
from sound2image.webui import jobs
from sound2image.webui.jobs import (
    GenerateRequest,
    JobCancelled,
    Limits,
    LoadedModel,
    ModelCache,
    ModelChoice,
    file_stem,
    keep_copies,
    model_choices,
    parse_weights,
    regenerate_png,
    request_folder,
    resolve_seed,
    run_job,
)
from tests.webui.conftest import SIZE, STEPS


@pytest.fixture(scope="module")
def cache(tiny_dir: Path) -> ModelCache:
    return ModelCache(model_choices([str(tiny_dir)]), device="cpu", dtype="float32")


def _request(cache: ModelCache, sounds: list[Path], **values: object) -> GenerateRequest:
    settings: dict = {"steps": STEPS, "size": SIZE, "seed": 7}
    settings.update(values)
    return GenerateRequest(cache.labels[0], [str(s) for s in sounds], **settings)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


# ------------------------------------------------------------------------------------ model list


def test_model_choices_name_each_family_and_put_unets_on_the_first_pipeline() -> None:
    assert model_choices() == [ModelChoice("SounDiff baseline", "soundiff")]
    got = model_choices(["transformer:runs/t", "pipes/a", "baseline"], ["runs/u"])
    assert got == [
        ModelChoice("Image Transformer: runs/t", "transformer", "runs/t"),
        ModelChoice("SounDiff: pipes/a", "soundiff", "pipes/a"),
        ModelChoice("SounDiff baseline", "soundiff"),
        ModelChoice("SounDiff fine-tuned: runs/u", "soundiff", "pipes/a", "runs/u"),
    ]
    assert model_choices([], ["runs/u"]) == [
        ModelChoice("SounDiff fine-tuned: runs/u", "soundiff", None, "runs/u")
    ]
    with pytest.raises(UsageError, match=r"^models: SounDiff baseline is given twice$"):
        model_choices(["baseline", "baseline"])
    with pytest.raises(UsageError, match=r"transformer:DIR"):
        model_choices(["transformer:"])


def test_each_model_loads_once_even_when_requests_race_for_it() -> None:
    calls: list[str] = []

    def slow_loader(choice: ModelChoice, device: str, dtype: str) -> LoadedModel:
        calls.append(choice.label)
        time.sleep(0.05)  # long enough for the other threads to arrive while it loads
        return LoadedModel(choice, object())

    cache = ModelCache(model_choices(["baseline", "transformer:t"]), loader=slow_loader)
    got: list[LoadedModel] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("SounDiff baseline"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["SounDiff baseline"]  # four requests, one load
    assert all(g is got[0] for g in got)
    assert cache.loaded() == ["SounDiff baseline"]  # the transformer is not loaded until asked for
    with pytest.raises(
        UsageError, match=r"^model: 'nope' is not one of SounDiff baseline, Image Transformer: t$"
    ):
        cache.get("nope")


# ------------------------------------------------------------------------------------ page values


def test_weights_and_seeds_from_the_page() -> None:
    assert parse_weights("0.7, 0.3", 2) == [0.7, 0.3]
    assert parse_weights("  ", 3) is None
    with pytest.raises(UsageError, match=r"^weights: 1 value\(s\) for 2 sound\(s\)$"):
        parse_weights("1", 2)
    with pytest.raises(UsageError, match=r"^weights: 'a b' is not a list of numbers$"):
        parse_weights("a b", 2)
    assert resolve_seed("12") == 12
    assert resolve_seed(12.0) == 12
    assert resolve_seed("9223372036854775807") == 2**63 - 1  # exact: not through a float
    drawn = {resolve_seed("random") for _ in range(5)} | {resolve_seed(""), resolve_seed(None)}
    assert all(0 <= s < 2**31 for s in drawn) and len(drawn) > 1
    for bad in ("1.5", "-1", "seven"):
        with pytest.raises(UsageError, match=r"^seed: "):
            resolve_seed(bad)


def test_file_stem_is_a_safe_name() -> None:
    assert file_stem("/tmp/x/my sound (2).wav") == "my_sound_2"
    assert file_stem("/tmp/x/...wav") == "sound"


# ------------------------------------------------------------------------------------ limits


def test_limits_refuse_big_long_and_non_audio_files_with_one_line(bad_files: dict[str, Path], wavs) -> None:
    limits = Limits(max_upload_mb=1)
    with pytest.raises(UsageError, match=r"^big\.wav: 1\.5 MB, more than the 1 MB upload limit$"):
        limits.check_audio(bad_files["big"])
    with pytest.raises(
        NotAudioError, match=r"^notes\.wav: not a recognised audio format \(looks like text\)$"
    ):
        limits.check_audio(bad_files["text"])
    with pytest.raises(CorruptAudioError, match=r"^broken\.wav: truncated: "):
        limits.check_audio(bad_files["corrupt"])
    # 10 s against a 0.1 minute (6 s) limit
    with pytest.raises(
        AudioTooLongError, match=r"^00017\.wav: 10\.0 s long, more than the 0\.1 minute limit \(6 s\)$"
    ):
        Limits(max_minutes=0.1).check_audio(wavs[0])
    Limits(max_upload_mb=1, max_minutes=0.2).check_audio(wavs[0])  # 0.44 MB, 10 s: accepted
    with pytest.raises(UsageError, match=r"max_upload_mb must be finite and > 0"):
        Limits(max_upload_mb=0)


def test_a_refused_request_loads_no_model_and_leaves_no_folder(tmp_path: Path, bad_files) -> None:
    loads: list[str] = []
    cache = ModelCache(model_choices(), loader=lambda c, d, t: loads.append(c.label))  # type: ignore[arg-type, return-value]
    with pytest.raises(NotAudioError), request_folder(tmp_path / "requests") as folder:
        run_job(GenerateRequest(cache.labels[0], [str(bad_files["text"])]), cache, folder)
    assert loads == [] and list((tmp_path / "requests").iterdir()) == []
    with pytest.raises(UsageError, match=r"^no sound given"):
        run_job(GenerateRequest(cache.labels[0], []), cache, tmp_path)
    with pytest.raises(UsageError, match=r"^num_images must be an integer in \[1, 64\], got 65$"):
        run_job(GenerateRequest(cache.labels[0], ["x.wav"], num_images=65), cache, tmp_path)


# ------------------------------------------------------------------------------------ generation


def test_images_equal_the_library_call_with_the_same_settings(
    cache: ModelCache, wavs, tmp_path: Path
) -> None:
    """Two images (seeds 7, 8) through the page's path; the same pixels from the pipeline called directly."""
    from sound2image.audio import load_audio

    seen: list[tuple[int, int, str]] = []
    with request_folder(tmp_path / "requests") as folder:
        result = run_job(
            _request(cache, [wavs[0]], num_images=2, prompt="a beach"),
            cache,
            folder,
            progress=lambda *a: seen.append(a),
        )
        assert [i.path.name for i in result.images] == ["00017_seed7.png", "00017_seed8.png"]
        assert result.seeds == [7, 8]
        pipe = cache.get(cache.labels[0]).model
        clip = load_audio(wavs[0], mono=False)
        for image in result.images:
            direct = pipe(
                clip, prompt="a beach", num_inference_steps=STEPS, height=SIZE, width=SIZE, seed=image.seed
            )
            assert np.array_equal(_pixels(image.path), np.asarray(direct.images[0]))
            metadata = read_png_metadata(image.path)
            assert metadata["seed"] == image.seed and metadata["prompt"] == "a beach"
            assert metadata["num_inference_steps"] == STEPS and metadata["width"] == SIZE
            assert metadata["audio"][0]["file"] == "00017.wav" and "path" not in metadata["audio"][0]
            assert f"seed {image.seed}" in image.caption and "2 steps" in image.caption
    assert not (tmp_path / "requests").exists() or list((tmp_path / "requests").iterdir()) == []
    # 2 images × 2 steps, counted one by one to the end
    assert seen == [(k, 4, "denoising") for k in range(1, 5)]


def test_best_of_n_shows_the_kept_score_and_the_scheduler_is_restored(
    cache: ModelCache, wavs, tmp_path
) -> None:
    pipe = cache.get(cache.labels[0]).model
    before = type(pipe.unclip.scheduler)
    result = run_job(_request(cache, [wavs[0]], candidates=2, scheduler="euler"), cache, tmp_path)
    (image,) = result.images
    best = read_png_metadata(image.path)["best_of"]
    assert image.score == pytest.approx(best["scores"][best["kept"]], abs=1e-6)  # float32 cosine, twice
    assert image.score == pytest.approx(max(best["scores"]), abs=1e-6)
    assert read_png_metadata(image.path)["scheduler"] == "euler"
    assert type(pipe.unclip.scheduler) is before


def test_blend_and_reference_image_are_recorded(cache: ModelCache, wavs, tmp_path: Path) -> None:
    photo = next((wavs[0].parents[2] / "vision" / "beach").glob("*.jpg"))
    request = _request(cache, wavs, weights=[0.7, 0.3], image=str(photo), image_weight=0.25)
    (image,) = run_job(request, cache, tmp_path).images
    metadata = read_png_metadata(image.path)
    assert [a["weight"] for a in metadata["audio"]] == [0.7, 0.3]
    assert metadata["image"]["weight"] == 0.25 and metadata["image"]["file"] == photo.name
    assert image.path.name == "mix_seed7.png"


def test_storyboard_gives_one_frame_per_window_and_a_contact_sheet(cache: ModelCache, wavs, tmp_path) -> None:
    result = run_job(_request(cache, [wavs[0]], storyboard=True, window=2.5), cache, tmp_path)
    assert len(result.images) == 4  # 10 s in 2.5 s windows, no overlap
    assert [read_png_metadata(i.path)["storyboard"]["index"] for i in result.images] == [0, 1, 2, 3]
    (sheet,) = result.sheets
    assert read_png_metadata(sheet)["frames"] == [i.path.name for i in result.images]
    result = run_job(_request(cache, [wavs[0]], storyboard=True, window=4.0, hop=3.0), cache, tmp_path / "b")
    assert len(result.images) == 3  # starts 0, 3, then the last aligned to the end: 6 -> 10


def test_cancel_stops_at_the_next_step_and_the_folder_goes(cache: ModelCache, wavs, tmp_path: Path) -> None:
    flag = threading.Event()
    steps: list[int] = []

    def on_progress(done: int, total: int, text: str) -> None:
        steps.append(done)
        flag.set()  # the user presses Cancel during the first step

    with pytest.raises(JobCancelled), request_folder(tmp_path / "requests") as folder:
        run_job(_request(cache, [wavs[0]], num_images=3), cache, folder, progress=on_progress, cancel=flag)
    assert steps == [1] and list((tmp_path / "requests").iterdir()) == []
    pipe = cache.get(cache.labels[0]).model
    assert "progress_bar" not in vars(pipe.unclip)  # the step hook is gone


def test_regenerate_from_the_png_gives_identical_pixels(cache: ModelCache, wavs, tmp_path: Path) -> None:
    (image,) = run_job(_request(cache, [wavs[1]], seed=11, candidates=2), cache, tmp_path).images
    again = regenerate_png(image.path, cache, tmp_path / "again")
    assert np.array_equal(_pixels(again.path), _pixels(image.path))
    assert read_png_metadata(again.path)["regenerated_from"] == image.path.name
    text = tmp_path / "x.png"
    text.write_text("not a png")
    with pytest.raises(UsageError, match=r"^x\.png: not a PNG image$"):
        regenerate_png(text, cache, tmp_path)


def test_keep_copies_only_with_out(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"png")
    assert keep_copies([source], None) == []
    (kept,) = keep_copies([source], tmp_path / "out")
    assert kept.read_bytes() == b"png" and kept.parent.parent == tmp_path / "out"


def test_transformer_images_and_regeneration(transformer_dir: Path, wavs, tmp_path: Path) -> None:
    cache = ModelCache(model_choices([f"transformer:{transformer_dir}"]), device="cpu")
    request = GenerateRequest(cache.labels[0], [str(wavs[0])], seed=3, candidates=2)
    (image,) = run_job(request, cache, tmp_path).images
    best = read_png_metadata(image.path)["best_of"]
    assert image.score == best["scores"][best["kept"]] and _pixels(image.path).shape == (32, 32)
    again = regenerate_png(image.path, cache, tmp_path / "again", sound=str(wavs[0]))
    assert np.array_equal(_pixels(again.path), _pixels(image.path))
    with pytest.raises(UsageError, match=r"^00018\.wav: not the sound this image was made from"):
        regenerate_png(image.path, cache, tmp_path / "b", sound=str(wavs[1]))
    with pytest.raises(UsageError, match=r"^the Image Transformer draws from one sound"):
        run_job(GenerateRequest(cache.labels[0], [str(w) for w in wavs]), cache, tmp_path)


@pytest.mark.numeric
@pytest.mark.parametrize(("drawn_with", "served_later"), [("float16", "float32"), ("float32", "float16")])
def test_transformer_decoder_dtype_is_served_recorded_and_redrawn_as_recorded(
    transformer_dir: Path, wavs, tmp_path: Path, monkeypatch, drawn_with: str, served_later: str
) -> None:
    """`serve --decoder-dtype` converts the served model; a PNG is redrawn in the precision it records,
    whatever the app serves now (a fresh model for it when they differ)."""
    from sound2image.transformer import runner

    sampled_with: list[str] = []
    real = runner.iter_images

    def spy(model, *args, **kwargs):
        sampled_with.append(model.decoder_dtype)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(runner, "iter_images", spy)
    first = ModelCache(model_choices([f"transformer:{transformer_dir}"]), "cpu", decoder_dtype=drawn_with)
    (image,) = run_job(GenerateRequest(first.labels[0], [str(wavs[0])], seed=5), first, tmp_path).images
    assert sampled_with == [drawn_with]
    assert read_png_metadata(image.path)["model"].get("decoder_dtype") == (
        None if drawn_with == "float32" else drawn_with
    )
    later = ModelCache(model_choices([f"transformer:{transformer_dir}"]), "cpu", decoder_dtype=served_later)
    again = regenerate_png(image.path, later, tmp_path / "again", sound=str(wavs[0]))
    assert sampled_with == [drawn_with, drawn_with]
    assert np.array_equal(_pixels(again.path), _pixels(image.path))
    assert later.get(later.labels[0]).model.decoder_dtype == served_later  # the served one is untouched


def test_an_unknown_decoder_dtype_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^decoder_dtype: 'float8' is not one of float32, float16"):
        ModelCache(model_choices(["baseline"]), decoder_dtype="float8")


def test_no_module_globals_hold_user_data() -> None:
    """Module-level names of the web app are functions, classes, strings, numbers and tuples only: no
    list, dict or set that a request could fill."""
    from sound2image.webui import app

    for module in (jobs, app):
        for name, value in vars(module).items():
            if name.startswith("__"):
                continue
            assert not isinstance(value, (list, dict, set, bytearray)), f"{module.__name__}.{name}"


def test_a_compiling_model_cache_samples_every_step_through_the_compiled_step(
    transformer_dir: Path, wavs, tmp_path: Path, monkeypatch
) -> None:
    """`serve --compile`: the served Image Transformer's steps all go through what ``torch.compile``
    returned (a counting pass-through here, so no compiler runs); the pixels are the eager model's."""
    import torch

    steps: list[int] = []
    monkeypatch.setattr(torch, "compile", lambda f, **o: lambda *a: steps.append(1) or f(*a))
    choices = model_choices([f"transformer:{transformer_dir}"])
    eager, compiled = ModelCache(choices, "cpu"), ModelCache(choices, "cpu", compile=True)
    request = GenerateRequest(eager.labels[0], [str(wavs[0])], seed=5)
    (plain,) = run_job(request, eager, tmp_path / "eager").images
    assert steps == []
    (image,) = run_job(request, compiled, tmp_path / "compiled").images
    assert len(steps) > 0 and len(steps) % 64 == 0  # whole images (best-of-N draws several)
    assert np.array_equal(_pixels(image.path), _pixels(plain.path))
