"""Library errors name parameters; the CLI's one error boundary names the flag of the command that ran."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sound2image.cli.main import flag_names, main
from sound2image.errors import OutputExistsError, UsageError
from sound2image.outputs import resolve_output_path
from sound2image.training.transformer import TransformerTrainConfig
from sound2image.validation import check_number


@pytest.mark.parametrize(
    ("settings", "message", "parameters"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0", ("batch_size",)),
        ({"lr": 0.0, "min_lr": 0.0}, "learning rates must be positive, got lr=0.0 min_lr=0.0",
         ("lr", "min_lr")),
        ({"mixed_precision": "fp8"}, "mixed_precision must be auto, no, bf16 or fp16, got 'fp8'",
         ("mixed_precision",)),
        ({"max_minutes": -1.0}, "max_minutes must be positive, got -1.0", ("max_minutes",)),
    ],
)  # fmt: skip
def test_the_trainer_config_names_parameters(settings: dict, message: str, parameters: tuple) -> None:
    with pytest.raises(UsageError) as error:
        TransformerTrainConfig(data="d", output_dir="o", **settings).check()
    assert str(error.value) == message and error.value.parameters == parameters
    assert "--" not in str(error.value)


def test_outputs_name_the_overwrite_parameter(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(OutputExistsError) as error:
        resolve_output_path(tmp_path, "a.png")
    assert str(error.value) == f"{tmp_path / 'a.png'}: already exists (pass overwrite=True to replace it)"
    assert error.value.parameters == ("overwrite",)


def test_validation_errors_name_no_flag_for_the_cli_to_rewrite() -> None:
    """A value checked by the library may come from a PNG's metadata, not from a flag (``generate
    --from-metadata``): the CLI checks its own flags with ``check_flags``, so these carry no parameters."""
    with pytest.raises(UsageError) as error:
        check_number("guidance_scale", float("nan"), minimum=0.0)
    assert str(error.value) == "guidance_scale must be finite and >= 0, got nan"
    assert error.value.parameters == ()


def _parser() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser()
    groups = parser.add_subparsers(dest="command")
    train = groups.add_parser("train").add_subparsers(dest="trainer")
    run = train.add_parser("transformer")
    run.add_argument("--batch-size", "-b", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--min-lr", type=float)
    run.add_argument("--overwrite", action="store_true")
    groups.add_parser("other").add_argument("--size", type=int)
    return parser, parser.parse_args(["train", "transformer"])


@pytest.mark.parametrize(
    ("message", "parameters", "expected"),
    [
        ("batch_size must be >= 1, got 0", ["batch_size"], "--batch-size must be >= 1, got 0"),
        ("learning rates must be positive, got lr=0.0 min_lr=0.0", ["lr", "min_lr"],
         "learning rates must be positive, got --lr=0.0 --min-lr=0.0"),
        ("/x/a.png: already exists (pass overwrite=True to replace it)", ["overwrite"],
         "/x/a.png: already exists (pass --overwrite to replace it)"),
        # a path or a longer word that contains the name is left alone, and so is an unknown parameter
        ("/data/batch_size/x.wav: batch_sizes and my_batch_size", ["batch_size"],
         "/data/batch_size/x.wav: batch_sizes and my_batch_size"),
        ("size must be > 0", ["size"], "size must be > 0"),  # --size belongs to another command
        ("guidance_scale must be >= 0", ["guidance_scale"], "guidance_scale must be >= 0"),
    ],
)  # fmt: skip
def test_the_boundary_writes_the_flags_of_the_command_that_ran(
    message: str, parameters: list[str], expected: str
) -> None:
    parser, args = _parser()
    assert flag_names(message, parameters, parser, args) == expected


def test_the_cli_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["train", "transformer", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*base, "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == "error: --batch-size must be >= 1, got 0\n"
    assert main([*base, "--lr", "-1", "--min-lr", "0"]) == 2
    assert capsys.readouterr().err == "error: learning rates must be positive, got --lr=-1.0 --min-lr=0.0\n"


# --- library messages that named flags now name parameters (issue 12) ------------------------------------


@pytest.mark.parametrize(
    ("settings", "message", "parameters"),
    [
        ({"data": ""}, "no training data given (pass data=ROOT_OR_MANIFEST)", ("data",)),
        ({"output_dir": ""}, "no output directory given (pass output_dir=DIR)", ("output_dir",)),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0", ("batch_size",)),
    ],
)  # fmt: skip
def test_the_soundiff_config_names_parameters(settings: dict, message: str, parameters: tuple) -> None:
    from sound2image.training.soundiff import SounDiffTrainConfig

    with pytest.raises(UsageError) as error:
        SounDiffTrainConfig(**{"data": "d", "output_dir": "o", **settings}).resolved()
    assert str(error.value) == message and error.value.parameters == parameters


def test_missing_training_extras_name_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import torch

    from sound2image.errors import MissingExtraError
    from sound2image.training.soundiff import SounDiffTrainConfig
    from sound2image.training.soundiff.setup import make_optimizer, prepare_unet

    monkeypatch.setitem(sys.modules, "peft", None)  # importing it raises ImportError
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    config = SounDiffTrainConfig(data="d", output_dir="o", lora_rank=4, use_8bit_adam=True)
    with pytest.raises(MissingExtraError) as error:
        prepare_unet(config, torch.nn.Linear(2, 2))
    assert str(error.value) == "lora_rank > 0 needs peft: pip install 'sound2image[lora]'"
    assert error.value.parameters == ("lora_rank",)
    with pytest.raises(MissingExtraError) as error:
        make_optimizer(config, [torch.nn.Parameter(torch.zeros(2))])
    assert str(error.value) == "use_8bit_adam=True needs bitsandbytes: pip install 'sound2image[bnb]'"
    assert error.value.parameters == ("use_8bit_adam",)


def test_the_divergence_error_names_resume_only_when_a_checkpoint_exists(tmp_path: Path) -> None:
    from sound2image.training.checkpoints import divergence_error

    error = divergence_error(tmp_path, 3, "the loss became nan", "try a lower lr", ["lr"])
    assert str(error) == (
        f"{tmp_path}: the loss became nan at step 3; stopped without saving (no checkpoint was written); "
        "try a lower lr"
    )
    assert error.parameters == ("lr",)


@pytest.mark.parametrize(
    ("argv", "message", "parameters", "expected"),
    [
        # each command's own spelling of the same library parameter
        (["train", "soundiff", "--data", "d", "--output", "o"], "x; pass model=DIR", ["model"],
         "x; pass --model=DIR"),
        (["generate", "a.wav"], "x; pass model=DIR", ["model"], "x; pass --model=DIR"),
        (["generate", "a.wav"], "put it there, pass audio_encoder_weights=FILE", ["audio_encoder_weights"],
         "put it there, pass --imagebind-weights=FILE"),
        (["embed", "a.wav", "-o", "e.safetensors"], "in /c/imagebind, pass path=PATH", ["path"],
         "in /c/imagebind, pass --weights=PATH"),
        # generate's --weights is the blend weights: the encoder's path is not it
        (["generate", "a.wav"], "in /c/imagebind, pass path=PATH", ["path"],
         "in /c/imagebind, pass path=PATH"),
        (["train", "transformer", "--data", "d", "--out", "o"],
         "x (pass resume='latest' to continue it, or choose a new output_dir); try a lower lr",
         ["resume", "output_dir", "lr"],
         "x (pass --resume='latest' to continue it, or choose a new --output); try a lower --lr"),
        (["train", "soundiff", "--data", "d", "--output", "o"],
         "x (resume='latest')); try a lower learning_rate or mixed_precision 'bf16' or 'no'",
         ["resume", "learning_rate", "mixed_precision"],
         "x (--resume='latest')); try a lower --learning-rate or --mixed-precision 'bf16' or 'no'"),
        (["train", "soundiff", "--data", "d", "--output", "o"], "lora_rank > 0 needs peft", ["lora_rank"],
         "--lora-rank > 0 needs peft"),
        (["train", "soundiff", "--data", "d", "--output", "o"], "use_8bit_adam=True needs bitsandbytes",
         ["use_8bit_adam"], "--use-8bit-adam needs bitsandbytes"),
    ],
)  # fmt: skip
def test_the_real_commands_name_their_flags(
    argv: list, message: str, parameters: list, expected: str
) -> None:
    from sound2image.cli.main import build_parser

    parser = build_parser()
    assert flag_names(message, parameters, parser, parser.parse_args(argv)) == expected


def test_a_new_run_into_an_old_run_names_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sound2image.training.rundir import config_path

    run = tmp_path / "run"
    run.mkdir()
    config_path(run).write_text("{}")
    assert main(["train", "transformer", "--data", str(tmp_path), "--out", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"error: {run}: already holds a training run "
        "(pass --resume='latest' to continue it, or choose a new --output)\n"
    )
