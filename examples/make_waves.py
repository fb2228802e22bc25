"""Synthesise ``examples/waves.flac``: 10 s of surf on a beach, made from noise alone.

The example sound that ships with sound2image is synthesised here rather than recorded, so that it carries
no third-party licence: it is part of this project (Apache-2.0; you may also use it under CC0 1.0).
Run ``python examples/make_waves.py`` to rebuild it (deterministic for a given NumPy/SciPy/libsndfile).

The recipe: brown-ish noise low-passed at 500 Hz is the rumble of the water; band-passed noise
(1.5-6 kHz) is the hiss of the foam. Each breaking wave is an envelope with a fast rise (the break) and a
slow exponential wash-out, one every 3.5-5 s; the foam hiss follows the envelope a little later.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE = 16_000
DURATION = 10.0
SEED = 2026


def wave_envelope(n: int, rate: int, rng: np.random.Generator, delay: float = 0.0) -> np.ndarray:
    """Sum of breaking-wave envelopes: rise in ~0.6 s, decay with a ~1.6 s time constant."""
    t = np.arange(n) / rate
    envelope = np.full(n, 0.12)  # the sea never goes fully quiet
    start = -1.5
    while start < n / rate:
        peak = rng.uniform(0.6, 1.0)
        local = t - start - delay
        rise = np.clip(local / 0.6, 0.0, 1.0) ** 2
        decay = np.exp(-np.clip(local - 0.6, 0.0, None) / 1.6)
        envelope += peak * np.where(local > 0, rise * decay, 0.0)
        start += rng.uniform(3.5, 5.0)
    return envelope


def synthesise(rate: int = SAMPLE_RATE, duration: float = DURATION, seed: int = SEED) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of the surf sound, shape ``(round(rate * duration),)``."""
    rng = np.random.default_rng(seed)
    n = round(rate * duration)
    rumble = signal.sosfilt(signal.butter(4, 500, "lowpass", fs=rate, output="sos"), rng.standard_normal(n))
    foam = signal.sosfilt(signal.butter(4, [1500, 6000], "bandpass", fs=rate, output="sos"), rng.standard_normal(n))
    envelope = wave_envelope(n, rate, np.random.default_rng(seed + 1))
    foam_envelope = wave_envelope(n, rate, np.random.default_rng(seed + 1), delay=0.35) ** 1.5
    mix = rumble / rumble.std() * envelope + 0.5 * foam / foam.std() * foam_envelope
    fade = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.05 * rate))  # no clicks
    mix *= fade
    return (0.5 * mix / np.abs(mix).max()).astype(np.float32)  # peak -6 dBFS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("waves.flac"))
    args = parser.parse_args()
    sf.write(args.out, synthesise(), SAMPLE_RATE, subtype="PCM_16")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
