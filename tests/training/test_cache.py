"""The cache pass: computed once, keyed by content and settings, resumable, split across ranks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sound2image.data import Pair
from sound2image.training import cache as cache_module
from sound2image.training.cache import (
    AudioSettings,
    CachePass,
    LatentSettings,
    image_to_tensor,
    module_fingerprint,
)
from tests.paths import PSEUDO_ADVANCE


def real_pairs(count: int) -> list[Pair]:
    audios = sorted((PSEUDO_ADVANCE / "sound" / "farmland").glob("*.wav"))[:count]
    return [
        Pair(
            audio=a, image=PSEUDO_ADVANCE / "vision" / "farmland" / f"{a.stem}.jpg", key=a.stem, group=a.stem
        )
        for a in audios
    ]


class Counter:
    """Counts what the pass computes: audio files embedded and images VAE-encoded."""

    def __init__(self, pipe, monkeypatch) -> None:
        self.audio = 0
        self.images = 0
        self.encoder = pipe.audio_encoder
        real = cache_module.encode_latents

        def counting_encode(vae, pixels, flip):
            self.images += pixels.shape[0]
            return real(vae, pixels, flip)

        monkeypatch.setattr(cache_module, "encode_latents", counting_encode)

    def embed(self, paths):
        self.audio += len(paths)
        return self.encoder.embed([str(p) for p in paths])


def make_pass(pipe, root: Path, counter: Counter, resolution: int = 16, **kwargs) -> CachePass:
    return CachePass(
        cache_root=root,
        vae=pipe.unclip.vae,
        embed=counter.embed,
        latent_settings=LatentSettings(resolution=resolution, vae=module_fingerprint(pipe.unclip.vae)),
        audio_settings=AudioSettings(
            encoder=module_fingerprint(pipe.audio_encoder, pipe.audio_encoder.config)
        ),
        **kwargs,
    )


def test_reused_across_runs_keyed_by_content_and_settings(tmp_path, soundiff, monkeypatch) -> None:
    counter = Counter(soundiff, monkeypatch)
    pairs = real_pairs(4)
    first = make_pass(soundiff, tmp_path / "cache", counter).run(pairs)
    assert (counter.audio, counter.images) == (4, 4)
    again = make_pass(soundiff, tmp_path / "cache", counter).run(pairs)  # a new run, same settings
    assert (counter.audio, counter.images) == (4, 4)
    assert torch.equal(again.latent_mean, first.latent_mean) and torch.equal(
        again.audio_embeds, first.audio_embeds
    )

    # Same content under another name: a hit. (Copied into tmp_path only, never into the repository.)
    renamed_audio = shutil.copy(pairs[0].audio, tmp_path / "renamed.wav")
    renamed = Pair(audio=Path(renamed_audio), image=pairs[0].image, key="renamed", group="renamed")
    make_pass(soundiff, tmp_path / "cache", counter).run([renamed])
    assert (counter.audio, counter.images) == (4, 4)

    # A setting that changes the latents (resolution) misses for latents only.
    make_pass(soundiff, tmp_path / "cache", counter, resolution=24).run(pairs)
    assert (counter.audio, counter.images) == (4, 8)


def test_interrupted_pass_keeps_finished_shards(tmp_path, soundiff, monkeypatch) -> None:
    counter = Counter(soundiff, monkeypatch)
    pairs = real_pairs(6)
    calls = {"n": 0}
    real = cache_module.encode_latents

    def dies_on_third_batch(vae, pixels, flip):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(vae, pixels, flip)

    monkeypatch.setattr(cache_module, "encode_latents", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        make_pass(soundiff, tmp_path / "cache", counter, batch_size=2, shard_size=2).run(pairs)
    assert counter.images == 4  # two batches finished and written as shards
    monkeypatch.setattr(cache_module, "encode_latents", real)
    encoded = []
    monkeypatch.setattr(
        cache_module, "encode_latents", lambda v, p, f: encoded.append(p.shape[0]) or real(v, p, f)
    )
    result = make_pass(soundiff, tmp_path / "cache", counter, batch_size=2, shard_size=2).run(pairs)
    assert sum(encoded) == 2 and len(result) == 6  # only the unfinished images are computed


@pytest.mark.numeric
def test_flip_variant_is_the_latent_of_the_mirror_image(tmp_path, soundiff, monkeypatch) -> None:
    counter = Counter(soundiff, monkeypatch)
    pair = real_pairs(1)
    cached = make_pass(soundiff, tmp_path / "cache", counter, resolution=32).run(pair)
    pixels = image_to_tensor(pair[0].image, 32)[None]  # (1, 3, 32, 32)
    with torch.no_grad():
        mirror = soundiff.unclip.vae.encode(torch.flip(pixels, dims=[-1])).latent_dist
        plain = soundiff.unclip.vae.encode(pixels).latent_dist
    # The same VAE on the same single image in the same shape: bit-equal (measured). The tolerance leaves
    # room for another conv blocking only: eps * sqrt(K) ~ 3e-6 relative for K = 9 * 64 products.
    torch.testing.assert_close(cached.flip_mean, mirror.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.flip_std, mirror.std, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.latent_mean, plain.mean, rtol=1e-5, atol=1e-6)
    # Why both are stored: mirroring the latent is not the latent of the mirror image.
    assert (torch.flip(plain.mean, dims=[-1]) - mirror.mean).abs().max() > 1e-3


def test_image_preprocessing_is_a_centre_crop_in_minus_one_one(tmp_path) -> None:
    from PIL import Image

    # 40x20: left half black, right half white; the centre 20x20 crop is half black, half white.
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (20, 0, 40, 20))
    image.save(tmp_path / "wide.png")
    pixels = image_to_tensor(tmp_path / "wide.png", 20)
    assert pixels.shape == (3, 20, 20)
    assert torch.equal(pixels[:, :, :10], -torch.ones(3, 20, 10))
    assert torch.equal(pixels[:, :, 10:], torch.ones(3, 20, 10))


def test_bad_items_are_reported_and_the_rest_cached(tmp_path, soundiff, monkeypatch) -> None:
    counter = Counter(soundiff, monkeypatch)
    pairs = real_pairs(3)
    corrupt_image = tmp_path / "corrupt.jpg"
    corrupt_image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty_audio = tmp_path / "empty.wav"
    empty_audio.write_bytes(b"")
    pairs += [
        Pair(audio=pairs[0].audio, image=corrupt_image, key="bad-image", group="bad-image"),
        Pair(audio=empty_audio, image=pairs[1].image, key="bad-audio", group="bad-audio"),
        Pair(audio=tmp_path / "missing.wav", image=pairs[2].image, key="missing", group="missing"),
    ]
    result = make_pass(soundiff, tmp_path / "cache", counter, batch_size=4).run(pairs)
    assert [p.key for p in result.pairs] == [p.key for p in pairs[:3]]
    lines = result.bad.lines()
    assert len(lines) == 3
    assert any(str(corrupt_image) in line for line in lines)
    assert any(str(empty_audio) in line for line in lines)
    assert any(str(tmp_path / "missing.wav") in line for line in lines)


def test_ranks_compute_disjoint_shares(tmp_path, soundiff, monkeypatch) -> None:
    counter = Counter(soundiff, monkeypatch)
    pairs = real_pairs(5)
    make_pass(soundiff, tmp_path / "cache", counter, rank=1, world_size=2).fill(pairs)
    assert (counter.audio, counter.images) == (2, 2)  # the odd positions of 5 sorted keys
    make_pass(soundiff, tmp_path / "cache", counter, rank=0, world_size=2).fill(pairs)
    assert (counter.audio, counter.images) == (5, 5)  # its share, nothing twice
    shards = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").rglob("shard-*.safetensors"))
    assert shards == ["r0", "r0", "r1", "r1"]
    full = make_pass(soundiff, tmp_path / "cache", counter).run(pairs)
    assert len(full) == 5 and (counter.audio, counter.images) == (5, 5)


def test_audio_key_changes_with_the_channel_policy() -> None:
    """The channel policy is part of the encoder's config, so of the fingerprint and of the store key."""
    from tests.dummies import get_dummy_audio_encoder

    encoder = get_dummy_audio_encoder()
    keys = {}
    for channel in ("mean", "first", 1, "mean"):
        encoder.config = encoder.sampling_config(channel=channel)
        keys.setdefault(channel, set()).add(
            AudioSettings(encoder=module_fingerprint(encoder, encoder.config)).key()
        )
    assert all(len(found) == 1 for found in keys.values())  # deterministic per policy
    assert len({next(iter(found)) for found in keys.values()}) == 3  # and different between policies
