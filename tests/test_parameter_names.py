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
