"""The shared parameter checks (sound2image.validation): exact one-line messages naming the parameter."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from sound2image.errors import UsageError
from sound2image.validation import (
    check_finite_values,
    check_flags,
    check_int,
    check_number,
    check_positive_int,
)


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (math.nan, {"minimum": 0.0}, "guidance_scale must be finite and >= 0, got nan"),
        (math.inf, {"minimum": 0.0}, "guidance_scale must be finite and >= 0, got inf"),
        (-math.inf, {}, "guidance_scale must be a finite number, got -inf"),
        (-0.5, {"minimum": 0.0}, "guidance_scale must be finite and >= 0, got -0.5"),
        (0.0, {"minimum": 0.0, "min_inclusive": False}, "guidance_scale must be finite and > 0, got 0.0"),
        (1.5, {"minimum": 0.0, "maximum": 1.0}, "guidance_scale must be finite and in [0, 1], got 1.5"),
        (0.0, {"minimum": 0.0, "maximum": 1.0, "min_inclusive": False}, "in (0, 1], got 0.0"),
        (1.0, {"maximum": 1.0, "max_inclusive": False}, "guidance_scale must be finite and < 1, got 1.0"),
        ("7", {}, "guidance_scale must be a finite number, got '7'"),
        (True, {}, "guidance_scale must be a finite number, got True"),
        (None, {}, "guidance_scale must be a finite number, got None"),
    ],
)
def test_check_number_refuses_with_the_parameter_named(value, bounds, message) -> None:
    with pytest.raises(UsageError) as info:
        check_number("guidance_scale", value, **bounds)
    assert message in str(info.value) and str(info.value).startswith("guidance_scale must be ")
    assert "\n" not in str(info.value)


def test_check_number_passes_good_values_through_as_floats() -> None:
    assert check_number("x", 3, minimum=0) == 3.0 and isinstance(check_number("x", 3), float)
    assert check_number("x", np.float32(0.25), minimum=0.0, maximum=1.0) == 0.25
    assert check_number("x", torch.tensor(2.0)) == 2.0
    assert check_number("x", 0.0, minimum=0.0) == 0.0  # inclusive bound
    assert check_number("x", 1.0, minimum=0.0, maximum=1.0) == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "num_inference_steps must be an integer >= 1, got 0"),
        (2.5, "num_inference_steps must be an integer >= 1, got 2.5"),
        (math.nan, "num_inference_steps must be an integer >= 1, got nan"),
        (math.inf, "num_inference_steps must be an integer >= 1, got inf"),
        (False, "num_inference_steps must be an integer >= 1, got False"),
        ("20", "num_inference_steps must be an integer >= 1, got '20'"),
    ],
)
def test_check_positive_int_refuses_with_the_parameter_named(value, message) -> None:
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(") + "$"):
        check_positive_int("num_inference_steps", value)


def test_check_int_bounds_and_accepted_forms() -> None:
    assert check_int("noise_level", 999, minimum=0, maximum=999) == 999
    assert check_int("noise_level", np.int64(5), minimum=0) == 5
    assert check_int("noise_level", 20.0) == 20  # an integral float, e.g. read back from JSON
    with pytest.raises(UsageError, match=r"^noise_level must be an integer in \[0, 999\], got 1000$"):
        check_int("noise_level", 1000, minimum=0, maximum=999)
    with pytest.raises(UsageError, match=r"^seed must be an integer in \[0, 9223372036854775807\], got -1$"):
        check_int("seed", -1, minimum=0, maximum=2**63 - 1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_values_names_the_parameter_and_the_first_bad_row(bad) -> None:
    values = torch.zeros(3, 4)
    values[1, 2] = bad
    values[2, 0] = bad
    with pytest.raises(UsageError) as info:
        check_finite_values("image_embeds", values)
    assert str(info.value) == "image_embeds must be finite; row 1 holds NaN or infinity (2 of 3 rows do)"
    check_finite_values("image_embeds", torch.ones(2, 4))  # finite: no error
    check_finite_values("weights", np.array([0.5, 1.0]))
    with pytest.raises(UsageError, match="^x must be finite, got nan$"):
        check_finite_values("x", np.float64("nan"))


def test_check_flags_names_the_flag_and_checks_each_value_of_a_list() -> None:
    args = argparse.Namespace(guidance_scale=None, weights=[0.5, math.nan], steps=3)
    numbers = {"--guidance-scale": {"minimum": 0.0}, "--weights": {"minimum": 0.0}}
    with pytest.raises(UsageError, match=r"^--weights must be finite and >= 0, got nan$"):
        check_flags(args, numbers, {"--steps": {"minimum": 1}})
    args.weights = [0.5, 1.0]
    check_flags(args, numbers, {"--steps": {"minimum": 1}})  # None (not given) is skipped
    args.steps = 0
    with pytest.raises(UsageError, match=r"^--steps must be an integer >= 1, got 0$"):
        check_flags(args, numbers, {"--steps": {"minimum": 1}})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "^batch_size must be an integer >= 1, got 0$"),
        ({"batch_size": math.nan}, "^batch_size must be an integer >= 1, got nan$"),
        ({"clips_per_file": 0}, "^clips_per_file must be an integer >= 1, got 0$"),
        ({"clips_per_file": math.inf}, "^clips_per_file must be an integer >= 1, got inf$"),
    ],
)
def test_audio_encoder_embed_checks_its_counts(kwargs, message) -> None:
    from tests.dummies import get_dummy_audio_encoder

    samples = np.zeros(16000, dtype=np.float32)
    with pytest.raises(UsageError, match=message):
        get_dummy_audio_encoder().embed([(samples, 16000)], **kwargs)
