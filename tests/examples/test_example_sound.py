"""The example sound that ships with the project: present, readable, and exactly what its script makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from sound2image.audio import load_audio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _make_waves():
    spec = importlib.util.spec_from_file_location("make_waves", EXAMPLES / "make_waves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_sound_is_ten_seconds_of_mono_16_khz_audio() -> None:
    clip = load_audio(EXAMPLES / "waves.flac", None)
    assert clip.sample_rate == 16000 and clip.samples.shape == (160000,)
    assert 0.45 < np.abs(clip.samples).max() <= 0.5 + 1 / 32768  # the script normalises to a -6 dBFS peak


def test_example_sound_is_reproduced_by_its_script() -> None:
    """The shipped file is the script's output: licence-clean because we made it, rebuilt by anyone."""
    made = _make_waves().synthesise()
    shipped = load_audio(EXAMPLES / "waves.flac", None).samples
    # PCM-16 quantisation: at most half a step (1/65536) plus one step for a rounding-edge flip that a
    # different libm could cause in the float64 filters (their error is ~1e-15, far below a step).
    np.testing.assert_allclose(shipped, made, rtol=0, atol=1.5 / 32768)


def test_help_examples_name_the_shipped_sound(capsys) -> None:
    """A new user's first commands (README, --help) read a file that exists in the checkout."""
    import pytest

    from sound2image.cli.main import main

    for command in (["--help"], ["generate", "--help"], ["audio", "info", "--help"], ["embed", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        assert "examples/waves.flac" in capsys.readouterr().out, command
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "sound2image generate examples/waves.flac" in readme
    assert (EXAMPLES / "waves.flac").is_file()


def test_readme_first_command_offline_says_one_line_in_a_fresh_process(tmp_path) -> None:
    """The README's first command on a machine without the weights: exit 1 and exactly one line on stderr
    naming what to supply, in a fresh process (a library notice printed once per process, such as
    transformers' torchvision fallback, would show up here and nowhere in a long test session)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path)}
    env.pop("SOUND2IMAGE_UNCLIP", None)
    command = ["generate", str(EXAMPLES / "waves.flac"), "--out", str(tmp_path / "outputs")]
    done = subprocess.run(
        [sys.executable, "-m", "sound2image.cli.main", *command], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: stabilityai/stable-diffusion-2-1-unclip: ")
    assert "--model=DIR" in lines[0]
    assert not (tmp_path / "outputs").exists()
