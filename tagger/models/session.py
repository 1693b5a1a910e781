"""A model's card (from the ONNX file's own metadata) and the onnxruntime session that runs it.

Nothing in the runtime knows a model by name: labels and their groups, sample rate, window, hop,
padding rules and output kinds all come from the card (``tagger/models/card.py``) the exporter writes. Any
file that carries one and whose graph has the outputs it declares plugs in.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import ModelError
from tagger.models.card import METADATA_KEY, Card, CardError

log = logging.getLogger(__name__)
_ANNOUNCED: set[object] = set()  # what was logged once per process: provider lines, warnings

BUNDLED_DIR = Path(__file__).parent / "bundled"
VARIANT_KEY = "tagger.variant"
INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # any one gives 8-bit dot products
PRECISIONS = ("auto", "float", "int8")
MEMORY_MODES = ("shared", "lean", "fast")
# TF32 (onnxruntime's default on Ampere and later GPUs) rounds convolution and matrix inputs to 10 bits of
# mantissa. On an H100 it moved the Jamendo and MagnaTagATune models' tags by up to 0.07 against the CPU
# (their log-scaled spectrograms amplify the error in quiet bins; bench/bench_gpu.py), so a user's tags would
# depend on the machine that analysed them. Full float32 keeps GPU and CPU results together.
CUDA_OPTIONS = {"use_tf32": "0"}
_SHARED_ARENA: list[bool] = []
_SHARED_LOCK = threading.Lock()


def _register_shared_arena(ort) -> None:
    """Once per process: a CPU arena in onnxruntime's environment that sessions opting in all draw from
    (default growth; measured leaner than growing by exactly what is requested: 280 against 385 MB)."""
    with _SHARED_LOCK:
        if not _SHARED_ARENA:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _SHARED_ARENA.append(True)


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports for this CPU (Linux); empty where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks (model files, weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def int8_candidate(path: Path) -> tuple[Path | None, str]:
    """The int8 variant file beside the float model at ``path`` (``int8/<name>``) if this CPU runs it well,
    else None; and why. Without 8-bit dot products (VNNI or AMX) onnxruntime's int8 kernels are slower than
    float and can saturate, so the float model runs there."""
    candidate = path.parent / "int8" / path.name
    if not candidate.is_file():
        return None, "no int8 variant"
    usable = sorted(set(INT8_CPU_FLAGS) & cpu_flags())
    if not usable:
        return None, f"CPU lacks {' / '.join(INT8_CPU_FLAGS)}"
    return candidate, f"CPU has {', '.join(usable)}"


def variant_mismatch(path: Path, meta: dict[str, str]) -> str | None:
    """Why a loaded int8 file must not stand in for the float model at ``path`` (None: it may). A variant
    is used only beside the exact float file it was made and verified from: its metadata holds that file's
    sha256, so a re-exported float model is never paired with a stale variant."""
    try:
        variant = json.loads(meta[VARIANT_KEY])
    except (KeyError, ValueError):
        return f"no {VARIANT_KEY!r} metadata"
    if variant.get("precision") != "int8":
        return f"precision {variant.get('precision')!r}, not int8"
    if variant.get("reference_sha256") != sha256_file(path):
        return f"made from another version of {path.name}"
    return None


def card_from_metadata(path: Path | str, meta: dict[str, str]) -> Card:
    """The card stored in an ONNX file's metadata, or ModelError naming the file and the field."""
    if METADATA_KEY not in meta:
        raise ModelError(path, f"no {METADATA_KEY!r} metadata: not a tagger model (export it with `python -m exporter`)")
    try:
        return Card.from_json(meta[METADATA_KEY])
    except CardError as exc:
        raise ModelError(path, str(exc)) from exc


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
    hint = ("; musicnn-mtt and fcn-msd are not in the wheel: export them from a checkout with `python -m exporter` "
            "into models_dir") if name_or_path in ("musicnn-mtt", "fcn-msd") else ""
    raise ModelError(name_or_path, f"no such model; available: {', '.join(known) or 'none'}{hint}")


def _with_options(providers: list[str]) -> list:
    """onnxruntime's provider list, with this project's options for the providers that take some."""
    return [(p, dict(CUDA_OPTIONS)) if p == "CUDAExecutionProvider" else p for p in providers]


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

    def __init__(self, path: Path, *, device: str = "auto", threads: int = 0, memory: str = "fast",
                 precision: str = "float") -> None:
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise ModelError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if memory not in MEMORY_MODES:
            raise ModelError("memory", f"must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
        self.path = path  # the float model: the model's identity, whichever file runs
        opts = ort.SessionOptions()
        # onnxruntime keeps each session's peak intermediate memory in its own arena: with four models (two on
        # 29-s windows) that is ~630 MB ("fast"). Without arenas ("lean") every run maps fresh pages for its
        # large tensors, and page faults made the FCNs 2x slower. "shared": one arena for every session of
        # the process, so the set holds about one model's peak (~280 MB) at the arena's speed.
        if memory == "lean":
            opts.enable_cpu_mem_arena = False
            opts.enable_mem_pattern = False
        elif memory == "shared":
            _register_shared_arena(ort)
            opts.add_session_config_entry("session.use_env_allocators", "1")
        opts.intra_op_num_threads = threads if threads > 0 else (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # Idle inference threads must not spin: the decoder threads need those cores in the meantime.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = opts.intra_op_num_threads
        providers, reason = self._choose_providers(ort, device)
        self._opts, self._providers = opts, providers
        gpu = providers[0] != "CPUExecutionProvider"
        self.file, self.precision, self.precision_reason = path, "float", "float model"
        self.session: Any = None  # an onnxruntime.InferenceSession once opened
        if precision != "float":
            variant, why = (None, "a GPU runs the float model") if gpu \
                else int8_candidate(path)
            if variant is not None:
                session = self._open(ort, variant, opts, providers)
                wrong = variant_mismatch(path, session.get_modelmeta().custom_metadata_map)
                if wrong is None:
                    self.session, self.file, self.precision = session, variant, "int8"
                else:
                    why = f"int8 variant {variant} not used: {wrong}"
                    log.warning("%s", why)
            if self.session is None and precision == "int8":
                raise ModelError(path, f"int8 requested but {why}")
            self.precision_reason = why
        if self.session is None:
            self.session = self._open(ort, path, opts, providers)
        active = self.session.get_providers()[0]
        if gpu and active != "CUDAExecutionProvider":
            reason = "CUDA provider failed to initialise; using CPU"
            if "cuda-failed" not in _ANNOUNCED:  # a GPU the user has but cannot use: say so, once
                _ANNOUNCED.add("cuda-failed")
                log.warning("%s: the CUDA provider did not start (a driver, CUDA or cuDNN library missing or "
                            "mismatched?); inference runs on the CPU", path)
        self.provider = active
        line = ("GPU" if active.startswith("CUDA") else "CPU", reason, self.threads)
        # Once per process: a model set loads several sessions, all on the same provider for the same reason.
        (log.info if line not in _ANNOUNCED else log.debug)("inference on %s (%s), %d threads", *line)
        _ANNOUNCED.add(line)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = card_from_metadata(path, meta)
        if precision != "float" and (self.card.id, self.precision) not in _ANNOUNCED:
            _ANNOUNCED.add((self.card.id, self.precision))
            log.info("%s: %s (%s)", self.card.id, "int8 variant" if self.precision == "int8" else "float",
                     self.precision_reason)
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

    @staticmethod
    def _open(ort, file: Path, opts, providers: list[str]):
        try:
            return ort.InferenceSession(str(file), opts, providers=_with_options(providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(file, f"onnxruntime cannot load it: {exc}") from exc

    def open_part(self, file: Path):
        """A session for part of this model's graph (a shared front end, or what follows it), with the same
        threads, memory mode and provider as the model's own session."""
        import onnxruntime as ort

        return ort.InferenceSession(str(file), self._opts,
                                    providers=_with_options([p for p in self._providers
                                                             if p in self.session.get_providers()]))

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


def auto_threads(n_models: int, device: str = "auto") -> int:
    """Intra-op threads per session for a set of ``n_models`` when the config leaves ``threads`` at 0.

    On the CPU the cores are split between the models the engine runs at once (one model per core, up to the
    set's size; see :func:`tagger.analysis.engine.pipeline_settings`): small batches scale poorly over
    several threads, and two single-threaded sessions side by side scanned 13 full-length tracks 14 % faster
    than one two-threaded session at a time on 2 cores (bench/bench_streams.py). One model, or a GPU, gets
    every core, as before.
    """
    import onnxruntime as ort

    cores = os.cpu_count() or 1
    providers, _ = Model._choose_providers(ort, device)
    if n_models < 2 or providers[0] != "CPUExecutionProvider":
        return cores
    return max(1, cores // min(n_models, cores))


def load_model(name_or_path: str, *, models_dir: Path | None = None, device: str = "auto", threads: int = 0,
               memory: str = "fast", precision: str = "float") -> Model:
    return Model(resolve_model_path(name_or_path, models_dir), device=device, threads=threads, memory=memory,
                 precision=precision)
