"""Export any conforming PyTorch tagger to a self-describing ONNX file, verified before it is written.

A conforming module maps ``waveform`` (batch, window) float32 at ``card.sample_rate`` to two outputs,
``tags`` (batch, n_labels) probabilities and ``embedding`` (batch, dim). Everything the runtime needs
(labels, rate, window/hop, padding rules, output meanings, provenance, licence) is stored in the ONNX
metadata under the single key :data:`METADATA_KEY` as JSON, so the file is the whole model.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

METADATA_KEY = "tagger.model"
SCHEMA_VERSION = 1


class ExportError(Exception):
    """The export failed its checks; nothing was written."""


@dataclass
class ModelCard:
    """What travels inside the ONNX file. Field meanings are documented in README ("Model files")."""

    id: str
    version: str
    labels: list[str]
    sample_rate: int
    window: int
    hop: int
    embedding_dim: int
    pad_start: int = 0
    pad_end: int = 0
    short_input: str = "repeat"  # "repeat" the track until it fills one window, or "zeros"
    partial_tail: str = "drop"  # "drop" a trailing partial window (kept when it is the only one), or "pad"
    aggregate: str = "mean"
    description: str = ""
    tags_output: str = "sigmoid probability per label, independent (multi-label)"
    embedding_output: str = ""
    source: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    licence_text: str = ""
    metrics: dict[str, float | str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA_VERSION, **asdict(self)}, ensure_ascii=False, sort_keys=True)

    def validate(self) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ExportError(f"model {self.id!r}: labels must be non-empty and unique")
        for name in ("sample_rate", "window", "hop", "embedding_dim"):
            if int(getattr(self, name)) <= 0:
                raise ExportError(f"model {self.id!r}: {name} must be positive")
        if self.short_input not in ("repeat", "zeros") or self.partial_tail not in ("drop", "pad"):
            raise ExportError(f"model {self.id!r}: unknown short_input/partial_tail rule")


def _reference_windows(card: ModelCard, audio: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Random noise at several levels plus real-audio windows, so both extremes are checked."""
    rows = [rng.standard_normal(card.window).astype(np.float32) * scale for scale in (1e-4, 0.05, 0.5)]
    rows.append(np.zeros(card.window, np.float32))
    for clip in audio:
        for start in range(0, max(len(clip) - card.window, 0) + 1, card.hop):
            piece = clip[start:start + card.window]
            if len(piece) == card.window:
                rows.append(piece.astype(np.float32))
    return np.stack(rows)


def verify_onnx(path: Path, module: nn.Module, windows: np.ndarray, *, atol: float = 1e-4,
                embedding_rtol: float = 1e-4) -> dict[str, float]:
    """Run the file in onnxruntime and torch on the same windows; raise ExportError on disagreement."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref_tags, ref_emb = (t.numpy() for t in module(torch.from_numpy(windows)))
    got_tags, got_emb = sess.run(["tags", "embedding"], {"waveform": windows})
    if not (np.isfinite(got_tags).all() and np.isfinite(got_emb).all()):
        raise ExportError(f"{path}: onnxruntime produced NaN or inf")
    tag_err = float(np.abs(got_tags - ref_tags).max())
    emb_err = float(np.abs(got_emb - ref_emb).max() / max(float(np.abs(ref_emb).max()), 1e-12))
    if tag_err > atol or emb_err > embedding_rtol:
        raise ExportError(f"{path}: onnxruntime disagrees with torch (tags max |diff| {tag_err:.2e} > {atol:g} "
                          f"or embedding relative diff {emb_err:.2e} > {embedding_rtol:g})")
    return {"tags_max_abs_diff": tag_err, "embedding_max_rel_diff": emb_err, "windows": float(len(windows))}


def export_onnx(module: nn.Module, card: ModelCard, output: Path | str, *,
                verify_audio: list[np.ndarray] | None = None, opset: int = 17) -> dict[str, float]:
    """Export ``module`` with ``card`` as metadata to ``output``; returns the verification figures.

    ``verify_audio`` holds mono float32 clips at ``card.sample_rate``; their windows join random ones
    in the onnxruntime-vs-torch check. The file appears at ``output`` only after every check passed.
    """
    card.validate()
    output = Path(output)
    module = module.eval()
    example = torch.zeros(2, card.window)
    with torch.no_grad():
        tags, emb = module(example)
    if tuple(tags.shape) != (2, len(card.labels)) or tuple(emb.shape) != (2, card.embedding_dim):
        raise ExportError(f"model {card.id!r}: forward gives tags {tuple(tags.shape)} and embedding {tuple(emb.shape)}, "
                          f"expected (B, {len(card.labels)}) and (B, {card.embedding_dim})")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(module, (example,), str(tmp), input_names=["waveform"],
                              output_names=["tags", "embedding"],
                              dynamic_axes={"waveform": {0: "batch"}, "tags": {0: "batch"}, "embedding": {0: "batch"}},
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, card.to_json()
        proto.doc_string = card.description
        proto.producer_name = "tagger-exporter"
        proto.model_version = SCHEMA_VERSION
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        windows = _reference_windows(card, verify_audio or [], np.random.default_rng(0))
        figures = verify_onnx(tmp, module, windows)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; an exported model is meant to be shared
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return figures


def read_card(path: Path | str) -> dict:
    """The metadata JSON stored in an exported file."""
    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ExportError(f"{path}: no {METADATA_KEY!r} metadata")
