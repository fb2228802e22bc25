"""The length policy and windows, against hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sound2image.audio import AudioClip, LengthPolicy, apply_length, iter_windows
from sound2image.errors import UsageError

X = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


def test_default_is_loop_short_and_crop_long_from_the_start() -> None:
    assert LengthPolicy() == LengthPolicy(short="loop", long="crop", crop="start")
    out, action = apply_length(X, 12)
    assert action == "looped"
    np.testing.assert_array_equal(out, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2])
    out, action = apply_length(X, 3)
    assert action == "cropped"
    np.testing.assert_array_equal(out, [1, 2, 3])


def test_pad_appends_silence() -> None:
    out, action = apply_length(X, 8, LengthPolicy(short="pad"))
    assert action == "padded"
    np.testing.assert_array_equal(out, [1, 2, 3, 4, 5, 0, 0, 0])


def test_centre_crop_takes_the_middle() -> None:
    out, action = apply_length(X, 3, LengthPolicy(crop="centre"))
    assert action == "cropped"
    np.testing.assert_array_equal(out, [2, 3, 4])  # (5 - 3) // 2 = 1 sample dropped at the start
    out, _ = apply_length(X, 2, LengthPolicy(crop="centre"))
    np.testing.assert_array_equal(out, [2, 3])  # odd remainder: the extra sample goes at the end


def test_keep_leaves_the_clip_alone() -> None:
    for target in (3, 8):
        out, action = apply_length(X, target, LengthPolicy(short="keep", long="keep"))
        assert action == "none"
        np.testing.assert_array_equal(out, X)


def test_exact_length_is_untouched() -> None:
    out, action = apply_length(X, 5, LengthPolicy(short="pad"))
    assert action == "none" and out is X


def test_policy_applies_to_every_channel() -> None:
    stereo = np.stack([X, -X])  # (2, 5)
    out, action = apply_length(stereo, 7)
    assert action == "looped" and out.shape == (2, 7)
    np.testing.assert_array_equal(out[1], [-1, -2, -3, -4, -5, -1, -2])
    out, _ = apply_length(stereo, 6, LengthPolicy(short="pad"))
    np.testing.assert_array_equal(out, [[1, 2, 3, 4, 5, 0], [-1, -2, -3, -4, -5, 0]])


def test_advance_convention_5s_looped_to_10s() -> None:
    # ADVANCE looped its 5 s recordings to 10 s: the second half repeats the first exactly.
    rate = 100
    five = np.sin(np.arange(5 * rate) * 0.37)
    out, action = apply_length(five, 10 * rate)
    assert action == "looped" and out.shape == (1000,)
    np.testing.assert_array_equal(out[:500], out[500:])


@pytest.mark.parametrize("kwargs", [{"short": "stretch"}, {"long": "window"}, {"crop": "end"}])
def test_unknown_policy_values_are_usage_errors(kwargs) -> None:
    with pytest.raises(UsageError):
        LengthPolicy(**kwargs)


def _clip(n: int, rate: int = 10) -> AudioClip:
    return AudioClip(np.arange(n, dtype=np.float32), rate, "long.wav", rate, 1, n / rate)


def test_windows_cover_the_clip_and_the_last_is_aligned_to_the_end() -> None:
    # 10.5 s at 10 Hz, 4 s windows every 3 s → starts 0, 3, 6 and then 6.5 (end-aligned).
    windows = list(iter_windows(_clip(105), window=4.0, hop=3.0))
    assert [(start, end) for start, end, _ in windows] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0), (6.5, 10.5)]
    for start, _, piece in windows:
        np.testing.assert_array_equal(piece.samples, np.arange(40) + start * 10)
        assert piece.sample_rate == 10 and piece.length_action == "none"
    assert windows[0][2].name == "long.wav [0.00-4.00 s]"


def test_windows_that_fit_exactly_add_no_extra_window() -> None:
    windows = list(iter_windows(_clip(100), window=5.0, hop=5.0))
    assert [(start, end) for start, end, _ in windows] == [(0.0, 5.0), (5.0, 10.0)]


def test_clip_shorter_than_a_window_is_one_window() -> None:
    [(start, end, piece)] = list(iter_windows(_clip(25), window=4.0, hop=1.0))
    assert (start, end) == (0.0, 2.5) and piece.samples.shape == (25,)


def test_windows_of_a_stereo_clip_keep_channels() -> None:
    clip = AudioClip(np.zeros((2, 100), np.float32), 10, "s.wav", 10, 2, 10.0)
    assert all(piece.samples.shape == (2, 20) for _, _, piece in iter_windows(clip, 2.0, 2.0))


@pytest.mark.parametrize(("window", "hop"), [(0.0, 1.0), (1.0, 0.0), (float("nan"), 1.0), (1.0, -2.0)])
def test_bad_windows_are_usage_errors(window: float, hop: float) -> None:
    with pytest.raises(UsageError):
        list(iter_windows(_clip(100), window, hop))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), target=st.integers(1, 120), short=st.sampled_from(["loop", "pad"]))
def test_fitted_length_and_content_follow_the_definitions(n: int, target: int, short: str) -> None:
    x = np.arange(1, n + 1, dtype=np.float64)  # no zeros, so padding is visible
    out, action = apply_length(x, target, LengthPolicy(short=short))
    assert out.shape == (target,)
    index = np.arange(target)
    if n >= target:  # cropped from the start (or untouched)
        np.testing.assert_array_equal(out, x[:target])
    elif short == "loop":  # sample i is sample i mod n
        np.testing.assert_array_equal(out, x[index % n])
    else:  # the clip, then zeros
        np.testing.assert_array_equal(out, np.where(index < n, index + 1, 0))
    if n == target:
        expected = "none"
    elif n > target:
        expected = "cropped"
    else:
        expected = "looped" if short == "loop" else "padded"
    assert action == expected
