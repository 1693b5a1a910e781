"""Log-mel front-end as a torch module, so exported models take raw audio.

It reproduces librosa's ``melspectrogram`` (Slaney mel scale and area normalisation, periodic Hann,
power 2) followed by musicnn's float16 round trip and ``log10(10000 x + 1)`` in float32. The STFT is a
strided convolution with a fixed windowed-DFT basis: no centring happens inside the model, the caller
supplies the 256 leading zeros that a centred STFT would add.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    mel = f / f_sp
    high = f >= min_log_hz
    return np.where(high, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft//2+1), Slaney scale, each scaled by 2/(f_hi - f_lo)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """(batch, samples) float32 -> (batch, frames, n_mels) log-compressed mel power."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop: int = 256, n_mels: int = 96,
                 half_precision_round: bool = True) -> None:
        super().__init__()
        self.hop = hop
        self.half_precision_round = half_precision_round
        n_bins = n_fft // 2 + 1
        window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
        k = np.arange(n_bins)[:, None]
        t = np.arange(n_fft)[None, :]
        angle = 2 * np.pi * k * t / n_fft
        basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])  # (2*n_bins, n_fft)
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32)).unsqueeze(1), persistent=False)
        fb = slaney_mel_filterbank(sample_rate, n_fft, n_mels)
        self.register_buffer("mel", torch.from_numpy(fb.T.copy()), persistent=False)  # (n_bins, n_mels)
        self.n_bins = n_bins

    def power_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(waveform.unsqueeze(1), self.dft, stride=self.hop)  # (B, 2*bins, T)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins:]
        power = (re * re + im * im).transpose(1, 2)  # (B, T, bins)
        return power @ self.mel

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.power_mel(waveform)
        if self.half_precision_round:
            mel = mel.half().float()
        return torch.log10(10000.0 * mel + 1.0)
