"""ImageBind preprocessing against the reference features and hand-computed clip positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from sound2image.audio.fbank import fbank, mel_banks
from sound2image.encoders import ImageBindAudioConfig
from sound2image.encoders.preprocess import (
    as_input_list,
    clip_bounds,
    load_channel0,
    load_mono,
    preprocess_audio,
    sinc_resample,
)
from sound2image.errors import AudioError
from tests.paths import IMAGEBIND_REFERENCE

pytestmark = pytest.mark.numeric
INPUTS = IMAGEBIND_REFERENCE / "inputs"


@pytest.fixture(scope="module")
def reference_features() -> dict[str, torch.Tensor]:
    return load_file(IMAGEBIND_REFERENCE / "features.safetensors")


def _rounding_bound(reference: torch.Tensor, amplitude: float, resampler_taps: int = 0) -> torch.Tensor:
    """Per feature, the largest |ours - reference| that float32 rounding explains (not one CPU's printout).

    The reference ran the same float32 steps on another machine, whose rounding may differ. Rounding in
    the resampler (``resampler_taps`` products per sample), DC removal, pre-emphasis and the 512-point FFT
    (log2 512 = 9 stages) is noise of rms <= eps * amplitude * sqrt(1 + 9 + taps) per sample; pre-emphasis
    multiplies it by <= 1 + 0.97; white noise puts sum(w^2) = 3 (400 - 1) / 8 of its energy into an FFT bin
    and mel filter b sums its weights' worth of bins; both runs have such noise (x 2): energy N_b. A bin of
    energy E moves by |d log E| <= 2 sqrt(N_b / E) (Cauchy-Schwarz; see test_fbank), plus 1e-5 for float32
    log and filter sums. Features are (log E + 4.268) / 9.138, floored at log(eps), so E >= eps.
    Shape of ``reference``: (clips, 1, 128, frames).
    """
    eps = torch.finfo(torch.float32).eps
    filter_gain = mel_banks(128, 512, 16000.0).sum(dim=1).double()[:, None]  # (128, 1)
    noise = 2 * (eps * amplitude * (1 + 0.97)) ** 2 * (10 + resampler_taps) * (3 * 399 / 8) * filter_gain
    energy = (reference.double() * 9.138 - 4.268).exp()
    rounding = 2 * torch.sqrt(noise / energy) + 1e-5
    return (rounding + _filter_weight_bound(energy)) / 9.138


def _filter_weight_bound(energy: torch.Tensor) -> torch.Tensor:
    """Per feature, the largest |d log E| from the mel filter weights themselves differing between machines.

    Kaldi (and torchaudio, and we) compute mel(f_k) = 1127 log(1 + f_k / 700) per FFT bin in float32 with
    the platform's vectorised log (MKL's on an MKL build, whose AVX-512 and AVX2 paths differ in the last
    bit). A float32 log is within 1 ulp, so two machines' logs differ by <= 2 ulp, and the product by 1127
    rounds once more (1 ulp of mel); the weight (mel - left) / spacing then moves by dw_k = that / spacing:
    up to ~4e-5, since mel values near 2,800 share a 21.8-mel spacing. E_b = sum_k w_bk P_k moves by
    <= sum over b's support of dw_k P_k; every bin's power is P_k = (sum_c w_ck P_k) / s_k with s_k the
    bin's column sum of weights (1 between two filters' centres), so the move is <= max_k (dw_k / s_k) times
    E_(b-1) + E_b + E_(b+1), the energies of the filters that share b's bins. ``energy``: (..., 128, frames).
    """
    spacing = (_htk_mel(8000.0) - _htk_mel(20.0)) / 129  # float64; the filters' corners are 20 Hz + k spacing
    freqs = np.arange(256) * 16000.0 / 512  # (256,) FFT bins below Nyquist (its column is zero by design)
    logs = np.log1p(freqs / 700.0).astype(np.float32)
    mels = np.float32(1127.0) * logs
    weight_move = (1127.0 * 2 * np.spacing(logs) + np.spacing(mels)).astype(np.float64) / spacing  # (256,)
    corners = _htk_mel(20.0) + spacing * np.arange(130)
    left, centre, right = corners[:-2, None], corners[1:-1, None], corners[2:, None]  # (128, 1) each
    mel = _htk_mel(freqs)[None, :]
    raw = np.minimum((mel - left) / (centre - left), (right - mel) / (right - centre))  # (128, 256)
    # Bins a filter could include on either machine: inside, or within a weight move of its edges.
    support = raw > -weight_move.max()
    column_sum = np.clip(raw, 0.0, None).sum(axis=0)  # (256,) s_k
    with np.errstate(divide="ignore"):
        ratio = np.where(support, weight_move / column_sum, 0.0).max(axis=1)  # (128,) max_k dw_k / s_k
    padded = torch.nn.functional.pad(energy, (0, 0, 1, 1))  # zero energy beyond the first and last filter
    sharing = padded[..., :-2, :] + padded[..., 1:-1, :] + padded[..., 2:, :]  # (..., 128, frames)
    move = torch.from_numpy(ratio)[:, None] * sharing / energy  # relative move of E_b
    return -torch.log1p(-move.clamp(max=1.0))  # |log(1 +- x)| <= -log(1 - x); inf where x >= 1


def _htk_mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


@pytest.mark.parametrize("name", ["real_10s_16000.wav", "short_1s_16000.wav"])
def test_16khz_features_match_reference(name: str, reference_features: dict[str, torch.Tensor]) -> None:
    ours = preprocess_audio(INPUTS / name, ImageBindAudioConfig())
    assert ours.shape == (3, 1, 128, 204)
    peak = float(np.abs(sf.read(INPUTS / name, dtype="float32")[0]).max())
    reference = reference_features[name]
    assert ((ours - reference).abs() <= _rounding_bound(reference, peak)).all()


def test_22khz_features_match_reference_through_torchaudio_compatible_resampler(
    reference_features: dict[str, torch.Tensor],
) -> None:
    ours = preprocess_audio(INPUTS / "real_10s_22050.wav", ImageBindAudioConfig())
    peak = float(np.abs(sf.read(INPUTS / "real_10s_22050.wav", dtype="float32")[0]).max())
    reference = reference_features["real_10s_22050.wav"]
    # 22,050 -> 16,000 Hz: the 6-zero-crossing sinc spans 2 * 6 * 441 / (0.99 * 320) < 20 input samples.
    assert ((ours - reference).abs() <= _rounding_bound(reference, peak, resampler_taps=20)).all()


def test_imagebind_clip_starts_are_thirds_of_the_slack() -> None:
    # 10 s at 16 kHz: starts at 0, 8/3 s, 16/3 s -> samples 0, 42666 (truncated), 85333.
    assert clip_bounds(160000, 16000, 2.0, 3) == [(0, 32000), (42666, 74666), (85333, 117333)]
    # Shorter than a clip: the whole file, three times.
    assert clip_bounds(19200, 16000, 2.0, 3) == [(0, 19200)] * 3


def test_cover_layout_tiles_a_10s_file_with_5_windows() -> None:
    bounds = clip_bounds(160000, 16000, 2.0, 5, layout="cover")
    assert bounds == [(0, 32000), (32000, 64000), (64000, 96000), (96000, 128000), (128000, 160000)]
    assert clip_bounds(50000, 16000, 2.0, 1, layout="cover") == [(0, 32000)]


def test_clips_per_file_option_shapes() -> None:
    x = np.random.default_rng(0).standard_normal(160000).astype(np.float32) * 0.1
    config = ImageBindAudioConfig(clips_per_file=5, clip_layout="cover")
    assert preprocess_audio((x, 16000), config).shape == (5, 1, 128, 204)


def test_sinc_resampler_keeps_a_tone_and_the_duration() -> None:
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = sinc_resample(torch.from_numpy(tone), 22050, 16000).numpy()
    assert out.shape == (math.ceil(22050 * 16000 / 22050),)
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    # Away from the edges (the kernel's half-width), the tone is reproduced closely.
    np.testing.assert_allclose(out[100:-100], expected[100:-100], atol=2e-3)
    # Above the new Nyquist frequency a tone is attenuated - by >= 20 dB only: torchaudio's short Hann-sinc
    # (6 zero crossings) is a weak filter, which is why it is used for ImageBind parity only.
    high = np.sin(2 * np.pi * 9500 * t).astype(np.float32)
    assert np.abs(sinc_resample(torch.from_numpy(high), 22050, 16000).numpy()[100:-100]).max() < 0.1


def test_downmix_by_default_channel_0_on_request(tmp_path) -> None:
    rng = np.random.default_rng(1)
    left = rng.standard_normal(16000).astype(np.float32) * 0.1
    right = rng.standard_normal(16000).astype(np.float32) * 0.1
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_mono(path), np.stack([left, right]).mean(axis=0, dtype=np.float32))
    np.testing.assert_array_equal(load_mono(path, channel="first"), left)  # ImageBind's reference
    np.testing.assert_array_equal(load_channel0(path), left)


def test_single_inputs_become_one_item_lists() -> None:
    pair = (np.zeros(10, np.float32), 16000)
    assert as_input_list(pair) == [pair]
    assert as_input_list("a.wav") == ["a.wav"]
    assert len(as_input_list(["a.wav", pair])) == 2


def test_bad_inputs_name_the_problem(tmp_path) -> None:
    with pytest.raises(AudioError, match="too short"):
        preprocess_audio((np.zeros(100, np.float32), 16000), ImageBindAudioConfig())
    with pytest.raises(AudioError, match=r"array input: .*\(frames, channels\)"):
        preprocess_audio((np.zeros((16000, 2), np.float32), 16000), ImageBindAudioConfig())
    with pytest.raises(AudioError, match="NaN"):
        preprocess_audio((np.full(16000, np.nan, np.float32), 16000), ImageBindAudioConfig())
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match="notes.wav"):
        preprocess_audio(bad, ImageBindAudioConfig())


def test_stereo_44khz_reference_is_reproduced_by_our_blocks_with_its_in_place_mean(
    reference_features: dict[str, torch.Tensor],
) -> None:
    """Our resampler and fbank reproduce the reference on 44.1 kHz stereo once its quirk is replayed:
    each clip's mean over both channels is subtracted in place from the shared (overlapping) waveform."""
    x, sr = sf.read(INPUTS / "stereo_3s_44100.wav", dtype="float32", always_2d=True)
    waveform = sinc_resample(
        torch.from_numpy(x.T.copy()), sr, 16000
    )  # (2, n): all channels, as the reference
    rows = []
    for start, end in clip_bounds(waveform.shape[1], 16000, 2.0, 3):
        clip = waveform[:, start:end]
        clip -= clip.mean()  # in place, on a view: later overlapping clips see it
        mel = fbank(clip[0]).T  # (128, frames)
        rows.append(((torch.nn.functional.pad(mel, (0, 204 - mel.shape[1])) + 4.268) / 9.138)[None])
    replay = torch.stack(rows)
    reference = reference_features["stereo_3s_44100.wav"]
    # 44,100 -> 16,000 Hz: the sinc spans 2 * 6 * 441 / (0.99 * 160) < 35 input samples; |x| <= 2 after
    # the in-place means.
    assert ((replay - reference).abs() <= _rounding_bound(reference, 2.0, resampler_taps=35)).all()
    # Our protocol (each clip's own mean, channel 0) differs only slightly, in a few bins. The reference
    # reads channel 0, our default down-mixes: parity needs channel="first".
    ours = preprocess_audio(INPUTS / "stereo_3s_44100.wav", ImageBindAudioConfig(channel="first"))
    assert (ours - replay).abs().gt(1e-3).float().mean().item() < 0.01
