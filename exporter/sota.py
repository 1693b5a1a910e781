"""FCN, CRNN and the Musicnn variant of the MTG "state of the art" tagging comparison, re-built in PyTorch.

Written from the facts in the port notes (front-end, layer tables, key names, label orders), not from
the original code. All three take raw 16 kHz mono windows and compute their own spectrogram:

* STFT n_fft 512, hop 256, periodic Hann, centred with *reflect* padding (done inside the graph, so the
  runtime feeds plain windows), power 2, the 96-band HTK filterbank stored in the checkpoint,
  10*log10(max(x, 1e-10)) with no top-dB clip, then a scalar batch norm.
* every block is conv -> batch norm (eps 1e-5) -> ReLU -> pool, floor pooling.

Each module maps ``waveform`` (B, window) to ``(tags, embedding)`` like every exported tagger.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
LONG_WINDOW = 464_000  # 29 s: FCN and CRNN
SHORT_WINDOW = 48_000  # 3 s: Musicnn


class SpecFrontEnd(nn.Module):
    """(B, N) audio -> (B, 1, 96, 1 + N // 256) batch-normalised dB mel power."""

    def __init__(self, window: torch.Tensor, filterbank: torch.Tensor) -> None:
        super().__init__()
        self.trained_fb = filterbank.float().clone()
        n_bins = N_FFT // 2 + 1
        k = np.arange(n_bins)[:, None]
        t = np.arange(N_FFT)[None, :]
        angle = 2 * np.pi * k * t / N_FFT
        win = window.double().numpy()[None, :]
        basis = np.concatenate([np.cos(angle) * win, -np.sin(angle) * win]).astype(np.float32)
        self.register_buffer("dft", torch.from_numpy(basis).unsqueeze(1), persistent=False)
        self.register_buffer("fb", filterbank.float().clone(), persistent=False)  # (257, 96)
        self.n_bins = n_bins
        self.spec_bn = nn.BatchNorm2d(1)

    def correct_for(self, bin_gain: np.ndarray | None) -> None:
        """Scale each FFT bin's power before the mel filters (see ``resampling.bin_gains``); None undoes it."""
        fb = self.trained_fb if bin_gain is None else self.trained_fb * torch.from_numpy(bin_gain)[:, None]
        self.fb = fb.contiguous()

    def db(self, waveform: torch.Tensor) -> torch.Tensor:
        """dB mel power, (B, 96, T), before the batch norm."""
        padded = F.pad(waveform.unsqueeze(1), (N_FFT // 2, N_FFT // 2), mode="reflect").squeeze(1)
        # A strided convolution with a windowed-DFT basis: in onnxruntime it is both faster and closer to
        # the original torch.stft than ONNX's own STFT operator (measured: tags 1.4e-4 against 2.1e-4).
        spec = F.conv1d(padded.unsqueeze(1), self.dft, stride=HOP)  # (B, 2*257, T)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins:]
        power = (re * re + im * im).transpose(1, 2)
        mel = (power @ self.fb).transpose(1, 2)  # (B, 96, T)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.spec_bn(self.db(waveform).unsqueeze(1))


class Block2d(nn.Module):
    def __init__(self, cin: int, cout: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), self.pool)


class Block1d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _FromCheckpoint(nn.Module):
    """Shared loading: the two front-end tensors go to the front-end, the rest must match exactly."""

    front: SpecFrontEnd

    def load_pth(self, state: Mapping[str, torch.Tensor]) -> "_FromCheckpoint":
        state = dict(state)
        window = state.pop("spec.spectrogram.window")
        fb = state.pop("spec.mel_scale.fb")
        self.front = SpecFrontEnd(window, fb)
        renamed = {(f"front.{k}" if k.startswith("spec_bn.") else k): v for k, v in state.items()}
        missing, unexpected = self.load_state_dict(renamed, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit: missing {missing}, unexpected {unexpected}")
        return self.eval()

    window: int

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """The front end's (B, 1, 96, frames) with the shape stated as constants: onnxruntime lays out
        convolutions and max-pools in its blocked (NCHWc) format only where it knows every dimension but the
        batch, and through the front end's padding it cannot infer them. With them stated, all five FCN pools
        stay blocked instead of converting layouts around each one: 1.4x faster, the same numbers."""
        return self.front(waveform).reshape(-1, 1, N_MELS, 1 + self.window // HOP)


class FCN(_FromCheckpoint):
    """Five 3x3 conv blocks down to (64, 1, 1): that 64-vector is the embedding."""

    window = LONG_WINDOW
    embedding_dim = 64

    def __init__(self, n_labels: int = 50) -> None:
        super().__init__()
        self.layer1 = Block2d(1, 64, (2, 4))
        self.layer2 = Block2d(64, 128, (2, 4))
        self.layer3 = Block2d(128, 128, (2, 4))
        self.layer4 = Block2d(128, 128, (3, 5))
        self.layer5 = Block2d(128, 64, (4, 4))
        self.dense = nn.Linear(64, n_labels)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.spectrogram(waveform)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(x)
        emb = x.flatten(1)
        return torch.sigmoid(self.dense(emb)), emb


class CRNN(_FromCheckpoint):
    """Four conv blocks, then a 2-layer GRU over the 18 remaining time steps; its last state is the embedding."""

    window = LONG_WINDOW
    embedding_dim = 32

    def __init__(self, n_labels: int = 50) -> None:
        super().__init__()
        self.layer1 = Block2d(1, 64, (2, 2))
        self.layer2 = Block2d(64, 128, (3, 3))
        self.layer3 = Block2d(128, 128, (4, 4))
        self.layer4 = Block2d(128, 128, (4, 4))
        self.layer5 = nn.GRU(128, 32, num_layers=2, batch_first=True)
        self.dense = nn.Linear(32, n_labels)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.spectrogram(waveform)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        seq = x.squeeze(2).transpose(1, 2)  # (B, T, 128)
        out, _ = self.layer5(seq)
        emb = out[:, -1]
        return torch.sigmoid(self.dense(emb)), emb


class _Vertical(nn.Module):
    """Timbral branch: a filter spanning ``k_freq`` mel bands, max over the bands that remain."""

    def __init__(self, k_freq: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 204, (k_freq, 7), padding=(0, 3))
        self.bn = nn.BatchNorm2d(204)
        self.folded = False

    def fold(self) -> None:
        """Fold the batch norm into the convolution and reduce before the ReLU (max of ReLU is ReLU of max),
        with the time padding made explicit: the same numbers, and a ``Conv -> ReduceMax`` pair that
        ``exporter.quantize`` can run in int8."""
        scale = (self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)).detach()
        with torch.no_grad():
            self.conv.weight.mul_(scale[:, None, None, None])
            self.conv.bias.copy_((self.conv.bias - self.bn.running_mean) * scale + self.bn.bias)
        self.conv.padding = (0, 0)
        self.folded = True

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return F.relu(self.conv(F.pad(spec, (3, 3))).amax(dim=2))
        return F.relu(self.bn(self.conv(spec))).amax(dim=2)


class _Horizontal(nn.Module):
    """Temporal branch: mean over all bands first, then an odd 1-D kernel."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 51, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm1d(51)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(spec.mean(dim=2))))


class MusicnnSota(_FromCheckpoint):
    """Musicnn as trained in the comparison (mid-end 64, dense 200): 3-s windows."""

    window = SHORT_WINDOW
    embedding_dim = 200

    def __init__(self, n_labels: int = 50) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Vertical(int(0.7 * N_MELS)), _Vertical(int(0.4 * N_MELS)),
                                     _Horizontal(129), _Horizontal(65), _Horizontal(33)])
        self.layer1 = Block1d(561, 64)
        self.layer2 = Block1d(64, 64)
        self.layer3 = Block1d(64, 64)
        self.dense1 = nn.Linear(1506, 200)
        self.bn = nn.BatchNorm1d(200)
        self.dense2 = nn.Linear(200, n_labels)

    def fold_front(self) -> "MusicnnSota":
        """Fold the timbral branches for export (see ``_Vertical.fold``); call after loading weights."""
        for branch in self.layers:
            if isinstance(branch, _Vertical):
                branch.fold()
        return self

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spectrogram(waveform)
        front = torch.cat([branch(spec) for branch in self.layers], dim=1)  # (B, 561, T)
        r1 = self.layer1(front)
        r2 = self.layer2(r1) + r1
        r3 = self.layer3(r2) + r2
        feats = torch.cat([front, r1, r2, r3], dim=1)  # (B, 753, T)
        pooled = torch.cat([feats.amax(dim=2), feats.mean(dim=2)], dim=1)
        emb = F.relu(self.bn(self.dense1(pooled)))
        return torch.sigmoid(self.dense2(emb)), emb


ARCHITECTURES: dict[str, type[_FromCheckpoint]] = {"fcn": FCN, "crnn": CRNN, "musicnn": MusicnnSota}

MTAT_LABELS = (
    "guitar|classical|slow|techno|strings|drums|electronic|rock|fast|piano|ambient|beat|violin|vocal|synth|female|"
    "indian|opera|male|singing|vocals|no vocals|harpsichord|loud|quiet|flute|woman|male vocal|no vocal|pop|soft|sitar|"
    "solo|man|classic|choir|voice|new age|dance|male voice|female vocal|beats|harp|cello|no voice|weird|country|"
    "metal|female voice|choral")
MSD_LABELS = (
    "rock|pop|alternative|indie|electronic|female vocalists|dance|00s|alternative rock|jazz|beautiful|metal|chillout|"
    "male vocalists|classic rock|soul|indie rock|Mellow|electronica|80s|folk|90s|chill|instrumental|punk|oldies|"
    "blues|hard rock|ambient|acoustic|experimental|female vocalist|guitar|Hip-Hop|70s|party|country|easy listening|"
    "sexy|catchy|funk|electro|heavy metal|Progressive rock|60s|rnb|indie pop|sad|House|happy")
JAMENDO_TAGS = (
    "genre---alternative genre---ambient genre---atmospheric genre---chillout genre---classical genre---dance "
    "genre---downtempo genre---easylistening genre---electronic genre---experimental genre---folk genre---funk "
    "genre---hiphop genre---house genre---indie genre---instrumentalpop genre---jazz genre---lounge genre---metal "
    "genre---newage genre---orchestral genre---pop genre---popfolk genre---poprock genre---reggae genre---rock "
    "genre---soundtrack genre---techno genre---trance genre---triphop genre---world instrument---acousticguitar "
    "instrument---bass instrument---computer instrument---drummachine instrument---drums instrument---electricguitar "
    "instrument---electricpiano instrument---guitar instrument---keyboard instrument---piano instrument---strings "
    "instrument---synthesizer instrument---violin instrument---voice mood/theme---emotional mood/theme---energetic "
    "mood/theme---film mood/theme---happy mood/theme---relaxing")


def _jamendo() -> tuple[list[str], dict[str, str]]:
    """Jamendo outputs are in alphabetical order of the prefixed tags; the prefix is the label's group."""
    tags = sorted(JAMENDO_TAGS.split())
    labels, groups = [], {}
    for tag in tags:
        prefix, _, name = tag.partition("---")
        labels.append(name)
        groups[name] = {"genre": "genre", "instrument": "instrument", "mood/theme": "mood"}[prefix]
    return labels, groups


MTAT_GROUPS = {
    "genre": "classical|techno|electronic|rock|ambient|indian|opera|pop|classic|new age|dance|country|metal|choral",
    "instrument": "guitar|strings|drums|piano|beat|violin|synth|harpsichord|flute|sitar|solo|harp|cello|beats",
    "vocals": "vocal|female|male|singing|vocals|no vocals|woman|male vocal|no vocal|man|choir|voice|male voice|"
              "female vocal|no voice|female voice",
    "mood": "slow|fast|loud|quiet|soft|weird",
}
MSD_GROUPS = {
    "genre": ["rock", "pop", "alternative", "indie", "electronic", "dance", "alternative rock", "jazz", "metal",
              "classic rock", "soul", "indie rock", "electronica", "folk", "punk", "blues", "hard rock", "ambient",
              "experimental", "Hip-Hop", "country", "easy listening", "funk", "electro", "heavy metal",
              "Progressive rock", "rnb", "indie pop", "House"],
    "mood": ["beautiful", "chillout", "Mellow", "chill", "party", "sexy", "catchy", "sad", "happy"],
    "era": ["00s", "80s", "90s", "70s", "60s", "oldies"],
    "vocals": ["female vocalists", "male vocalists", "female vocalist", "instrumental"],
    "instrument": ["guitar", "acoustic"],
}


def labels_for(dataset: str) -> tuple[list[str], dict[str, str]]:
    """Output order and each label's group, per training set."""
    if dataset == "jamendo":
        return _jamendo()
    if dataset == "mtat":
        labels = MTAT_LABELS.split("|")
        groups = {lab: g for g, names in MTAT_GROUPS.items() for lab in names.split("|")}
        return labels, {lab: groups[lab] for lab in labels}
    if dataset == "msd":
        labels = MSD_LABELS.split("|")
        groups = {lab: g for g, names in MSD_GROUPS.items() for lab in names}
        return labels, {lab: groups[lab] for lab in labels}
    raise ValueError(f"unknown dataset {dataset!r} (jamendo, msd, mtat)")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The legacy (pre-zip) pickle with CUDA-tagged storages, read safely onto the CPU."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad pickle
        raise ValueError(f"{path}: not a readable PyTorch state_dict ({exc})") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state_dict mapping, got {type(state).__name__}")
    return dict(state)


def build(arch: str, dataset: str, weights: Path) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} ({', '.join(ARCHITECTURES)})")
    module = ARCHITECTURES[arch](len(labels_for(dataset)[0]))
    return module.load_pth(load_state(weights))
