"""Resampler quality and speed, and the cost of `load_audio`'s checks, against baselines in the same run.

Run by hand:  python bench/audio_resample.py  (results saved by hand to bench/results/audio_resample.txt).

1. Quality: level (dB) of a full-scale tone after resampling, at fractions of the lower Nyquist
   frequency — ours (Kaiser-windowed sinc designed for 80 dB) against scipy's default
   ``resample_poly`` (Kaiser β=5, 10 zero crossings) and linear interpolation (``np.interp``).
2. Speed: seconds to resample 10 s of noise, ours against scipy's default (ratio ours/baseline).
3. Loading: `load_audio` on the 132 pseudo-ADVANCE clips (all checks, float32) against a bare
   ``soundfile.read`` of the same files (ratio), with and without resampling to 16 kHz.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sound2image.audio import load_audio, resample

SHARED = Path(os.environ.get("SOUND2IMAGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
RATIOS = [(44100, 16000), (22050, 16000), (48000, 22050), (48000, 16000), (8000, 22050)]
FRACTIONS = [0.5, 0.9, 0.95, 1.02, 1.05, 1.1, 1.2, 1.5]  # (a tone at exactly Nyquist samples to zeros)


def level_db(x: np.ndarray) -> float:
    """RMS level of the middle half relative to a full-scale sine."""
    middle = x[len(x) // 4 : -len(x) // 4]
    return 20 * np.log10(np.sqrt(np.mean(np.square(middle, dtype=np.float64))) / np.sqrt(0.5) + 1e-12)


def linear(x: np.ndarray, orig: int, target: int) -> np.ndarray:
    n_out = -(-len(x) * target // orig)
    return np.interp(np.arange(n_out) / target, np.arange(len(x)) / orig, x)


def best_of(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def quality() -> None:
    print("1. level (dB) of a full-scale tone after resampling, by tone frequency / lower Nyquist")
    methods = {
        "ours": lambda x, o, t: resample(x, o, t),
        "scipy default": lambda x, o, t: resample_poly(x, t, o),
        "linear interp": linear,
    }
    for orig, target in RATIOS:
        nyquist = min(orig, target) / 2
        print(f"  {orig} -> {target} Hz")
        header = "".join(f"{f:>8.2f}" for f in FRACTIONS if f * nyquist < orig / 2)
        print(f"    {'method':<14}{header}")
        for name, method in methods.items():
            cells = []
            for fraction in FRACTIONS:
                freq = fraction * nyquist
                if freq >= orig / 2:
                    continue
                x = np.sin(2 * np.pi * freq * np.arange(orig) / orig)
                cells.append(f"{level_db(method(x, orig, target)):>8.1f}")
            print(f"    {name:<14}{''.join(cells)}")


def speed() -> None:
    print("2. seconds to resample 10 s of noise (best of 5)")
    rng = np.random.default_rng(0)
    for orig, target in RATIOS:
        x = rng.standard_normal(10 * orig).astype(np.float32)
        resample(x, orig, target)  # design (and cache) the filter outside the timing
        ours = best_of(lambda x=x, o=orig, t=target: resample(x, o, t))
        base = best_of(lambda x=x, o=orig, t=target: resample_poly(x, t, o))
        ratio = ours / base
        print(f"  {orig:>5} -> {target:<5}  ours {ours:.4f} s  scipy default {base:.4f} s  ratio {ratio:.2f}")


def loading() -> None:
    files = sorted((SHARED / "data" / "pseudo-advance" / "sound").rglob("*.wav"))
    print(f"3. loading {len(files)} pseudo-ADVANCE clips (10 s, 22,050 Hz), best of 3")
    bare = best_of(lambda: [sf.read(f, dtype="float32") for f in files], 3)
    checked = best_of(lambda: [load_audio(f) for f in files], 3)
    at16k = best_of(lambda: [load_audio(f, 16000) for f in files], 3)
    print(f"  soundfile.read (baseline)      {bare:.3f} s  ({bare / len(files) * 1000:.2f} ms/file)")
    print(f"  load_audio                     {checked:.3f} s  ratio {checked / bare:.2f}")
    print(f"  load_audio(..., 16000)         {at16k:.3f} s  ratio {at16k / bare:.2f}")


if __name__ == "__main__":
    quality()
    speed()
    loading()
