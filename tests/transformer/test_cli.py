"""`sound2image train transformer` and `sound2image generate --model transformer:DIR` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sound2image.cli.main import main
from sound2image.outputs import read_png_metadata
from tests.transformer.test_training import make_dataset

TINY = [
    "--preset",
    "paper",
    "--sample-rate",
    "8000",
    "--duration",
    "0.128",
    "--sections",
    "8",
    "--log-magnitude",
    "--d-model",
    "32",
    "--encoder-layers",
    "1",
    "--decoder-layers",
    "1",
    "--heads",
    "4",
    "--query-block",
    "32",
    "--memory-length",
    "32",
    "--max-steps",
    "3",
    "--val-fraction",
    "0",
    "--no-progress",
    "--reranker-epochs",
    "2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, count=2)
    assert main(["train", "transformer", "--data", str(root), "--out", str(root / "run"), *TINY]) == 0
    return root


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["train", "transformer"], ["train", "classifier"]):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--help"])
        assert stop.value.code == 0
        assert "Examples:" in capsys.readouterr().out


def test_train_writes_a_loadable_model_and_its_settings(trained) -> None:
    run = trained / "run"
    for name in (
        "training_config.json",
        "split.json",
        "metrics.jsonl",
        "model/config.json",
        "model/model.safetensors",
        "model/reranker/config.json",
        "model/reranker/model.safetensors",
    ):
        assert (run / name).is_file(), name


@pytest.mark.numeric
def test_generate_writes_pngs_with_metadata_and_reports_bad_files(trained, tmp_path, capsys) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF but not really")
    out = tmp_path / "out"
    model = f"transformer:{trained / 'run' / 'model'}"
    args = [
        "generate",
        str(trained / "tone0.wav"),
        str(bad),
        "--model",
        model,
        "--out",
        str(out),
        "--seed",
        "3",
        "--temperature",
        "0.7",
        "--top-k",
        "40",
        "--upscale",
        "4",
    ]
    assert main(args) == 2  # one input failed, the other was written
    assert "broken.wav" in capsys.readouterr().err
    small, big = out / "tone0_seed3.png", out / "tone0_seed3_x4.png"
    assert Image.open(small).size == (32, 32) and Image.open(small).mode == "L"
    assert Image.open(big).size == (128, 128)
    assert np.array_equal(np.asarray(Image.open(big))[::4, ::4], np.asarray(Image.open(small)))
    meta = read_png_metadata(small)
    assert meta["seed"] == 3 and meta["temperature"] == 0.7 and meta["top_k"] == 40
    assert meta["model"]["type"] == "image-transformer" and meta["audio"][0]["file"] == "tone0.wav"
    assert len(meta["audio"][0]["sha256"]) == 64
    assert sorted(p.name for p in out.iterdir()) == ["tone0_seed3.png", "tone0_seed3_x4.png"]

    # same seed, alone or in a batch with other seeds: the same pixels
    again = tmp_path / "again"
    assert (
        main(
            [
                "generate",
                str(trained / "tone0.wav"),
                "--model",
                model,
                "--out",
                str(again),
                "--seed",
                "3",
                "4",
                "--temperature",
                "0.7",
                "--top-k",
                "40",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    assert np.array_equal(np.asarray(Image.open(again / "tone0_seed3.png")), np.asarray(Image.open(small)))

    # existing outputs are refused before any work
    assert main(args[:2] + args[3:]) == 2
    assert "already exists" in capsys.readouterr().err


def test_generate_with_a_missing_model_is_a_one_line_error(tmp_path, capsys) -> None:
    code = main(["generate", "x.wav", "--model", f"transformer:{tmp_path / 'nope'}", "--out", str(tmp_path)])
    assert code == 2
    assert "no such model directory" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["warp-drive", "cuda:x"])
def test_generate_with_an_unusable_device_is_a_one_line_error(trained, tmp_path, capsys, device) -> None:
    """Same device check as `embed` (one function, cli/jobs.pick_device); nothing is written."""
    out = tmp_path / "out"
    model = f"transformer:{trained / 'run' / 'model'}"
    args = ["generate", str(trained / "tone0.wav"), "--model", model, "--out", str(out), "--device", device]
    code = main(args)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--device {device}:" in err, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.numeric
def test_generate_best_of_n_keeps_a_draw_and_records_the_ranking(trained, tmp_path) -> None:
    model = f"transformer:{trained / 'run' / 'model'}"
    common = ["generate", str(trained / "tone1.wav"), "--model", model, "--seed", "2", "--temperature", "1"]
    assert main([*common, "--out", str(tmp_path / "best"), "--candidates", "3"]) == 0
    meta = read_png_metadata(tmp_path / "best" / "tone1_seed2.png")
    ranking = meta["best_of"]
    assert ranking["candidates"] == 3 and len(ranking["scores"]) == 3
    assert ranking["kept"] == int(np.argmax(ranking["scores"]))
    # draw 0 is the plain image of the same seed
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert "best_of" not in read_png_metadata(tmp_path / "plain" / "tone1_seed2.png")
    if ranking["kept"] == 0:
        plain = np.asarray(Image.open(tmp_path / "plain" / "tone1_seed2.png"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "best" / "tone1_seed2.png")), plain)


def test_best_of_n_without_a_scorer_is_a_one_line_error(trained, tmp_path, capsys) -> None:
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(trained / "run" / "model" / name, bare / name)
    out = tmp_path / "out"
    args = ["generate", str(trained / "tone0.wav"), "--model", f"transformer:{bare}", "--out", str(out)]
    assert main([*args, "--candidates", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no reranker/ scorer" in err, err
    assert main([*args, "--candidates", "0"]) == 2
    assert "--candidates must be at least 1" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------- issue 11 C/D: flags, job accounting


def _written_count(stdout: str) -> int:
    import re

    match = re.search(r"^wrote (\d+) image\(s\) to ", stdout, flags=re.MULTILINE)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.parametrize(
    ("seed_args", "expected_seeds"),
    [(["--seed", "5", "5"], [5]), (["--seed", "1", "2", "--num-images", "2"], [1, 2, 3])],
    ids=["seed-5-5", "seed-1-2-num-images-2"],
)
@pytest.mark.numeric
def test_repeated_seeds_are_made_once_and_counted(
    trained, tmp_path, capsys, seed_args, expected_seeds
) -> None:
    model = f"transformer:{trained / 'run' / 'model'}"
    out = tmp_path / "out"
    args = ["generate", str(trained / "tone0.wav"), "--model", model, "--out", str(out), "--upscale", "2"]
    assert main([*args, *seed_args]) == 0
    captured = capsys.readouterr()
    pngs = sorted(p.name for p in out.glob("tone0_seed*.png") if "_x2" not in p.name)
    assert pngs == sorted(f"tone0_seed{s}.png" for s in expected_seeds)
    assert len(list(out.glob("*_x2.png"))) == len(pngs)  # one upscaled view each, not counted as images
    assert _written_count(captured.out) == len(pngs)
    assert "repeat; each seed is made once" in captured.err and "already exists" not in captured.err
    if len(expected_seeds) == 1:
        return
    # Seed 3 (never made before the fix) is the image a run with that seed alone makes.
    alone = tmp_path / "alone"
    last = expected_seeds[-1]
    single = ["generate", str(trained / "tone0.wav"), "--model", model, "--seed", str(last)]
    assert main([*single, "--out", str(alone)]) == 0
    name = f"tone0_seed{last}.png"
    assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(alone / name)))


def test_a_failing_batch_keeps_the_other_images(trained, tmp_path, capsys, monkeypatch) -> None:
    from sound2image.transformer import ImageTransformer

    original = ImageTransformer.encode
    calls = []

    def fail_for_the_second_batch(self, features):  # with --batch-size 1 and seeds 1 2 3: seed 2
        calls.append(features.shape[0])
        if len(calls) == 2:
            raise RuntimeError("out of memory (injected)")
        return original(self, features)

    monkeypatch.setattr(ImageTransformer, "encode", fail_for_the_second_batch)
    model = f"transformer:{trained / 'run' / 'model'}"
    out = tmp_path / "out"
    args = ["generate", str(trained / "tone0.wav"), "--model", model, "--out", str(out), "--batch-size", "1"]
    assert main([*args, "--seed", "1", "2", "3"]) == 2
    captured = capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tone0_seed1.png", "tone0_seed3.png"]
    assert _written_count(captured.out) == len(names) == 2
    assert "from 1 of 1 input(s)" in captured.out
    assert "1 image(s) failed:" in captured.err
    assert "tone0 seed 2: RuntimeError: out of memory (injected)" in captured.err


TRANSFORMER_FLAG_CASES = [
    ("--temperature", "nan"),
    ("--temperature", "inf"),
    ("--temperature", "-1.0"),
    ("--top-p", "nan"),
    ("--top-p", "0.0"),
    ("--top-p", "1.5"),
    ("--top-k", "0"),
    ("--guidance-scale", "nan"),
    ("--guidance-scale", "-inf"),
    ("--guidance-scale", "-1.0"),
    ("--num-images", "0"),
    ("--seed", "-1"),
]


@pytest.mark.parametrize(
    ("flag", "value"), TRANSFORMER_FLAG_CASES, ids=[f"{f}={v}" for f, v in TRANSFORMER_FLAG_CASES]
)
def test_every_numeric_sampling_flag_is_refused_naming_it(tmp_path, capsys, flag, value) -> None:
    # The model directory is empty: only a check before loading can answer with the flag's problem.
    (tmp_path / "model").mkdir()
    out = tmp_path / "out"
    args = ["generate", "x.wav", "--model", f"transformer:{tmp_path / 'model'}", "--out", str(out)]
    assert main([*args, f"{flag}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {flag} must be ") and err.endswith(f"got {value}"), err
    assert not out.exists()


# ---------------------------------------------------------------------- issue 12: library record


@pytest.mark.numeric
@pytest.mark.parametrize(("candidates", "dtype"), [(1, "float32"), (3, "float32"), (1, "float16")])
def test_a_png_holds_its_library_record_and_regenerates_bit_identical(
    trained, tmp_path, candidates, dtype, monkeypatch
) -> None:
    from sound2image.transformer import ImageTransformer
    from sound2image.transformer.runner import TransformerRecord, regenerate

    converted: list[str] = []
    real = ImageTransformer.half_decoder
    monkeypatch.setattr(ImageTransformer, "half_decoder", lambda m, d: converted.append(d) or real(m, d))
    model = trained / "run" / "model"
    out = tmp_path / "out"
    args = ["generate", str(trained / "tone1.wav"), "--model", f"transformer:{model}", "--out", str(out)]
    args += ["--decoder-dtype", dtype]
    assert main([*args, "--seed", "11", "--temperature", "0.9", "--candidates", str(candidates)]) == 0
    half = [dtype] if dtype != "float32" else []
    assert converted == half
    png = out / "tone1_seed11.png"
    meta = read_png_metadata(png)
    record = TransformerRecord.from_png(png)
    assert {"package_version": meta["package_version"], **record.to_metadata()} == meta
    assert record.seed == 11 and record.sampling.temperature == 0.9 and record.model["path"] == str(model)
    assert (record.best_of is not None) == (candidates > 1)
    assert record.model.get("decoder_dtype") == (half[0] if half else None)
    again = regenerate(png)  # with the recorded decoder dtype
    assert converted == 2 * half
    assert np.array_equal(again.image, np.asarray(Image.open(png)))
    assert again.record.to_metadata() == {k: v for k, v in meta.items() if k != "package_version"}
    # ... and through the CLI's --from-metadata
    assert main(["generate", "--from-metadata", str(png), "--out", str(tmp_path / "again")]) == 0
    redrawn = tmp_path / "again" / "tone1_seed11_regen.png"
    assert np.array_equal(np.asarray(Image.open(redrawn)), np.asarray(Image.open(png)))
    regen_meta = read_png_metadata(redrawn)
    assert regen_meta.pop("regenerated_from") == png.name and regen_meta == meta
    assert main(["generate", "--from-metadata", str(png), "--unet", "x", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_regenerate_refuses_a_sound_that_changed_since(trained, tmp_path) -> None:
    import shutil

    from sound2image.errors import UsageError
    from sound2image.transformer.runner import regenerate

    sound = tmp_path / "tone0.wav"
    shutil.copy(trained / "tone0.wav", sound)
    out = tmp_path / "out"
    model = f"transformer:{trained / 'run' / 'model'}"
    assert main(["generate", str(sound), "--model", model, "--out", str(out), "--seed", "1"]) == 0
    shutil.copy(trained / "tone1.wav", sound)
    with pytest.raises(UsageError, match="changed since the image was made"):
        regenerate(out / "tone0_seed1.png")


def _preset_run(root, preset: str) -> list[str]:
    """TINY, started from ``preset`` instead of paper (its other settings: batch size, lr, positions...)."""
    flags = list(TINY)
    flags[flags.index("--preset") + 1] = preset
    flags[flags.index("--max-steps") + 1] = "2"
    return ["train", "transformer", "--data", str(root), "--out", str(root / "run"), *flags]


def test_resume_takes_the_runs_own_settings_not_todays_default_preset(tmp_path, capsys) -> None:
    """`--out RUN --resume latest` alone continues a run started from a preset with options: the base
    is the run's training_config.json, not preset paper (which differs in d_model, lr, batch size, the
    pixel positions... and would be refused as changed settings)."""
    import json

    make_dataset(tmp_path, count=2)
    assert main(_preset_run(tmp_path, "av-digits")) == 0
    run = tmp_path / "run"
    started = json.loads((run / "training_config.json").read_text())
    capsys.readouterr()

    code = main(["train", "transformer", "--out", str(run), "--resume", "latest", "--max-steps", "4"])
    assert code == 0, capsys.readouterr().err
    assert "trained 4 steps" in capsys.readouterr().out
    resumed = json.loads((run / "training_config.json").read_text())
    assert resumed.pop("max_steps") == 4 and started.pop("max_steps") == 2
    for name in ("resume", "progress"):  # resumable settings the command line sets afresh
        resumed.pop(name), started.pop(name)
    assert resumed == started
    assert resumed["model"]["pixel_positions"] == "2d" and resumed["model"]["d_model"] == 32  # not paper's
    updates = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in updates if entry["kind"] == "train"] == [1, 2, 3, 4]


def test_resume_with_a_changed_setting_is_refused_naming_it(tmp_path, capsys) -> None:
    make_dataset(tmp_path, count=2)
    assert main(_preset_run(tmp_path, "av-digits")) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    code = main(["train", "transformer", "--out", str(run), "--resume", "latest", "--lr", "0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cannot resume with different settings (lr)" in err, err
    # an explicit --preset is the base instead of the saved settings: here paper, refused the same way
    code = main(["train", "transformer", "--out", str(run), "--resume", "latest", "--preset", "paper"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot resume with different settings" in err and "d_model" in err, err


def test_data_is_required_for_a_new_run(tmp_path, capsys) -> None:
    for extra in ([], ["--resume", "latest"]):
        code = main(["train", "transformer", "--out", str(tmp_path / "run"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "--data is required" in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- issue 15: --compile


def test_compile_flag_samples_every_step_through_the_compiled_step(trained, tmp_path, monkeypatch) -> None:
    """``generate --compile`` reaches the sampling step: every step goes through what ``torch.compile``
    returned (replaced here by a counting pass-through, so no compiler runs), and the pixels are those of
    the eager run (the same arithmetic)."""
    import torch

    steps: list[int] = []

    def counting_compile(function, **options):
        assert options["dynamic"] is False
        return lambda *args: steps.append(1) or function(*args)

    monkeypatch.setattr(torch, "compile", counting_compile)
    model = f"transformer:{trained / 'run' / 'model'}"
    args = ["generate", str(trained / "tone0.wav"), "--model", model, "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "eager")]) == 0
    assert steps == []
    assert main([*args, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    assert len(steps) == 32 * 32  # one per pixel of the one image
    drawn = [np.asarray(Image.open(tmp_path / d / "tone0_seed5.png")) for d in ("eager", "compiled")]
    assert np.array_equal(drawn[1], drawn[0])
