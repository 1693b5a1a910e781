"""The seed architectures, each a torch module over raw 16 kHz audio with any number of named heads.

Every architecture computes its own spectrogram (or none: SampleCNN reads the waveform), reduces a window
to one embedding vector (the layer before the heads, stored by the runtime for similarity), and feeds that
to one linear head per output the task declares: ``softmax`` (one class, e.g. genre) or ``sigmoid``
(independent labels, e.g. mood). ``forward`` returns what the exported ONNX file returns (probabilities per
head, then the embedding, in card order); ``logits`` is what training needs.

Which network, and why it is here:
- ``mel-cnn``: four 3x3 conv blocks on a 96-band log-mel, global max+mean pooling. The plain baseline.
- ``multi-output``: 128x128 mel slices (about 2 s), conv blocks, a dense layer whose output is the
  embedding, and several heads at once (genre softmax with mood sigmoids).
- ``attention``: conv blocks along time, then attention pooling (a learned weight per frame) instead of a
  fixed pooling, so a short telling passage can dominate.
- ``slice-cnn``: 2.56 s slices; a song's label is the mean of its slices (the runtime's aggregation).
- ``samplecnn``: no spectrogram: strided 3-sample convolutions on 59,049 raw samples (3^10).
- ``lstm``: a two-layer LSTM over mel frames; mean of its outputs is the embedding.
- ``fcn-finetune``, ``crnn-finetune``, ``musicnn-finetune``: the ported published models (``exporter.sota``)
  with their pretrained weights, a new head per output, trained further.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..frontend import LogMel

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class HeadSpec:
    name: str
    kind: str  # softmax | sigmoid
    labels: tuple[str, ...]


class Tagger(nn.Module):
    """An encoder (window -> embedding) plus one linear head per output."""

    def __init__(self, encoder: nn.Module, embedding_dim: int, heads: tuple[HeadSpec, ...], window: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.specs = heads
        self.window = window
        self.embedding_dim = embedding_dim
        self.heads = nn.ModuleList([nn.Linear(embedding_dim, len(h.labels)) for h in heads])

    def logits(self, waveform: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        emb = self.encoder(waveform)
        return [head(emb) for head in self.heads], emb

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs, emb = self.logits(waveform)
        probs = [torch.softmax(z, dim=1) if spec.kind == "softmax" else torch.sigmoid(z)
                 for spec, z in zip(self.specs, outs)]
        return (*probs, emb)


def _block(cin: int, cout: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool))


class LogMelInput(nn.Module):
    """(B, N) -> (B, 1, mels, frames), log-compressed, scaled to roughly unit range."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.mel = LogMel(SAMPLE_RATE, 512, 256, n_mels, half_precision_round=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.bn(self.mel(waveform).transpose(1, 2).unsqueeze(1))


class MelCNN(nn.Module):
    def __init__(self, n_mels: int = 96, width: int = 64, embedding: int = 128) -> None:
        super().__init__()
        self.front = LogMelInput(n_mels)
        self.body = nn.Sequential(_block(1, width, (2, 2)), _block(width, width, (2, 2)),
                                  _block(width, 2 * width, (2, 2)), _block(2 * width, 2 * width, (2, 2)))
        self.fc = nn.Linear(4 * width, embedding)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.body(self.front(waveform)).flatten(2)
        return F.relu(self.fc(torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)))


class SliceCNN(nn.Module):
    """128x128 (or any) mel slices: conv blocks, then a dense layer on the flattened map."""

    def __init__(self, n_mels: int, window: int, width: int = 32, embedding: int = 128) -> None:
        super().__init__()
        self.front = LogMelInput(n_mels)
        self.body = nn.Sequential(_block(1, width, (2, 2)), _block(width, 2 * width, (2, 2)),
                                  _block(2 * width, 2 * width, (2, 2)), _block(2 * width, 4 * width, (4, 4)))
        with torch.no_grad():
            flat = self.body(self.front.eval()(torch.zeros(1, window))).numel()
        self.fc = nn.Linear(flat, embedding)
        self.drop = nn.Dropout(0.3)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.drop(self.body(self.front(waveform)).flatten(1))))


class AttentionCNN(nn.Module):
    def __init__(self, n_mels: int = 96, width: int = 64, embedding: int = 128) -> None:
        super().__init__()
        self.front = LogMelInput(n_mels)
        self.body = nn.Sequential(_block(1, width, (2, 1)), _block(width, width, (2, 2)),
                                  _block(width, 2 * width, (2, 2)), _block(2 * width, 2 * width, (3, 1)))
        self.score = nn.Linear(2 * width * (n_mels // 24), 1)
        self.fc = nn.Linear(2 * width * (n_mels // 24), embedding)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.body(self.front(waveform))  # (B, C, F', T')
        seq = x.flatten(1, 2).transpose(1, 2)  # (B, T', C*F')
        weights = torch.softmax(self.score(seq), dim=1)
        return F.relu(self.fc((weights * seq).sum(dim=1)))


class SampleCNN(nn.Module):
    """Raw waveform, 3^10 samples: a strided 3-tap convolution, then nine conv-3 + max-pool-3 blocks."""

    def __init__(self, width: int = 64, embedding: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, width, 3, stride=3), nn.BatchNorm1d(width), nn.ReLU()]
        cin = width
        for i in range(9):
            cout = width if i < 3 else 2 * width
            layers += [nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU(), nn.MaxPool1d(3)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, embedding)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.body(waveform.unsqueeze(1) * 10.0)  # (B, C, 1)
        return F.relu(self.fc(x.flatten(1)))


class LSTMTagger(nn.Module):
    def __init__(self, n_mels: int = 96, hidden: int = 128) -> None:
        super().__init__()
        self.mel = LogMel(SAMPLE_RATE, 512, 256, n_mels, half_precision_round=False)
        self.norm = nn.LayerNorm(n_mels)
        self.lstm = nn.LSTM(n_mels, hidden, num_layers=2, batch_first=True)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.norm(self.mel(waveform)))
        return out.mean(dim=1)


class Pretrained(nn.Module):
    """A ported published model as an encoder: its embedding, its own output layer left unused."""

    def __init__(self, arch: str, dataset: str) -> None:
        super().__init__()
        from ..sota_zoo import build_sota

        self.base, _ = build_sota(arch, dataset)
        with torch.no_grad():  # subnormal weights make every multiply slow (see export.flush_denormals)
            for p in self.base.parameters():
                p[(p != 0) & (p.abs() < torch.finfo(torch.float32).tiny)] = 0.0
        self.base.train()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.base(waveform)[1]


@dataclass(frozen=True)
class Arch:
    window: int  # samples at 16 kHz
    build: Callable[[], tuple[nn.Module, int]]  # -> (encoder, embedding dim)
    about: str
    pretrained: bool = False


def _pretrained(arch: str, dim: int) -> Callable[[], tuple[nn.Module, int]]:
    return lambda: (Pretrained(arch, "jamendo"), dim)


ARCHS: dict[str, Arch] = {
    "mel-cnn": Arch(48_000, lambda: (MelCNN(), 128), "mel CNN, 3 s windows"),
    "multi-output": Arch(512 + 127 * 256, lambda: (SliceCNN(128, 512 + 127 * 256), 128),
                         "128x128 mel slices, genre softmax plus mood sigmoids, FC layer as embedding"),
    "attention": Arch(48_000, lambda: (AttentionCNN(), 128), "CNN with attention pooling over time, 3 s"),
    "slice-cnn": Arch(40_960, lambda: (SliceCNN(96, 40_960), 128), "2.56 s slices, song = mean of its slices"),
    "samplecnn": Arch(59_049, lambda: (SampleCNN(), 128), "SampleCNN on the raw waveform, 3^10 samples"),
    "lstm": Arch(48_000, lambda: (LSTMTagger(), 128), "two-layer LSTM over mel frames, 3 s"),
    "fcn-finetune": Arch(464_000, _pretrained("fcn", 64), "FCN (MTG-Jamendo weights) fine-tuned, 29 s", True),
    "crnn-finetune": Arch(464_000, _pretrained("crnn", 32), "CRNN (MTG-Jamendo weights) fine-tuned, 29 s", True),
    "musicnn-finetune": Arch(48_000, _pretrained("musicnn", 200), "Musicnn (MTG-Jamendo weights) fine-tuned, 3 s",
                             True),
}


def build(name: str, heads: tuple[HeadSpec, ...]) -> Tagger:
    arch = ARCHS[name]
    encoder, dim = arch.build()
    return Tagger(encoder, dim, heads, arch.window)
