"""Model spec (from the ONNX file's own metadata) and the onnxruntime session that runs it.

Nothing in the runtime knows a model by name: labels, sample rate, window, hop and padding rules all
come from the ``tagger.model`` metadata JSON that the exporter writes. Any file that carries it and
has a ``waveform`` input and ``tags``/``embedding`` outputs plugs in.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError

log = logging.getLogger(__name__)

METADATA_KEY = "tagger.model"
BUNDLED_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    version: str
    labels: tuple[str, ...]
    sample_rate: int
    window: int
    hop: int
    embedding_dim: int
    pad_start: int
    pad_end: int
    short_input: str
    partial_tail: str
    path: Path
    description: str = ""
    licence: str = ""

    @property
    def analyser(self) -> str:
        """What a stored result depends on: a new model version means stale results."""
        return f"{self.id}@{self.version}"

    @classmethod
    def from_metadata(cls, path: Path, meta: dict[str, str]) -> "ModelSpec":
        if METADATA_KEY not in meta:
            raise ModelError(path, f"no {METADATA_KEY!r} metadata: not a tagger model (export it with `python -m exporter`)")
        try:
            card = json.loads(meta[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise ModelError(path, f"metadata {METADATA_KEY!r} is not valid JSON: {exc}") from None
        if card.get("schema") != 1:
            raise ModelError(path, f"metadata schema {card.get('schema')!r} is not supported (expected 1)")
        try:
            spec = cls(id=str(card["id"]), version=str(card["version"]), labels=tuple(map(str, card["labels"])),
                       sample_rate=int(card["sample_rate"]), window=int(card["window"]), hop=int(card["hop"]),
                       embedding_dim=int(card["embedding_dim"]), pad_start=int(card.get("pad_start", 0)),
                       pad_end=int(card.get("pad_end", 0)), short_input=str(card.get("short_input", "repeat")),
                       partial_tail=str(card.get("partial_tail", "drop")), path=path,
                       description=str(card.get("description", "")), licence=str(card.get("licence", "")))
        except KeyError as exc:
            raise ModelError(path, f"metadata lacks required field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(path, f"metadata has a malformed field: {exc}") from None
        if spec.short_input not in ("repeat", "zeros") or spec.partial_tail not in ("drop", "pad"):
            raise ModelError(path, f"unknown padding rule short_input={spec.short_input!r} partial_tail={spec.partial_tail!r}")
        if min(spec.sample_rate, spec.window, spec.hop, spec.embedding_dim) <= 0 or not spec.labels:
            raise ModelError(path, "metadata has a non-positive size or no labels")
        return spec


def resolve_model_path(name_or_path: str, models_dir: Path | None = None) -> Path:
    """A path as given, else ``<models_dir>/<name>.onnx``, else a bundled model of that name."""
    p = Path(name_or_path).expanduser()
    if p.suffix == ".onnx" or os.sep in name_or_path:
        if not p.is_file():
            raise ModelError(p, "model file not found")
        return p
    for d in (models_dir, BUNDLED_DIR):
        if d is not None and (d / f"{name_or_path}.onnx").is_file():
            return d / f"{name_or_path}.onnx"
    known = sorted(x.stem for d in (models_dir, BUNDLED_DIR) if d and d.is_dir() for x in d.glob("*.onnx"))
    raise ModelError(name_or_path, f"no such model; available: {', '.join(known) or 'none'}")


def _cuda_usable() -> tuple[bool, str]:
    """Whether a CUDA driver with at least one device is really present (checked without onnxruntime)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no CUDA driver (libcuda.so.1 not found)"
    if lib.cuInit(0) != 0:
        return False, "CUDA driver present but cuInit failed"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return False, "CUDA driver present but no GPU device"
    return True, f"{count.value} CUDA device(s)"


class Model:
    """One onnxruntime session for the whole run; ``run`` maps a window batch to (tags, embeddings)."""

    def __init__(self, path: Path, *, device: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads if threads > 0 else (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # Idle inference threads must not spin: the decoder threads need those cores in the meantime.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = opts.intra_op_num_threads
        providers, reason = self._choose_providers(ort, device)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(path, f"onnxruntime cannot load it: {exc}") from None
        active = self.session.get_providers()[0]
        if providers[0] == "CUDAExecutionProvider" and active != "CUDAExecutionProvider":
            reason = "CUDA provider failed to initialise; using CPU"
        self.provider = active
        log.info("inference on %s (%s), %d threads", "GPU" if active.startswith("CUDA") else "CPU", reason, self.threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.spec = ModelSpec.from_metadata(path, meta)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if "waveform" not in inputs or not {"tags", "embedding"} <= outputs:
            raise ModelError(path, f"expects input 'waveform' and outputs 'tags', 'embedding'; has {sorted(inputs)} -> {sorted(outputs)}")

    @staticmethod
    def _choose_providers(ort, device: str) -> tuple[list[str], str]:
        if device == "cpu":
            return ["CPUExecutionProvider"], "device: cpu in config"
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            if device == "cuda":
                raise ModelError("device", "cuda requested but this onnxruntime build has no CUDA provider")
            return ["CPUExecutionProvider"], "onnxruntime has no CUDA provider"
        ok, why = _cuda_usable()
        if not ok:
            if device == "cuda":
                raise ModelError("device", f"cuda requested but {why}")
            return ["CPUExecutionProvider"], why
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], why

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tags, emb = self.session.run(["tags", "embedding"], {"waveform": np.ascontiguousarray(windows, dtype=np.float32)})
        return tags, emb


def load_model(name_or_path: str, *, models_dir: Path | None = None, device: str = "auto", threads: int = 0) -> Model:
    return Model(resolve_model_path(name_or_path, models_dir), device=device, threads=threads)
