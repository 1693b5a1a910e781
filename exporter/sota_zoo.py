"""The eight comparison checkpoints, declared as data: weights, labels, windows and card for each."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from exporter.errors import ExporterError
from tagger.models.card import Card, Output

from . import sota
from .musicnn import MAX_WINDOWS as MUSICNN_MAX_WINDOWS
from .resampling import bin_gains
from .weights import sha256_file

WEIGHTS_DIR = Path(__file__).parent / "sota_weights"
LICENCE_TEXT = (WEIGHTS_DIR / "README.md").read_text().split("```")[1].strip() if (WEIGHTS_DIR / "README.md").is_file() else ""
EXPORT_REVISION = "tagger.1"


@dataclass(frozen=True)
class Checkpoint:
    arch: str
    dataset: str
    sha256: str
    commit: str
    roc_auc: float
    pr_auc: float

    @property
    def model_id(self) -> str:
        return f"{self.arch}-{self.dataset}"

    @property
    def default_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.dataset}-{self.arch}.pth"


CHECKPOINTS: dict[tuple[str, str], Checkpoint] = {(c.arch, c.dataset): c for c in (
    Checkpoint("fcn", "jamendo", "7bce08a66dbc70d096b0a330f44b4cacd9aa25519b83489fbb98f2164a194e2b", "ffcd1f90", .8255, .2801),
    Checkpoint("crnn", "jamendo", "0a558989c0793f488cb677d188464c91f47c007f7c70473230e55537ca598215", "ffcd1f90", .7978, .2358),
    Checkpoint("musicnn", "jamendo", "66280f4859376377c47f64313c7ac889a3201fdb06a01bf6e94ac6e619081bb5", "ffcd1f90", .8226, .2713),
    Checkpoint("fcn", "msd", "6012aa7eecf864a8081faedca56af054521e8dfb9c5c98659a3dd5d3e1e66f21", "ffcd1f90", .8744, .2970),
    Checkpoint("crnn", "msd", "ebb99855ed0c83f38845db9cfb383dd6fc70938bc58701dcb66e18af9ee7fbea", "ffcd1f90", .8499, .2469),
    Checkpoint("fcn", "mtat", "e89d751202d38c3ae69855782bc27010f87051958dbec64f5aa762364dbac271", "1f4d2826", .9005, .4295),
    Checkpoint("crnn", "mtat", "cd22fc70cafd06f8f2bfc7dd795abccb1f4b50d5b09094c39ad100baf87475a3", "1f4d2826", .8722, .3625),
    Checkpoint("musicnn", "mtat", "690ace3bb5d49d90dd38fe3ec05a1185350b3bc3742bd7ee941f56b649b2c893", "1f4d2826", .9106, .4493),
)}

DATASETS = {"jamendo": "MTG-Jamendo (top-50: 31 genres, 14 instruments, 5 moods/themes)",
            "msd": "Million Song Dataset (top-50 Last.fm tags)",
            "mtat": "MagnaTagATune (top-50 tags)"}
ARCH_NAMES = {"fcn": "FCN (Choi et al. 2016), 29-s windows", "crnn": "CRNN (Choi et al. 2017), 29-s windows",
              "musicnn": "Musicnn (Pons et al. 2018, the comparison's variant), 3-s windows"}
EMBEDDINGS = {"fcn": "layer5 output after its max-pool, flattened (64)", "crnn": "last top-layer GRU state (32)",
              "musicnn": "ReLU(BN(dense1)) before the output layer (200)"}


class WeightsMismatch(ExporterError):
    """The weights file is not the published checkpoint it claims to be."""


def build_sota(arch: str, dataset: str, weights: Path | None = None, *,
               correct_resampler: bool = True) -> tuple[nn.Module, Card]:
    """The torch module with weights loaded, and its card.

    ``correct_resampler`` folds the kaiser_best / soxr-HQ power ratio into the filterbank, so that the
    runtime's soxr audio reaches the network as the training resampler would have shaped it.
    """
    try:
        ck = CHECKPOINTS[(arch, dataset)]
    except KeyError:
        raise ValueError(f"no published {arch} checkpoint for {dataset} "
                         f"(have: {', '.join(f'{a}/{d}' for a, d in CHECKPOINTS)})") from None
    path = Path(weights) if weights else ck.default_path
    if not path.is_file():
        raise WeightsMismatch(f"{path}: weights file not found")
    digest = sha256_file(path)
    if digest != ck.sha256:
        raise WeightsMismatch(f"{path}: sha256 {digest[:16]}... is not the published {ck.model_id} checkpoint "
                              f"({ck.sha256[:16]}...)")
    module = sota.build(arch, dataset, path)
    if correct_resampler:
        module.front.correct_for(bin_gains())
    if isinstance(module, sota.MusicnnSota):
        module.fold_front()
    labels, groups = sota.labels_for(dataset)
    window = module.window
    tail = "end" if window > 100_000 else "drop"
    card = Card(
        id=ck.model_id, version=f"{ck.commit}+{EXPORT_REVISION}" + ("" if correct_resampler else ".kaiser"),
        sample_rate=sota.SAMPLE_RATE, window=window, hop=window,
        outputs=(Output("tags", "sigmoid", tuple(labels), groups, meaning="sigmoid probability per label, independent"),
                 Output("embedding", "embedding", dim=module.embedding_dim, meaning=EMBEDDINGS[arch])),
        short_input="repeat", partial_tail=tail, resampler="soxr-hq",
        max_windows=MUSICNN_MAX_WINDOWS if isinstance(module, sota.MusicnnSota) else 0,
        description=(f"{ARCH_NAMES[arch]} trained on {DATASETS[dataset]} by Minz Won et al. (MTG, UPF), "
                     "from sota-music-tagging-models. Input: raw 16 kHz mono; the dB mel front-end is inside the "
                     "model" + (", with a fixed per-bin correction so soxr-HQ audio matches the kaiser_best "
                                "resampling it was trained on." if correct_resampler else ".")),
        licence="MIT", licence_text=LICENCE_TEXT,
        source={"repository": "github.com/minzwon/sota-music-tagging-models", "commit": ck.commit,
                "weights_sha256": ck.sha256, "file": re.sub(r"^.*/", "", str(path))},
        metrics={"roc_auc": ck.roc_auc, "pr_auc": ck.pr_auc, "dataset": DATASETS[dataset],
                 "source": "paper table (SMC 2020)"},
    )
    return module, card.validate()
