"""The four published musicnn 0.1.0 taggers, declared as data: checkpoint, labels, architecture, card."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .export import ModelCard
from .musicnn import MAX_WINDOWS, PAD, SAMPLE_RATE, WINDOW, WINDOW_HOP, Musicnn, Vgg
from .weights import WeightsArchive


@dataclass(frozen=True)
class Published:
    variant: str  # folder in the wheel
    label_set: str  # MTT or MSD
    model_id: str
    build: Callable[[int], nn.Module]
    roc_auc: float
    dataset: str
    note: str = ""


MODELS: dict[str, Published] = {p.model_id: p for p in (
    Published("MSD_musicnn", "MSD", "musicnn-msd", lambda n: Musicnn(n), 0.8802, "Million Song Dataset (Last.fm tags)"),
    Published("MTT_musicnn", "MTT", "musicnn-mtt", lambda n: Musicnn(n), 0.9067, "MagnaTagATune"),
    Published("MSD_vgg", "MSD", "vgg-msd", lambda n: Vgg(n, pools=Vgg.MSD_TRAINED_POOLS), 0.8768,
              "Million Song Dataset (Last.fm tags)",
              "pooling as the checkpoint was trained (pool1 4x1/4x1, pool2 1x4/1x4), not as musicnn 0.1.0 runs it"),
    Published("MTT_vgg", "MTT", "vgg-mtt", lambda n: Vgg(n), 0.9030, "MagnaTagATune"),
)}

EXPORT_VERSION = "0.1.0+tagger.1"
DATA_DIR = Path(__file__).parent / "data"


def build_published(model_id: str, archive: WeightsArchive, *, spectral: bool = False) -> tuple[nn.Module, ModelCard]:
    """The torch module with trained weights loaded, and its card.

    musicnn's timbral convolutions are exported as plain convolutions. ``spectral=True`` gives their DFT form
    (``SpectralTimbral``: the same outputs within 1e-6 with 2.5x fewer multiplications), which was 15 % faster
    on an AVX2-only CPU but is 1.45x slower on the AVX-512 machine of bench/, where onnxruntime's blocked convolutions
    beat the DFT's memory-bound matrix products: 13.4 ms against 19.4 ms per window (bench/bench_original.py).
    """
    spec = MODELS[model_id]
    ck = archive.checkpoint(spec.variant, spec.label_set)
    module = spec.build(len(ck.labels)).load_tf(ck.tensors).eval()
    if isinstance(module, Musicnn):
        module.use_spectral_timbral() if spectral else module.use_pool_first()
    kind = "musicnn" if isinstance(module, Musicnn) else "VGG-style"
    emb = ("penultimate dense layer (200 units, after ReLU and batch norm)" if isinstance(module, Musicnn)
           else "flattened pool5 (2 time steps x 128 channels, time-major)")
    from .sota import labels_for

    ref_labels, groups = labels_for("msd" if spec.label_set == "MSD" else "mtat")  # the same label sets
    card = ModelCard(
        groups=groups if list(ref_labels) == list(ck.labels) else {},
        id=model_id, version=EXPORT_VERSION, labels=ck.labels, sample_rate=SAMPLE_RATE, window=WINDOW,
        hop=WINDOW_HOP, embedding_dim=module.embedding_dim, pad_start=PAD, pad_end=PAD,
        short_input="repeat", partial_tail="drop", aggregate="mean",
        description=(f"{kind} music tagger trained on {spec.dataset} by the Music Technology Group (UPF), "
                     f"weights from musicnn 0.1.0 ({spec.variant}). Input: 3-s windows of 16 kHz mono audio "
                     f"with the log-mel front-end inside the model. {spec.note}").strip(),
        embedding_output=emb, source=ck.source, licence="ISC", licence_text=ck.licence,
        metrics={"roc_auc": spec.roc_auc, "dataset": spec.dataset},
        max_windows=MAX_WINDOWS if isinstance(module, Musicnn) else 0,
    )
    return module, card


def verification_audio(sample_rate: int = SAMPLE_RATE) -> list:
    """Real music windows for the export check (two CC-licensed clips shipped with the exporter)."""
    from tagger.analysis.decode import decode

    return [decode(p, sample_rate).samples for p in sorted(DATA_DIR.glob("*.ogg"))]
