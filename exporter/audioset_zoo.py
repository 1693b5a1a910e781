"""The AudioSet tagger (EfficientAT ``mn04_as``) declared as data: weights, labels, groups and card."""
from __future__ import annotations

import csv
from pathlib import Path

from torch import nn

from tagger.models.card import Card, Output

from . import audioset
from .weights import sha256_file

WEIGHTS_DIR = Path(__file__).parent / "audioset_weights"
WEIGHTS = WEIGHTS_DIR / "mn04_as_mAP_432.pt"
LABELS_CSV = WEIGHTS_DIR / "class_labels_indices.csv"
SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
UPSTREAM_COMMIT = "a425fdce"
EXPORT_REVISION = "tagger.1"
MODEL_ID = "mn04-audioset"
# With bounded windows (the default), 8 windows of 10 s spread over a track: 80 s heard, at a quarter of the cost
# of 32 (5 windows changed 2 of 45 real tracks' decisions against 8, 2026-12-05).
MAX_WINDOWS = 8

# Which AudioSet classes (rows of class_labels_indices.csv) belong to which of the card's groups, after the
# AudioSet ontology: the runtime lets a label vote only for fields of its group (genre; mood; instrument,
# vocals for descriptors). "Soundtrack music" and "Dance music" are music roles in the ontology but what
# libraries call genres; Beatboxing, Vocal music and A capella sit under genres but describe voices.
GROUP_ROWS: dict[str, tuple[range | tuple[int, ...], ...]] = {
    "speech": (range(0, 8),),
    "vocals": (range(27, 38), (218, 254, 255)),
    "instrument": (range(138, 216),),
    "genre": (tuple(i for i in range(216, 266) if i not in (218, 254, 255)), (270, 274)),
    "role": ((266, 267, 268, 269, 271, 272, 273, 275),),
    "mood": (range(276, 283),),
    "music": ((137,),),
}


def class_labels() -> list[str]:
    """The 527 display names, in logit order."""
    with open(LABELS_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if [int(r["index"]) for r in rows] != list(range(audioset.N_CLASSES)):
        raise ValueError(f"{LABELS_CSV}: expected rows 0..{audioset.N_CLASSES - 1} in order")
    return [r["display_name"] for r in rows]


def label_groups(labels: list[str]) -> dict[str, str]:
    return {labels[i]: group for group, spans in GROUP_ROWS.items() for span in spans for i in span}


def licence_text() -> str:
    return ((WEIGHTS_DIR / "LICENSE.EfficientAT.txt").read_text().strip() + "\n\n"
            "AudioSet class labels (the label names of this model) (c) Google LLC, from AudioSet, "
            "https://research.google.com/audioset/ : the dataset is licensed under CC BY 4.0, the ontology the "
            "display names come from under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).")


def build_audioset(weights: Path | None = None) -> tuple[nn.Module, Card]:
    """The torch module with the released weights loaded, and its card. A file that is not the published
    checkpoint is refused (ValueError naming it)."""
    path = Path(weights) if weights else WEIGHTS
    if not path.is_file():
        raise ValueError(f"{path}: weights file not found")
    digest = sha256_file(path)
    if digest != SHA256:
        raise ValueError(f"{path}: sha256 {digest[:16]}... is not the published mn04_as checkpoint ({SHA256[:16]}...)")
    module = audioset.MobileNetAudioSet().load_checkpoint(audioset.load_state(path))
    labels = class_labels()
    card = Card(
        id=MODEL_ID, version=f"{UPSTREAM_COMMIT}+{EXPORT_REVISION}", sample_rate=audioset.SAMPLE_RATE,
        window=audioset.WINDOW, hop=audioset.WINDOW,
        outputs=(Output("tags", "sigmoid", tuple(labels), label_groups(labels),
                        meaning="sigmoid probability per AudioSet class, independent (multi-label)"),
                 Output("embedding", "embedding", dim=audioset.EMBEDDING_DIM,
                        meaning="global mean of the last feature map (384), the vector the classifier reads")),
        short_input="zeros", partial_tail="end", resampler="soxr-hq", max_windows=MAX_WINDOWS,
        description=("EfficientAT mn04_as (MobileNetV3, width 0.4) by Florian Schmid et al., trained on AudioSet "
                     "(2 M clips, 527 classes: 50 music genres, 7 moods, instruments, singing, speech) with "
                     "knowledge distillation from PaSST. Input: raw 32 kHz mono, 10-s windows; the normalised "
                     "log-mel front end is inside the model."),
        licence="MIT (weights); AudioSet labels CC BY 4.0 / CC BY-SA 4.0", licence_text=licence_text(),
        source={"repository": "github.com/fschmid56/EfficientAT", "commit": UPSTREAM_COMMIT,
                "weights_sha256": SHA256, "file": path.name},
        metrics={"mAP": 0.432, "dataset": "AudioSet evaluation set", "source": "upstream model table"},
    )
    return module, card.validate()
