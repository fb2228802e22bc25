"""Long audio -> one image per time window, with a contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sound2image.audio import load_audio
from sound2image.diffusion.storyboard import contact_sheet, iter_storyboard, sheet_record, storyboard_windows
from sound2image.errors import UsageError
from tests.diffusion.conftest import STEPS

pytestmark = pytest.mark.numeric


def test_windows_cover_the_clip_with_the_last_aligned_to_the_end(wavs):
    clip = load_audio(wavs[0])  # exactly 10.0 s
    windows = storyboard_windows(clip, window=4.0, hop=3.0)
    assert [(w.start, w.end) for w in windows] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)]
    assert [w.tag for w in windows] == ["t0000.00-0004.00", "t0003.00-0007.00", "t0006.00-0010.00"]
    assert windows[1].label == "3.0-7.0 s"
    start = 3 * clip.sample_rate
    assert np.array_equal(windows[1].clip.samples, clip.samples[start : start + 4 * clip.sample_rate])
    # Default hop = window; 10 s in 4 s windows: 0-4, 4-8, and one aligned to the end, 6-10.
    assert [(w.start, w.end) for w in storyboard_windows(clip, 4.0)] == [(0.0, 4.0), (4.0, 8.0), (6.0, 10.0)]


def test_bad_window_settings_are_usage_errors(wavs):
    with pytest.raises(UsageError, match="window"):
        storyboard_windows(load_audio(wavs[0]), window=0.0)


def test_each_frame_is_the_image_of_its_window(pipe, plain, wavs):
    clip = load_audio(wavs[0])
    windows = storyboard_windows(clip, window=5.0)
    frames = list(iter_storyboard(pipe, windows, seed=9, num_inference_steps=STEPS, output_type="np"))
    assert [f.window.index for f in frames] == [0, 1]
    for frame in frames:
        # Independent: embed the window's own samples through the encoder API, calibrate by hand.
        raw = pipe.audio_encoder.embed(
            [(clip.samples[int(frame.window.start * 22050) :][: 5 * 22050], 22050)]
        )
        embeds = raw / raw.norm() * pipe.calibration.target_norm
        assert torch.allclose(frame.image_embeds, embeds, atol=1e-5)  # same encoder call; rescale: a few eps
        generator = torch.Generator("cpu").manual_seed(9)
        expected = plain(
            image_embeds=frame.image_embeds, generator=generator, num_inference_steps=STEPS, output_type="np"
        )
        assert np.array_equal(frame.image, expected.images[0])


def test_contact_sheet_tiles_frames_in_time_order(pipe, wavs):
    windows = storyboard_windows(load_audio(wavs[1]), window=3.0, hop=3.0)  # 0-3, 3-6, 6-9, 7-10
    frames = list(iter_storyboard(pipe, windows, seed=0, num_inference_steps=1))
    sheet = contact_sheet(frames)
    # 4 tiles of 32×32 -> 2 columns × 2 rows, 4 px padding, 14 px label rows (outputs.make_grid).
    assert sheet.size == (2 * (32 + 4) + 4, 2 * (32 + 14 + 4) + 4)
    top_right = np.asarray(sheet)[4 : 4 + 32, 40 : 40 + 32]
    assert np.array_equal(top_right, np.asarray(frames[1].image.convert("RGB")))


def test_frame_and_sheet_records_say_where_in_the_storyboard_they_are(pipe, wavs):
    windows = storyboard_windows(load_audio(wavs[1]), window=3.0, hop=3.0)  # 0-3, 3-6, 6-9, 7-10
    frames = list(iter_storyboard(pipe, windows, seed=0, num_inference_steps=1))
    expected = {"index": 3, "start": 7.0, "end": 10.0, "window": 3.0, "hop": 3.0}
    assert frames[3].record.extra["storyboard"] == expected
    assert frames[3].record.audio[0]["window"] == [7.0, 10.0]
    record = sheet_record(frames, ["a.png", "b.png", "c.png", "d.png"], {"file": "long.wav"})
    assert record.extra == {
        "storyboard": {"window": 3.0, "hop": 3.0},
        "frames": ["a.png", "b.png", "c.png", "d.png"],
    }
    assert record.audio == [{"file": "long.wav"}] and record.best_of is None
    assert record.settings == frames[0].record.settings and record.seed == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": float("nan")}, "^window must be finite and > 0, got nan$"),
        ({"window": float("inf")}, "^window must be finite and > 0, got inf$"),
        ({"window": -1.0}, "^window must be finite and > 0, got -1.0$"),
        ({"window": 2.0, "hop": float("nan")}, "^hop must be finite and > 0, got nan$"),
        ({"window": 2.0, "hop": float("inf")}, "^hop must be finite and > 0, got inf$"),
        ({"window": 2.0, "hop": 0.0}, "^hop must be finite and > 0, got 0.0$"),
    ],
)
def test_window_and_hop_must_be_finite_positive_seconds(wavs, kwargs, message):
    with pytest.raises(UsageError, match=message):
        storyboard_windows(load_audio(wavs[0]), **kwargs)
