"""`sound2image evaluate` from the command line: flag errors, the default split, results.json, and the
paper's preset end to end on real pseudo-ADVANCE pairs with two tiny SounDiff models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sound2image.cli.main import main
from sound2image.data import Split, SplitSettings, pairs_fingerprint, scan_pairs
from sound2image.evaluation.systems import PAPER_CONDITION
from tests.evaluation.conftest import STEPS
from tests.paths import PSEUDO_ADVANCE

#: The validation keys of the split file the tests put in the SounDiff-L run directory.
VAL_KEYS = ["airport/00001", "beach/00017", "beach/00018", "forest/00069"]


def preset_args(base_dir: Path, large: Path, small: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate", "--data", str(PSEUDO_ADVANCE), "--preset", "paper-table1", "--soundiff-l", str(large),
        "--soundiff-s", str(small), "--model", str(base_dir), "--steps", str(STEPS), "--device", "cpu",
        "--features", "clip", "--resamples", "50", "--out", str(out), *extra,
    ]  # fmt: skip


def run_with_split(tmp_path: Path, soundiff_l: Path) -> Path:
    """A copy of the SounDiff-L export that also holds its run's split.json (val = VAL_KEYS)."""
    run = tmp_path / "soundiff-l"
    shutil.copytree(soundiff_l, run)
    found = scan_pairs(PSEUDO_ADVANCE).pairs
    val = [pair for pair in found if pair.key in VAL_KEYS]
    train = [pair for pair in found if pair.key not in VAL_KEYS]
    assert len(val) == len(VAL_KEYS)
    Split(train, val, SplitSettings(), pairs_fingerprint(found), True).save(run / "split.json")
    return run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--preset", "paper-table1", "--soundiff-l", "."],
            "error: --preset paper-table1 needs --soundiff-s DIR",
        ),
        (["--systems", "runs/none"], "error: --systems: runs/none: not 'baseline', 'transformer:DIR' nor an"),
        (
            ["--systems", "baseline", "--seeds", "-1"],
            "error: --seeds must be an integer in [0, 9223372036854775807], got -1",
        ),
        (["--systems", "baseline", "--size", "12"], "error: --size must be a positive multiple of 8, got 12"),
        (["--systems", "baseline", "--max-items", "0"], "error: --max-items must be an integer >= 1, got 0"),
        (["--systems", "baseline", "--features", "fancy"], "error: --features must be inception, clip or"),
        (
            ["--systems", "baseline", "--split", "nowhere.json"],
            "error: --split nowhere.json: expected 'val' or",
        ),
        (
            ["--soundiff-l", ".", "--systems", "baseline"],
            "error: --soundiff-l: only with --preset paper-table1",
        ),
        ([], "error: --systems is required"),
        (
            ["--systems", "baseline", "--device", "cpu", "--dtype", "fp16"],
            "error: --dtype fp16 is not supported",
        ),
        (["--systems", "baseline", "--device", "tpu"], "error: --device tpu: unknown device"),
    ],
)
def test_bad_flags_stop_with_one_line_naming_the_flag(tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "out"
    code = main(["evaluate", "--data", str(PSEUDO_ADVANCE), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1, err
    assert "Traceback" not in err and not out.exists()


def test_the_preset_uses_the_runs_own_split_and_writes_results_only_in_out(
    tmp_path, base_dir, soundiff_l, soundiff_s, stubbed, monkeypatch, capsys
) -> None:
    large = run_with_split(tmp_path, soundiff_l)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    assert main(preset_args(base_dir, large, soundiff_s, out, "--seeds", "3")) == 0
    assert list(work.iterdir()) == []  # nothing written outside --out
    assert sorted(p.name for p in out.iterdir()) == [
        "cache",
        "evaluation_config.json",
        "report.html",
        "results.json",
    ]
    results = json.loads((out / "results.json").read_text())
    assert (results["format"], results["version"]) == ("sound2image-evaluation", 1)
    assert results["data"]["split_file"] == str((large / "split.json").resolve())
    assert [item["id"] for item in results["items"]] == VAL_KEYS
    assert results["data"]["n_items"] == 4 and results["data"]["classes"] == ["airport", "beach", "forest"]
    ids = ["baseline", "baseline+cond", "soundiff-l", "soundiff-s", "soundiff-s+cond"]
    assert [s["id"] for s in results["systems"]] == ids
    assert [s["condition"] for s in results["systems"]] == [
        None,
        PAPER_CONDITION,
        None,
        None,
        PAPER_CONDITION,
    ]
    assert all(s["best_of_flag"] is False and len(s["fingerprint"]) == 64 for s in results["systems"])
    assert results["systems"][2]["model"]["unet"] == str(large.resolve())
    assert results["settings"]["seeds"] == [3]
    # Given values as given; defaults as the records say they resolved: guidance 10, the tiny model's 32 px.
    generation = results["settings"]["generation"]
    assert (generation["steps"], generation["guidance_scale"], generation["size"]) == (STEPS, 10.0, 32)
    assert generation["scheduler"] == "ddim" and generation["temperature"] is None
    assert results["command"].startswith("sound2image evaluate --data ")
    for item in results["items"]:
        assert sorted(item["images"]) == sorted(ids)
        for images in item["images"].values():
            assert [image["seed"] for image in images] == [3]
            assert (out / images[0]["path"]).is_file() and images[0]["path"].startswith("cache/")
    # The five columns are five different pictures of the first clip (three weights, two prompts).
    first = results["items"][0]["images"]
    assert len({(out / first[i][0]["path"]).read_bytes() for i in ids}) == 5
    config = json.loads((out / "evaluation_config.json").read_text())
    assert [s["id"] for s in config["systems"]] == ids and config["seeds"] == [3]
    assert "wrote" in capsys.readouterr().out


# --- END TO END WITH THE REAL SCORING AND REPORT ------------------------------------------------------
# Runs once sound2image.evaluation.scoring and .report are merged (built on other branches); skipped before.


def test_end_to_end_paper_preset_writes_scored_results_and_the_report(
    tmp_path, base_dir, soundiff_l, soundiff_s
) -> None:
    out = tmp_path / "out"
    assert main(preset_args(base_dir, soundiff_l, soundiff_s, out, "--max-items", "4")) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.html").is_file()
    ids = [s["id"] for s in results["systems"]]
    assert ids == ["baseline", "baseline+cond", "soundiff-l", "soundiff-s", "soundiff-s+cond"]
    assert (
        results["data"]["n_items"] == 4 and results["data"]["split_file"] is None
    )  # the dataset's own split
    # --max-items 4 of the grouped split's validation side, round-robin over its classes: 4 classes.
    assert len({item["label"] for item in results["items"]}) == 4
    for system in ids:
        metrics = results["metrics"][system]
        for name in ("fid", "kid", "ais", "iis"):  # no --classifier: no AIC
            estimate = metrics[name]
            assert set(estimate) == {"value", "low", "high", "n"}
            assert estimate["low"] <= estimate["value"] <= estimate["high"]
        assert "aic" not in metrics
        assert metrics["ais"]["n"] == 4  # the bootstrap resamples the 4 clips


def test_the_config_round_trips_through_its_file_and_names_bad_settings(tmp_path) -> None:
    from sound2image.errors import UsageError
    from sound2image.evaluation.generation import GenerationOptions
    from sound2image.evaluation.run import EvaluationConfig
    from sound2image.evaluation.systems import SystemSpec

    spec = SystemSpec("baseline+cond", "Baseline + condition", "soundiff", "m", None, "x", 2)
    config = EvaluationConfig(
        data="d", out="o", systems=[spec], seeds=[1, 5], generation=GenerationOptions(steps=3, size=64)
    )
    path = config.save(tmp_path / "evaluation_config.json")
    assert EvaluationConfig.load(path) == config
    for changes, name in [
        ({"seeds": [1, 1]}, "seeds"),
        ({"max_items": 0}, "max_items"),
        ({"level": 1.0}, "level"),
        ({"features": "classifier:" + str(tmp_path / "none")}, "features"),
        ({"generation": GenerationOptions(size=12)}, "size"),
        ({"systems": [spec, spec]}, "systems"),
    ]:
        values = {**config.__dict__, **changes}
        with pytest.raises(UsageError) as caught:
            EvaluationConfig(**values).check()
        assert tuple(caught.value.parameters) == (name,) and str(caught.value).startswith(name)


def test_missing_inception_weights_stop_the_run_before_any_image_is_drawn(
    tmp_path, base_dir, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no Inception weights there
    out = tmp_path / "out"
    args = ["evaluate", "--data", str(PSEUDO_ADVANCE), "--systems", "baseline", "--model", str(base_dir)]
    code = main([*args, "--max-items", "2", "--steps", str(STEPS), "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not list(out.rglob("*.png"))


def test_end_to_end_with_models_fine_tuned_by_the_library_trainer(tmp_path, base_dir) -> None:
    """The acceptance run: the base model, SounDiff-L and SounDiff-S each fine-tuned for 2 steps by
    ``training.soundiff.train`` on 8 real pairs, --preset paper-table1, the split the L run saved."""
    from sound2image.training.soundiff import SounDiffTrainConfig, train
    from tests.dummies import get_dummy_soundiff_pipeline
    from tests.evaluation.conftest import CALIBRATION
    from tests.training.conftest import write_manifest

    manifest = write_manifest(tmp_path / "pairs.csv")  # 2 pairs of each of 4 scenes
    runs = {}
    for variant in ("L", "S"):
        config = SounDiffTrainConfig(
            data=str(manifest), output_dir=str(tmp_path / variant), variant=variant, resolution=16,
            batch_size=2, max_steps=2, learning_rate=1e-3, final_learning_rate=1e-4, val_fraction=0.5,
            report_to="none", progress=False, cache_dir=str(tmp_path / "cache"),
        )  # fmt: skip
        runs[variant] = train(config, pipeline=get_dummy_soundiff_pipeline(CALIBRATION)).output_dir
    out = tmp_path / "out"
    args = preset_args(base_dir, runs["L"], runs["S"], out)
    args[args.index("--data") + 1] = str(manifest)
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    saved = json.loads((runs["L"] / "split.json").read_text())
    assert [item["id"] for item in results["items"]] == sorted(saved["val"])  # the run's own validation side
    assert (out / "report.html").is_file()
    assert set(results["metrics"]) == {s["id"] for s in results["systems"]}
    trained = results["systems"][2]["model"]["training"]
    assert trained is not None and results["systems"][2]["model"]["unet"] == str(runs["L"].resolve())
