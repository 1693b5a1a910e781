"""A model's card (from the ONNX file's own metadata) and the onnxruntime session that runs it.

Nothing in the runtime knows a model by name: labels and their groups, sample rate, window, hop,
padding rules and output kinds all come from the card (``tagger/card.py``) the exporter writes. Any
file that carries one and whose graph has the outputs it declares plugs in.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np

from .card import METADATA_KEY, Card, CardError
from .errors import ModelError

log = logging.getLogger(__name__)
_ANNOUNCED: set[tuple] = set()

BUNDLED_DIR = Path(__file__).parent / "models"


def card_from_metadata(path: Path | str, meta: dict[str, str]) -> Card:
    """The card stored in an ONNX file's metadata, or ModelError naming the file and the field."""
    if METADATA_KEY not in meta:
        raise ModelError(path, f"no {METADATA_KEY!r} metadata: not a tagger model (export it with `python -m exporter`)")
    try:
        return Card.from_json(meta[METADATA_KEY])
    except CardError as exc:
        raise ModelError(path, str(exc)) from None


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

    def __init__(self, path: Path, *, device: str = "auto", threads: int = 0, lean: bool = False) -> None:
        import onnxruntime as ort

        self.path = path
        opts = ort.SessionOptions()
        if lean:
            # onnxruntime keeps every intermediate tensor's peak size in a per-session arena and pre-plans
            # buffers by shape; with four models (two of them on 29-s windows) that alone is ~600 MB. Without
            # both, memory is allocated per run and given back (see the README for speed and memory).
            opts.enable_cpu_mem_arena = False
            opts.enable_mem_pattern = False
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
        line = ("GPU" if active.startswith("CUDA") else "CPU", reason, self.threads)
        # Once per process: a model set loads several sessions, all on the same provider for the same reason.
        (log.info if line not in _ANNOUNCED else log.debug)("inference on %s (%s), %d threads", *line)
        _ANNOUNCED.add(line)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = card_from_metadata(path, meta)
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        declared = [o.name for o in self.card.outputs]
        if self.card.input_name not in inputs or not set(declared) <= outputs:
            raise ModelError(path, f"card declares input {self.card.input_name!r} and outputs {declared}; "
                                   f"the graph has {sorted(inputs)} -> {sorted(outputs)}")
        self.output_names = declared
        self._tags_name = self.card.tags.name
        emb = self.card.embedding
        self._emb_name = emb.name if emb is not None else None

    @property
    def spec(self) -> Card:
        """The model's card (older name, kept for callers)."""
        return self.card

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

    def run_all(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Every declared output for a batch of windows, by output name."""
        feed = {self.card.input_name: np.ascontiguousarray(windows, dtype=np.float32)}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(main label output, embedding) for a batch; a model without an embedding gives width 0."""
        out = self.run_all(windows)
        tags = out[self._tags_name]
        emb = out[self._emb_name] if self._emb_name else np.zeros((len(tags), 0), np.float32)
        return tags, emb


def load_model(name_or_path: str, *, models_dir: Path | None = None, device: str = "auto", threads: int = 0,
               lean: bool = False) -> Model:
    return Model(resolve_model_path(name_or_path, models_dir), device=device, threads=threads, lean=lean)
