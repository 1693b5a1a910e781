"""The resampler a model was trained with, and a fixed correction that lets the runtime keep its own.

The comparison models were trained on audio resampled to 16 kHz with a Kaiser-windowed sinc (beta
12.9846, roll-off 0.917347 of the output Nyquist, 50 zero crossings: librosa 0.7's ``kaiser_best``),
which removes almost everything above ~7.3 kHz. The runtime resamples with soxr 'HQ', which keeps much
more of 7-8 kHz, and the networks react to those top mel bands. Rather than carry a second, slow
resampler in the runtime, the exporter measures both resamplers' power response as the model's own
STFT sees it and folds the ratio into the mel filterbank: one multiplication per FFT bin, zero cost.

This module is export-time only (numpy + scipy + soxr).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

BETA = 12.9846
ROLLOFF = 0.917347
ZERO_CROSSINGS = 50


def kaiser_best(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample like the training pipeline did: a Kaiser-windowed sinc with the parameters above."""
    from scipy.signal import resample_poly

    if sr_in == sr_out:
        return x.astype(np.float32)
    ratio = Fraction(sr_out, sr_in)
    up, down = ratio.numerator, ratio.denominator
    fs_up = sr_in * up
    fc = ROLLOFF * min(sr_in, sr_out) / 2  # Hz
    half = int(np.ceil(ZERO_CROSSINGS / (2 * fc) * fs_up))
    n = np.arange(-half, half + 1)
    t = n / fs_up
    h = (2 * fc / fs_up) * np.sinc(2 * fc * t) * np.kaiser(2 * half + 1, BETA)
    y = resample_poly(x.astype(np.float64), up, down, window=h)
    want = int(np.ceil(len(x) * sr_out / sr_in))
    y = y[:want] if len(y) >= want else np.concatenate([y, np.zeros(want - len(y))])
    return y.astype(np.float32)


def soxr_hq(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(x.astype(np.float32), sr_in, sr_out, quality="HQ")


def _frame_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Mean periodic-Hann power spectrum over all frames: what the model's STFT sees on average."""
    win = np.hanning(n_fft + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return (np.abs(np.fft.rfft(frames * win, axis=1)) ** 2).mean(axis=0)


def bin_gains(sr_in: int = 44100, sr_out: int = 16000, n_fft: int = 512, hop: int = 256,
              seconds: float = 60.0, floor: float = 1e-12) -> np.ndarray:
    """Per FFT bin, power(kaiser_best audio) / power(soxr HQ audio) for the same white noise.

    Clipped to [floor, 1] above the passband and exactly 1 where the two agree within 0.1 %, so only
    the band the resamplers disagree on is touched.
    """
    rng = np.random.default_rng(1234)
    noise = rng.standard_normal(int(seconds * sr_in)).astype(np.float32) * 0.1
    ref = _frame_power(kaiser_best(noise, sr_in, sr_out).astype(np.float64), n_fft, hop)
    got = _frame_power(soxr_hq(noise, sr_in, sr_out).astype(np.float64), n_fft, hop)
    gains = np.clip(ref / np.maximum(got, 1e-30), floor, 1.0)
    gains[np.abs(gains - 1.0) < 1e-3] = 1.0
    return gains.astype(np.float32)
