"""The musicnn and VGG-style taggers of musicnn 0.1.0, re-built in PyTorch from their checkpoints.

Layer order everywhere is conv -> bias -> ReLU -> batch norm (eps 1e-3), as trained. Zero padding is
applied *after* the input batch norm, so the input BN must not be folded into the first convolutions.
Each network maps raw 16 kHz audio windows (B, 48128) to ``(tags, embedding)``.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .frontend import LogMel

BN_EPS = 1e-3
SAMPLE_RATE = 16000
FRAMES = 187
HOP = 256
N_FFT = 512
WINDOW = (FRAMES - 1) * HOP + N_FFT  # 48,128 samples
WINDOW_HOP = FRAMES * HOP  # 47,872 samples
# With bounded windows (the default), a musicnn model analyses at most this many 3-s windows of a long track,
# spread over it. Measured with the default set (bench/bench_windows.py style runs, 2026-12-05): 16 instead of 32
# for musicnn-msd and musicnn-jamendo changed no decision on 45 + 19 real tracks (Frets on Fire songs, Warzone
# 2100 and Singularity soundtracks, the shared clips) and made the default scan 23 % faster; the long-window
# models keep theirs (3 FCN windows instead of 4 changed 8 of 45, 5 AudioSet windows instead of 8 changed 2).
MAX_WINDOWS = 16
PAD = N_FFT // 2


def _bn(channels: int, dims: int) -> nn.Module:
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
    return cls(channels, eps=BN_EPS)


class _Loader:
    """Copies TF variables into torch parameters, checking shapes and that every variable is used."""

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        self.tensors = dict(tensors)
        self.used: set[str] = set()

    def take(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise KeyError(f"checkpoint has no variable {name!r}")
        self.used.add(name)
        return torch.from_numpy(np.ascontiguousarray(self.tensors[name]))

    @staticmethod
    def _assign(param: torch.Tensor, value: torch.Tensor, name: str) -> None:
        if tuple(param.shape) != tuple(value.shape):
            raise ValueError(f"variable {name!r}: checkpoint shape {tuple(value.shape)} != model shape {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(value)

    def conv2d(self, conv: nn.Conv2d, scope: str) -> None:
        self._assign(conv.weight, self.take(f"{scope}/kernel").permute(3, 2, 0, 1), scope)
        self._assign(conv.bias, self.take(f"{scope}/bias"), scope)

    def conv1d_from_2d(self, conv: nn.Conv1d, scope: str) -> None:
        # TF kernel [k_time, channels_in, 1, out] acting on a (time, channel) image = Conv1d [out, in, k].
        self._assign(conv.weight, self.take(f"{scope}/kernel")[:, :, 0, :].permute(2, 1, 0), scope)
        self._assign(conv.bias, self.take(f"{scope}/bias"), scope)

    def dense(self, lin: nn.Linear, scope: str, weight_transform=None) -> None:
        w = self.take(f"{scope}/kernel")
        if weight_transform is not None:
            w = weight_transform(w)
        self._assign(lin.weight, w.T, scope)
        self._assign(lin.bias, self.take(f"{scope}/bias"), scope)

    def bn(self, bn: nn.Module, scope: str) -> None:
        for attr, var in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                          ("running_var", "moving_variance")):
            self._assign(getattr(bn, attr), self.take(f"{scope}/{var}"), f"{scope}/{var}")

    def finish(self) -> None:
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            raise ValueError(f"checkpoint variables not used by the model: {unused}")


class SpectralTimbral(nn.Module):
    """musicnn's timbral branches (conv 7 x K over time x frequency, ReLU, BN, max over frequency), computed
    through a length-N DFT along frequency: the same numbers with about 2.5x fewer multiplications.

    A 'valid' correlation along an axis of length N equals the circular one for every output that does not
    wrap, so y[t, j] = IDFT(sum over taps of conj(W) X)[j] for j <= N - K. Per frequency bin, the sum over the
    seven time taps is a small matrix product; the inverse transform and the max over frequency follow.
    Because ReLU is monotone and BN is a per-channel affine map, max_j BN(ReLU(y_j + b)) is
    BN(ReLU(max_j y_j + b)) for channels whose BN scale is positive and BN(ReLU(min_j y_j + b)) otherwise,
    so the elementwise work happens after the reduction, on 1/59 of the values.
    """

    def __init__(self, convs: list[nn.Conv2d], bns: list[nn.Module], n_freq: int) -> None:
        super().__init__()
        n = n_freq
        bins = n // 2 + 1
        k = np.arange(bins)
        f = np.arange(n)
        ang = 2 * np.pi * np.outer(f, k) / n  # (n, bins)
        self.register_buffer("dft", torch.from_numpy(np.concatenate([np.cos(ang), -np.sin(ang)], 1).astype(np.float32)))
        self.bins, self.taps = bins, convs[0].kernel_size[0]
        self.bns = nn.ModuleList(bns)
        for b, (conv, bn) in enumerate(zip(convs, bns)):
            w = conv.weight.detach().double().numpy()[:, 0]  # (C, taps, K)
            c, taps, kw = w.shape
            # min_j y_j = -max_j(-y_j): channels whose BN scale is negative get negated kernels, so one
            # max-reduction serves every channel and the sign is restored afterwards.
            bn_scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
            sign = np.where(bn_scale >= 0, 1.0, -1.0)
            spec = np.fft.rfft(w * sign[:, None, None], n=n, axis=2)  # (C, taps, bins): W[c, dt, k]
            wr, wi = spec.real.transpose(2, 1, 0), spec.imag.transpose(2, 1, 0)  # (bins, taps, C)
            # inputs per bin: [Xr(t + dt) for dt] + [Xi(t + dt) for dt]; conj(W) X = (WrXr + WiXi) + i(WrXi - WiXr)
            j = np.arange(n - kw + 1)
            scale = np.full(bins, 2.0 / n)
            scale[0] = 1.0 / n
            if n % 2 == 0:
                scale[-1] = 1.0 / n
            ang_j = 2 * np.pi * np.outer(j, k) / n  # (J, bins)
            for name, value in (("w_re", np.concatenate([wr, wi], 1)), ("w_im", np.concatenate([-wi, wr], 1)),
                                ("inv_re", scale * np.cos(ang_j)), ("inv_im", -scale * np.sin(ang_j)),
                                ("sign", sign), ("bias", conv.bias.detach().numpy())):
                self.register_buffer(f"{name}{b}", torch.from_numpy(np.asarray(value, np.float32)))
        self.n_branches = len(convs)

    def forward(self, padded: torch.Tensor) -> list[torch.Tensor]:
        """padded: (B, 1, T + taps - 1, n) after the input BN and time padding -> [(B, C, T)] per branch."""
        batch, _, tp, _ = padded.shape
        t = tp - self.taps + 1
        spec = padded[:, 0] @ self.dft  # (B, Tp, 2*bins): [re | im]
        taps = torch.stack([spec[:, dt:dt + t] for dt in range(self.taps)], dim=2)  # (B, T, taps, 2*bins)
        u = taps.reshape(batch, t, self.taps, 2, self.bins).permute(4, 0, 1, 3, 2).reshape(self.bins, batch * t, 2 * self.taps)
        out = []
        for b in range(self.n_branches):
            p_re = torch.matmul(u, getattr(self, f"w_re{b}"))  # (bins, B*T, C)
            p_im = torch.matmul(u, getattr(self, f"w_im{b}"))
            channels = p_re.shape[-1]
            # inverse real DFT of every (t, c) spectrum at the J valid positions, then max over them
            y = torch.addmm(getattr(self, f"inv_re{b}") @ p_re.reshape(self.bins, -1),
                            getattr(self, f"inv_im{b}"), p_im.reshape(self.bins, -1))  # (J, B*T*C)
            y = y.amax(0).reshape(batch, t, channels) * getattr(self, f"sign{b}")
            y = F.relu(y + getattr(self, f"bias{b}")).transpose(1, 2)  # (B, C, T)
            out.append(self.bns[b](y.unsqueeze(-1)).squeeze(-1))  # the BatchNorm2d of the original layer
        return out


class Musicnn(nn.Module):
    """musicnn (Pons & Serra): musically motivated timbral/temporal front-end, residual mid-end, pooled back-end."""

    embedding_dim = 200

    def __init__(self, n_labels: int = 50, n_mels: int = 96, mid_filters: int = 64, units: int = 200) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, N_FFT, HOP, n_mels)
        self.in_bn = _bn(1, 2)
        timbral = 204
        self.timbral = nn.ModuleList([nn.Conv2d(1, timbral, (7, int(0.4 * n_mels))),
                                      nn.Conv2d(1, timbral, (7, int(0.7 * n_mels)))])
        self.timbral_bn = nn.ModuleList([_bn(timbral, 2), _bn(timbral, 2)])
        temporal = 51
        self.temporal_kernels = (128, 64, 32)
        self.temporal = nn.ModuleList([nn.Conv2d(1, temporal, (k, 1)) for k in self.temporal_kernels])
        self.temporal_bn = nn.ModuleList([_bn(temporal, 2) for _ in self.temporal_kernels])
        front = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList([nn.Conv1d(front, mid_filters, 7), nn.Conv1d(mid_filters, mid_filters, 7),
                                  nn.Conv1d(mid_filters, mid_filters, 7)])
        self.mid_bn = nn.ModuleList([_bn(mid_filters, 1) for _ in range(3)])
        pooled = 2 * (front + 3 * mid_filters)
        self.pool_bn = _bn(pooled, 1)
        self.dense = nn.Linear(pooled, units)
        self.dense_bn = _bn(units, 1)
        self.out = nn.Linear(units, n_labels)
        self.n_mels = n_mels
        self.spectral: SpectralTimbral | None = None
        self.pool_first = False

    def use_pool_first(self) -> "Musicnn":
        """Reduce each front-end branch over frequency before its ReLU and batch norm (call after loading).

        Every branch is conv -> ReLU -> BN -> max over frequency. ReLU is monotone and BN a per-channel affine
        map, so the max of BN(ReLU(z)) over frequency is BN(ReLU(max z)) for a positive BN scale and
        BN(ReLU(min z)) for a negative one; min z is -max(-z), so those channels get negated kernels and one
        max serves all. The same numbers, with ReLU and BN run on 1/59 to 1/96 of the values, which also
        leaves the convolutions' outputs to a single reduction (and lets a quantised convolution feed it
        directly).
        """
        for conv, bn in zip(list(self.timbral) + list(self.temporal), list(self.timbral_bn) + list(self.temporal_bn)):
            scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
            sign = torch.where(scale >= 0, 1.0, -1.0)
            with torch.no_grad():
                conv.weight.mul_(sign[:, None, None, None])
                conv.bias.mul_(sign)
            conv.register_buffer("pool_sign", sign)
        self.pool_first = True
        return self

    def _branch(self, conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_first:
            return bn(F.relu(conv(x))).amax(dim=3)
        y = conv(x).amax(dim=3) * conv.pool_sign[:, None]
        return bn(F.relu(y).unsqueeze(-1)).squeeze(-1)  # the layer's BatchNorm2d, on (B, C, T, 1)

    def use_spectral_timbral(self) -> "Musicnn":
        """Switch the timbral branches to the DFT formulation (call after loading weights)."""
        self.spectral = SpectralTimbral(list(self.timbral), list(self.timbral_bn), self.n_mels)
        return self

    def forward_logmel(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 187, n_mels) log-mel -> (sigmoid tags (B, L), penultimate embedding (B, units))."""
        x = self.in_bn(logmel.unsqueeze(1))  # (B, 1, T, F)
        padded = F.pad(x, (0, 0, 3, 3))
        if self.spectral is not None:
            branches = self.spectral(padded)
        else:
            branches = [self._branch(conv, bn, padded) for conv, bn in zip(self.timbral, self.timbral_bn)]
        for k, conv, bn in zip(self.temporal_kernels, self.temporal, self.temporal_bn):
            y = F.pad(x, (0, 0, (k - 1) // 2, k // 2))  # TF 'SAME' for an even kernel
            branches.append(self._branch(conv, bn, y))
        front = torch.cat(branches, dim=1)  # (B, 561, T)
        features = [front]
        h = front
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn)):
            y = bn(F.relu(conv(F.pad(h, (3, 3)))))
            h = y if i == 0 else y + h
            features.append(h)
        stacked = torch.cat(features, dim=1)  # (B, 753, T)
        pooled = torch.stack([stacked.amax(dim=2), stacked.mean(dim=2)], dim=2).flatten(1)  # interleaved max/mean
        z = self.pool_bn(pooled)
        penultimate = self.dense_bn(F.relu(self.dense(z)))
        return torch.sigmoid(self.out(penultimate)), penultimate

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_logmel(self.logmel(waveform))

    def load_tf(self, tensors: Mapping[str, np.ndarray]) -> "Musicnn":
        ld = _Loader(tensors)
        ld.bn(self.in_bn, "batch_normalization")
        convs = list(self.timbral) + list(self.temporal)
        bns = list(self.timbral_bn) + list(self.temporal_bn)
        for i, (conv, bn) in enumerate(zip(convs, bns)):
            ld.conv2d(conv, "conv2d" if i == 0 else f"conv2d_{i}")
            ld.bn(bn, f"batch_normalization_{i + 1}")
        for j, (conv, bn) in enumerate(zip(self.mid, self.mid_bn)):
            ld.conv1d_from_2d(conv, f"conv2d_{5 + j}")
            ld.bn(bn, f"batch_normalization_{6 + j}")
        ld.bn(self.pool_bn, "batch_normalization_9")
        ld.dense(self.dense, "dense")
        ld.bn(self.dense_bn, "batch_normalization_10")
        ld.dense(self.out, "dense_1")
        ld.finish()
        return self


class Vgg(nn.Module):
    """Five 3x3 conv blocks with max pooling; embedding = flattened pool5 (time x channels = 256).

    ``pools`` lists (kernel, stride) per block as (time, freq) pairs. musicnn 0.1.0's code uses
    pool1 = (4,1)/(2,2); the MSD_vgg checkpoint was trained with pool1 = (4,1)/(4,1) and pool2 = (1,4)/(1,4).
    """

    embedding_dim = 256
    SHIPPED_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))
    MSD_TRAINED_POOLS = (((4, 1), (4, 1)), ((1, 4), (1, 4)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, n_labels: int = 50, filters: int = 128, pools=SHIPPED_POOLS, n_mels: int = 96) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, N_FFT, HOP, n_mels)
        self.pools = tuple(pools)
        self.in_bn = _bn(1, 2)
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5)])
        self.bns = nn.ModuleList([_bn(filters, 2) for _ in range(5)])
        self.out = nn.Linear(2 * filters, n_labels)
        self.filters = filters

    def forward_logmel(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.in_bn(logmel.unsqueeze(1))
        for conv, bn, (kernel, stride) in zip(self.convs, self.bns, self.pools):
            x = F.max_pool2d(bn(F.relu(conv(x))), kernel, stride)
        pool5 = x.permute(0, 2, 3, 1).flatten(1)  # TF flattens NHWC: index = t * C + c
        return torch.sigmoid(self.out(pool5)), pool5

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_logmel(self.logmel(waveform))

    def load_tf(self, tensors: Mapping[str, np.ndarray]) -> "Vgg":
        ld = _Loader(tensors)
        ld.bn(self.in_bn, "batch_normalization")
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            ld.conv2d(conv, f"{i + 1}CNN")
            ld.bn(bn, f"batch_normalization_{i + 1}")
        ld.dense(self.out, "dense")
        ld.finish()
        return self
