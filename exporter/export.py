"""Export any conforming PyTorch tagger to a self-describing ONNX file, verified before it is written.

A conforming module maps ``waveform`` (batch, window) float32 at ``card.sample_rate`` to one tensor per
output the card declares, in the card's order: for the common case ``tags`` (batch, n_labels)
probabilities and ``embedding`` (batch, dim). Everything the runtime needs (labels and their groups,
rate, window/hop, padding rules, resampler, output kinds, provenance, licence) is stored in the ONNX
metadata under the single key :data:`METADATA_KEY` as JSON (schema: ``tagger/models/card.py``), so the file
is the whole model.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from exporter.errors import ExporterError
from tagger.models.card import METADATA_KEY, SCHEMA, Card, CardError, Output

SCHEMA_VERSION = SCHEMA


class ExportError(ExporterError):
    """The export failed its checks; nothing was written."""


@dataclass
class ModelCard:
    """The common case, written flat: one sigmoid ``tags`` output plus one ``embedding``.

    It is turned into the schema's :class:`tagger.models.card.Card` (``to_card``); pass a ``Card`` to
    :func:`export_onnx` directly for any other set of outputs (softmax heads, several label outputs).
    """

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
    partial_tail: str = "drop"  # "drop" a trailing partial window (kept when it is the only one), "pad", or "end"
    aggregate: str = "mean"
    description: str = ""
    tags_output: str = "sigmoid probability per label, independent (multi-label)"
    embedding_output: str = ""
    groups: dict[str, str] = field(default_factory=dict)  # label -> genre | mood | instrument | vocals | era ...
    resampler: str = "soxr-hq"
    source: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    licence_text: str = ""
    metrics: dict[str, float | str] = field(default_factory=dict)
    max_windows: int = 0  # with bounded windows, at most this many for this model (0: the runtime's bound alone)

    def to_card(self) -> Card:
        outputs = (Output("tags", "sigmoid", tuple(self.labels), dict(self.groups), aggregate=self.aggregate,
                          meaning=self.tags_output),
                   Output("embedding", "embedding", dim=int(self.embedding_dim), aggregate=self.aggregate,
                          meaning=self.embedding_output))
        return Card(id=self.id, version=self.version, sample_rate=int(self.sample_rate), window=int(self.window),
                    hop=int(self.hop), outputs=outputs, pad_start=self.pad_start, pad_end=self.pad_end,
                    short_input=self.short_input, partial_tail=self.partial_tail, resampler=self.resampler,
                    description=self.description, licence=self.licence, licence_text=self.licence_text,
                    source=dict(self.source), metrics=dict(self.metrics), max_windows=self.max_windows)

    def to_json(self) -> str:
        return self.to_card().to_json()

    def validate(self) -> None:
        _checked(self.to_card())


def _checked(card: Card) -> Card:
    try:
        return card.validate()
    except CardError as exc:
        raise ExportError(str(exc)) from None


def _reference_windows(card: Card, audio: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
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
                embedding_rtol: float = 1e-4, card: Card | None = None) -> dict[str, float]:
    """Run the file in onnxruntime and torch on the same windows; raise ExportError on disagreement.

    Label outputs must agree within ``atol``; embeddings within ``embedding_rtol`` of their largest value.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    kinds = {o.name: o.kind for o in card.outputs} if card else {}
    with torch.no_grad():
        ref = [t.numpy() for t in _as_tuple(module(torch.from_numpy(windows)))]
    got = sess.run(names, {sess.get_inputs()[0].name: windows})
    tag_err = emb_err = 0.0
    for name, r, g in zip(names, ref, got):
        if not np.isfinite(g).all():
            raise ExportError(f"{path}: onnxruntime produced NaN or inf in output {name!r}")
        if kinds.get(name, "embedding" if name == "embedding" else "sigmoid") == "embedding":
            emb_err = max(emb_err, float(np.abs(g - r).max() / max(float(np.abs(r).max()), 1e-12)))
        else:
            tag_err = max(tag_err, float(np.abs(g - r).max()))
    if tag_err > atol or emb_err > embedding_rtol:
        raise ExportError(f"{path}: onnxruntime disagrees with torch (tags max |diff| {tag_err:.2e} > {atol:g} "
                          f"or embedding relative diff {emb_err:.2e} > {embedding_rtol:g})")
    return {"tags_max_abs_diff": tag_err, "embedding_max_rel_diff": emb_err, "windows": float(len(windows))}


def flush_denormals(proto: "onnx.ModelProto") -> int:
    """Set subnormal float32 weights to zero; returns how many there were.

    Some trained checkpoints hold tens of thousands of subnormal weights (weight decay drives unused
    filters towards zero). They change no output measurably, but every multiplication by one takes a
    slow microcode path: measured here, one FCN ran 0.9 s per window instead of 0.04 s. The export
    check then compares the flushed graph against the untouched torch module.
    """
    from onnx import numpy_helper

    count = 0
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32:
            continue
        tiny = (arr != 0) & (np.abs(arr) < np.finfo(np.float32).tiny)
        n = int(tiny.sum())
        if n:
            arr = arr.copy()
            arr[tiny] = 0.0
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            count += n
    return count


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def export_onnx(module: nn.Module, card: ModelCard | Card, output: Path | str, *,
                verify_audio: list[np.ndarray] | None = None, opset: int = 17) -> dict[str, float]:
    """Export ``module`` with ``card`` as metadata to ``output``; returns the verification figures.

    ``verify_audio`` holds mono float32 clips at ``card.sample_rate``; their windows join random ones
    in the onnxruntime-vs-torch check. For a head (a card that ``reads`` stored vectors) it holds real
    feature rows instead. The file appears at ``output`` only after every check passed.
    """
    full = _checked(card.to_card() if isinstance(card, ModelCard) else card)
    output = Path(output)
    module = module.eval()
    example = torch.zeros(2, full.input_width)
    with torch.no_grad():
        produced = _as_tuple(module(example))
    expected = [(2, o.width) for o in full.outputs]
    shapes = [tuple(t.shape) for t in produced]
    if shapes != expected:
        described = ", ".join(f"{o.name} (B, {o.width})" for o in full.outputs)
        raise ExportError(f"model {full.id!r}: forward gives {shapes}, expected {described}")
    names = [o.name for o in full.outputs]
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(module, (example,), str(tmp), input_names=[full.input_name], output_names=names,
                              dynamic_axes={full.input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        flushed = flush_denormals(proto)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, full.to_json()
        proto.doc_string = full.description
        proto.producer_name = "tagger-exporter"
        proto.model_version = SCHEMA_VERSION
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        if full.is_head:  # a head's input is a feature row per track: random rows plus the real ones given
            rng = np.random.default_rng(0)
            windows = np.concatenate([rng.standard_normal((8, full.input_width)).astype(np.float32),
                                      *[np.asarray(a, np.float32).reshape(-1, full.input_width) for a in verify_audio or []]])
        else:
            windows = _reference_windows(full, verify_audio or [], np.random.default_rng(0))
        figures = verify_onnx(tmp, module, windows, card=full)
        figures["denormal_weights_flushed"] = float(flushed)
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
