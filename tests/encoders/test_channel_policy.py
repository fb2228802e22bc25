"""One channel policy behind every entry point (issue 11, B1).

The input: a stereo file whose left channel is digital silence and whose right channel is noise. Its
down-mix is exactly ``right / 2`` (float32: 0 + r is r, and halving is exact), so the right value of every
entry point under the default policy is the encoder's vector of the mono signal ``right / 2``, and under
``channel="first"`` the vector of silence. The entry points: the encoder's ``embed``, ``SounDiffPipeline``,
``sound2image embed``, the fine-tuning cache, ``sound2image generate`` (what it conditions on, from the
PNG; in tests/diffusion/test_channel_policy_generate.py, beside the pipeline fixtures), storyboards and
the Image Transformer's features.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from sound2image.audio import SilentAudioWarning, load_audio
from sound2image.audio.channels import SilentChannelWarning, check_channel, parse_channel, select_channel
from sound2image.cli.main import main
from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder
from sound2image.encoders.imagebind import load_embeddings
from sound2image.encoders.preprocess import load_mono, preprocess_audio
from sound2image.errors import AudioError, UsageError
from tests.dummies import get_dummy_audio_encoder

pytestmark = pytest.mark.numeric
SR = 16000
SECONDS = 2.5
#: Stands in for the unCLIP generator where only the audio side of the pipeline runs.
_NO_UNCLIP = SimpleNamespace(image_encoder=object(), set_progress_bar_config=lambda **kwargs: None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the tiny models are fastest so, and both sides of a comparison sum alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def signals() -> tuple[np.ndarray, np.ndarray]:
    """(left, right): digital silence and seeded noise, float32, 2.5 s at 16 kHz."""
    right = (0.2 * np.random.default_rng(11).standard_normal(int(SR * SECONDS))).astype(np.float32)
    return np.zeros_like(right), right


@pytest.fixture(scope="module")
def stereo(tmp_path_factory, signals) -> Path:
    """The stereo file (float WAV, so the samples read back bit-exactly)."""
    path = tmp_path_factory.mktemp("channels") / "left_silent.wav"
    left, right = signals
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def encoder() -> ImageBindAudioEncoder:
    return get_dummy_audio_encoder()


@pytest.fixture(scope="module")
def expected(encoder, signals) -> dict[str, torch.Tensor]:
    """The independent references: the encoder's vectors of the explicit mix, of channel 0, of channel 1."""
    left, right = signals
    mix = np.stack([left, right]).mean(axis=0, dtype=np.float32)
    assert np.array_equal(mix, right * np.float32(0.5))  # the down-mix of (0, r) is exactly r / 2
    return {
        "mean": encoder.embed((right * np.float32(0.5), SR))[0],
        "first": encoder.embed((left, SR))[0],
        1: encoder.embed((right, SR))[0],
    }


def test_policy_values_and_errors() -> None:
    assert ImageBindAudioConfig().channel == "mean"
    assert check_channel("first") == "first" and check_channel("2") == 2 and check_channel(0) == 0
    assert parse_channel("mean") == "mean"
    for bad in ("left", -1, 1.5, True):
        with pytest.raises(UsageError, match=r"^channel must be 'mean', 'first' or a channel index >= 0"):
            ImageBindAudioConfig(channel=bad)
    with pytest.raises(argparse.ArgumentTypeError, match="left"):
        parse_channel("left")
    stereo = np.zeros((2, 100), np.float32)
    with pytest.raises(AudioError, match=r"^a.wav: channel 2 requested but the input has 2 channel\(s\)$"):
        select_channel(stereo, 2, "a.wav")
    with pytest.raises(AudioError, match=r"^a.wav: channel 1 requested but the input is mono"):
        select_channel(np.zeros(100, np.float32), 1, "a.wav")


def test_select_channel_values() -> None:
    samples = np.array([[1.0, 2.0, 4.0], [3.0, -2.0, 0.0], [2.0, 3.0, 5.0]], np.float32)
    np.testing.assert_array_equal(select_channel(samples, "mean"), [2.0, 1.0, 3.0])
    np.testing.assert_array_equal(select_channel(samples, "first"), [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(select_channel(samples, 2), [2.0, 3.0, 5.0])
    mono = np.array([0.5, -0.5], np.float32)
    for policy in ("mean", "first", 0):
        np.testing.assert_array_equal(select_channel(mono, policy), mono)


def test_encoder_embed_downmixes_by_default_and_reads_channel_0_on_request(encoder, stereo, expected) -> None:
    assert torch.equal(encoder.embed(stereo)[0], expected["mean"])
    assert not torch.equal(expected["mean"], expected["first"])  # the two policies really differ here
    with pytest.warns(
        SilentChannelWarning, match=r"left_silent.wav: channel 0 is silent .* channel 1 is not"
    ):
        first = encoder.embed(stereo, channel="first")[0]
    assert torch.equal(first, expected["first"])
    assert torch.equal(encoder.embed(stereo, channel=1)[0], expected[1])
    # An AudioClip with its channels, and a (channels, n) array: the same policy.
    clip = load_audio(stereo, mono=False)
    assert torch.equal(encoder.embed(clip)[0], expected["mean"])
    left, right = np.stack(sf.read(stereo, dtype="float32")[0].T)
    assert torch.equal(encoder.embed((np.stack([left, right]), SR))[0], expected["mean"])


def test_no_warning_for_the_default_policy_on_a_silent_left_channel(encoder, stereo) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SilentChannelWarning)
        encoder.embed(stereo)


def test_cancelling_channels_warn_under_the_mean_policy(tmp_path) -> None:
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    path = tmp_path / "opposite.wav"
    sf.write(path, np.stack([x, -x], axis=1), SR, subtype="FLOAT")
    with pytest.warns(
        SilentChannelWarning, match=r"opposite.wav: the channels cancel out: the mean .* silent"
    ):
        mixed = load_mono(path)
    assert np.abs(mixed).max() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", SilentChannelWarning)
        np.testing.assert_array_equal(load_mono(path, channel="first"), x)


def test_the_policy_is_applied_before_resampling(tmp_path, signals) -> None:
    """At 22,050 Hz: the down-mix (at the file's rate) then the sinc resampler, as the CLI always did."""
    rng = np.random.default_rng(3)
    left, right = (0.1 * rng.standard_normal((2, 22050))).astype(np.float32)
    path = tmp_path / "s22.wav"
    sf.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    mix = np.stack([left, right]).mean(axis=0, dtype=np.float32)
    np.testing.assert_array_equal(load_mono(path), load_mono((mix, 22050)))
    np.testing.assert_array_equal(load_mono(path, channel="first"), load_mono((left, 22050)))


def test_pipeline_api_uses_the_same_policy(encoder, stereo, expected) -> None:
    from sound2image.diffusion import SounDiffPipeline
    from sound2image.diffusion.conditioning import mix_embeddings

    pipe = SounDiffPipeline(unclip=_NO_UNCLIP, audio_encoder=encoder)
    assert torch.equal(pipe.encode_audio(str(stereo))[0], expected["mean"])
    with pytest.warns(SilentChannelWarning):
        assert torch.equal(pipe.encode_audio(str(stereo), channel="first")[0], expected["first"])
    conditioning = pipe.build_image_embeds(str(stereo))
    assert torch.equal(conditioning, mix_embeddings(expected["mean"][None], pipe.calibration))


def test_storyboard_windows_use_the_same_policy(encoder, stereo, signals) -> None:
    from sound2image.diffusion import SounDiffPipeline
    from sound2image.diffusion.storyboard import storyboard_windows

    pipe = SounDiffPipeline(unclip=_NO_UNCLIP, audio_encoder=encoder)
    clip = load_audio(stereo, mono=False)  # what `generate --storyboard` loads
    windows = storyboard_windows(clip, 1.0, 1.0)
    got = pipe.encode_audio([w.clip for w in windows])
    half = signals[1] * np.float32(0.5)
    want = encoder.embed([(half[int(w.start * SR) : int(w.end * SR)], SR) for w in windows])
    assert len(windows) == 3 and torch.equal(got, want)


def test_embed_cli_file_equals_the_mean_vector_and_records_the_policy(encoder, stereo, expected, tmp_path):
    from sound2image.encoders.weights import write_audio_safetensors

    weights = write_audio_safetensors(
        encoder.official_state_dict(), tmp_path / "w.safetensors", encoder.config, source="test"
    )
    common = ["embed", str(stereo), "--weights", str(weights), "--device", "cpu"]
    assert main([*common, "-o", str(tmp_path / "mean.safetensors")]) == 0
    rows, files, meta = load_embeddings(tmp_path / "mean.safetensors")
    assert files == [str(stereo)] and meta["encoder_config"]["channel"] == "mean"
    assert torch.equal(rows[0], expected["mean"])
    with pytest.warns(SilentChannelWarning):
        assert main([*common, "--channel", "first", "-o", str(tmp_path / "first.safetensors")]) == 0
    rows, _, meta = load_embeddings(tmp_path / "first.safetensors")
    assert meta["encoder_config"]["channel"] == "first"
    assert torch.equal(rows[0], expected["first"])


def _cache_pass(channel: str, tmp_path: Path, unclip) -> object:
    from sound2image.diffusion import SounDiffPipeline
    from sound2image.training.soundiff import SounDiffTrainConfig, make_cache_pass

    pipe = SounDiffPipeline(unclip=unclip, audio_encoder=get_dummy_audio_encoder())
    config = SounDiffTrainConfig(
        data="unused", output_dir=str(tmp_path), audio_channel=channel, progress=False
    ).resolved()
    accelerator = SimpleNamespace(
        device=torch.device("cpu"),
        process_index=0,
        num_processes=1,
        wait_for_everyone=lambda: None,
        is_main_process=True,
    )
    return make_cache_pass(config, pipe, accelerator, tmp_path)


def test_fine_tuning_cache_entry_and_key_follow_the_policy(stereo, expected, tmp_path) -> None:
    # The audio side of the cache needs no generator; a small module stands in for the VAE it fingerprints.
    unclip = SimpleNamespace(**vars(_NO_UNCLIP), vae=torch.nn.Linear(2, 2))
    mean_pass = _cache_pass("mean", tmp_path, unclip)
    assert torch.equal(mean_pass.embed_paths([stereo])[0], expected["mean"])
    with pytest.warns(SilentChannelWarning):
        first_pass = _cache_pass("first", tmp_path, unclip)
        assert torch.equal(first_pass.embed_paths([stereo])[0], expected["first"])
    # Different policies, different stores: neither reads the other's entries.
    assert mean_pass.audio_settings.key() != first_pass.audio_settings.key()
    assert mean_pass.audio_store.directory != first_pass.audio_store.directory
    # The policy is a checked training setting.
    from sound2image.training.soundiff import SounDiffTrainConfig

    with pytest.raises(UsageError, match="audio_channel must be"):
        SounDiffTrainConfig(data="d", output_dir="o", audio_channel="left").resolved()


def test_train_soundiff_cli_flag_sets_the_config() -> None:
    from sound2image.cli.main import build_parser
    from sound2image.cli.train_soundiff import config_from_args

    base = ["train", "soundiff", "--data", "d", "--output", "o"]
    assert config_from_args(build_parser().parse_args([*base, "--channel", "first"])).audio_channel == "first"
    assert config_from_args(build_parser().parse_args([*base, "--channel", "1"])).audio_channel == 1
    assert config_from_args(build_parser().parse_args(base)).audio_channel == "mean"


def test_saved_encoder_keeps_its_policy(tmp_path) -> None:
    from sound2image.diffusion.pipeline import load_saved_audio_encoder, save_audio_encoder

    encoder = get_dummy_audio_encoder()
    encoder.config = encoder.sampling_config(channel="first")
    save_audio_encoder(encoder, tmp_path / "enc")
    assert load_saved_audio_encoder(tmp_path / "enc").config.channel == "first"
    encoder.save_pretrained(tmp_path / "enc.safetensors")
    assert ImageBindAudioEncoder.from_pretrained(tmp_path / "enc.safetensors").config.channel == "first"


def test_preprocess_reads_the_policy_from_the_config(stereo, signals) -> None:
    config = ImageBindAudioConfig(channel="first")
    with pytest.warns(SilentChannelWarning):
        got = preprocess_audio(stereo, config)
    assert torch.equal(got, preprocess_audio((signals[0], SR), config))


def test_image_transformer_features_downmix_by_default(tmp_path, signals) -> None:
    from sound2image.audio.sections import AV_DIGITS_FEATURES, SectionFeatureConfig, compute_section_features

    left, right = signals
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    mono = tmp_path / "half.wav"
    sf.write(mono, right * np.float32(0.5), SR, subtype="FLOAT")
    np.testing.assert_array_equal(
        compute_section_features(path, AV_DIGITS_FEATURES), compute_section_features(mono, AV_DIGITS_FEATURES)
    )
    first = SectionFeatureConfig.from_dict({**AV_DIGITS_FEATURES.to_dict(), "channel": "first"})
    assert first.to_dict()["channel"] == "first"  # stored with the model's feature settings
    silence = tmp_path / "silence.wav"
    sf.write(silence, left, SR, subtype="FLOAT")
    with pytest.warns(SilentChannelWarning):
        got = compute_section_features(path, first)
    with pytest.warns(SilentAudioWarning):  # the silent mono file warns as such
        want = compute_section_features(silence, first)
    np.testing.assert_array_equal(got, want)
