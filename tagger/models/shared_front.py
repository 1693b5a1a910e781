"""Run a front end once for models that share it.

Models exported from the same code often begin with the same computation: the bundled FCNs compute the same
log-mel spectrogram of the same 29-s window, node for node and weight for weight, before their own layers.
When two models of a set take the same windows (the same ``Card.windowing``) and their graphs begin with the
same computation up to a single tensor, that prefix runs once per batch and each model runs only the rest.

Sameness is decided from the graphs themselves, never from names: every tensor gets a digest of how it is
computed (operator, attributes, the digests of its inputs, the bytes of its weights); the prefix is the set of
nodes computed from the input whose outputs have a digest the other graph also has, and it must hand exactly
one tensor to the rest of the graph. A batch reuses the front end's output only when its windows are equal,
value for value, to the batch that produced it, so sharing can never change a result.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _subgraphs(attr) -> list:
    """The graphs an attribute holds (an If's branches, a Loop's body), if any."""
    return [attr.g] if attr.type == attr.GRAPH else list(attr.graphs) if attr.type == attr.GRAPHS else []


def _outer_refs(graph) -> set[str]:
    """Names a subgraph reads from the graphs around it (not its own inputs, weights or node outputs)."""
    own = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    refs: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                refs |= _outer_refs(sub)
        refs |= {name for name in node.input if name}
        own |= set(node.output)
    return refs - own


def _digests(graph) -> tuple[dict[str, str], set[str]]:
    """Digest of every tensor of ``graph``, and the names of those computed from a graph input."""
    from onnx import numpy_helper

    digest: dict[str, str] = {}
    dynamic: set[str] = set()
    for inp in graph.input:
        digest[inp.name] = "input:" + str(len(digest))
        dynamic.add(inp.name)
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        digest[init.name] = hashlib.sha1(f"{arr.dtype}{arr.shape}".encode() + arr.tobytes()).hexdigest()
    for node in graph.node:
        h = hashlib.sha1(f"{node.domain}:{node.op_type}".encode())
        for attr in sorted(node.attribute, key=lambda a: a.name):
            h.update(attr.SerializeToString())
            for sub in _subgraphs(attr):
                for name in sorted(_outer_refs(sub)):  # what the subgraph reads from this graph, by digest
                    h.update(b"^" + digest.get(name, "missing:" + name).encode())
        for name in node.input:
            h.update(b"|" + digest.get(name, "missing:" + name).encode())
        base = h.hexdigest()
        is_dynamic = any(name in dynamic for name in node.input) or any(
            _subgraphs(a) for a in node.attribute)  # subgraphs may read outer tensors
        for k, out in enumerate(node.output):
            digest[out] = f"{base}:{k}"
            if is_dynamic:
                dynamic.add(out)
    return digest, dynamic


def split_shared_prefix(a, b):
    """(front, body_a, body_b, boundary name in a, boundary name in b) when ONNX models ``a`` and ``b`` begin with
    the same computation handing a single tensor to the rest, else None."""
    ga, gb = a.graph, b.graph
    if len(ga.input) != 1 or len(gb.input) != 1:
        return None
    da, dyn_a = _digests(ga)
    db, dyn_b = _digests(gb)
    by_digest_b = {d: name for name, d in db.items() if name in dyn_b}
    shared = [n for n in ga.node if n.output and all(o in dyn_a and da[o] in by_digest_b for o in n.output)]
    if not shared:
        return None
    shared_out = {o for n in shared for o in n.output}
    rest_a = [n for n in ga.node if not (n.output and all(o in shared_out for o in n.output))]
    boundary = {name for n in rest_a for name in n.input if name in shared_out}
    boundary |= {o.name for o in ga.output if o.name in shared_out}
    if len(boundary) != 1:
        return None
    (cut_a,) = boundary
    cut_b = by_digest_b[da[cut_a]]
    import onnx

    a_shapes, b_shapes = onnx.shape_inference.infer_shapes(a), onnx.shape_inference.infer_shapes(b)
    front = _subgraph(a, a_shapes, [n for n in ga.node if n.output and (all(o in shared_out for o in n.output)
                                                              or not any(o in dyn_a for o in n.output))],
                      inputs=list(ga.input), outputs=[cut_a])
    body_a = _body(a, a_shapes, cut_a, dyn_a)
    body_b = _body(b, b_shapes, cut_b, dyn_b)
    if body_a is None or body_b is None:
        return None
    return front, body_a, body_b, cut_a, cut_b


def _value_info(inferred, name: str):
    """The tensor's type as shape inference saw it (``inferred``); dimensions it could not infer are left open."""
    from onnx import helper

    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == name and vi.type.tensor_type.elem_type:
            tt = vi.type.tensor_type
            dims = ([d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
                    if tt.HasField("shape") else None)
            return helper.make_tensor_value_info(name, tt.elem_type, dims)
    return None


def _subgraph(model, inferred, nodes, inputs, outputs: list[str]):
    from onnx import helper

    vis = []
    for name in outputs:
        vi = _value_info(inferred, name)
        vis.append(vi if vi is not None else helper.make_empty_tensor_value_info(name))
    used = {name for n in nodes for name in n.input} | {r for n in nodes for a in n.attribute
                                                         for sub in _subgraphs(a) for r in _outer_refs(sub)}
    weights = [w for w in model.graph.initializer if w.name in used]
    graph = helper.make_graph(nodes, model.graph.name + "-part", inputs, vis, initializer=weights)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="tagger-frontend")
    out.ir_version = model.ir_version
    return out


def _body(model, inferred, cut: str, dynamic: set[str]):
    """The model from tensor ``cut`` on: every node that does not (only) compute ``cut``'s ancestry."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    ancestry: set[int] = set()
    todo = [cut]
    while todo:
        name = todo.pop()
        node = producers.get(name)
        if node is None or id(node) in ancestry or not any(o in dynamic for o in node.output):
            continue
        ancestry.add(id(node))
        todo.extend(node.input)
    nodes = [n for n in g.node if id(n) not in ancestry]
    vi = _value_info(inferred, cut)
    if vi is None:
        return None
    # The rest must not read any other tensor computed from the input before the cut.
    inside = {o for n in nodes for o in n.output}
    for n in nodes:
        for name in n.input:
            if name and name in dynamic and name not in inside and name != cut:
                return None
    return _subgraph(model, inferred, nodes, inputs=[vi], outputs=[o.name for o in g.output])


def session_device(session) -> str:
    """The onnxruntime device name a session's tensors live on: "cuda" when its first provider is CUDA's."""
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


@dataclass
class SharedFront:
    """One front-end session for a group of models, and a one-batch memory of its last input and output.

    The front end's output stays where the front end computed it (an OrtValue on the session's device, bound
    with onnxruntime's I/O binding) and each body reads it there: on a GPU the spectrogram of a batch never
    makes the round trip to host memory and back, once per model. On the CPU the same code path runs, so the
    tests on the CPU provider exercise it.
    """

    session: Any  # onnxruntime.InferenceSession
    input_name: str
    members: dict[int, tuple[Any, str]] = field(default_factory=dict)  # id(model) -> (body session, cut)
    _last_in: np.ndarray | None = None
    _last_out: Any = None  # onnxruntime.OrtValue on the front session's device
    hits: int = 0
    # The models (and so this object) may serve two engines of one process at once: the check and the reuse
    # of the last output must not interleave.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _front(self, batch: np.ndarray) -> Any:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        binding.bind_output(self.session.get_outputs()[0].name, session_device(self.session))
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def run(self, model, batch: np.ndarray, output_names: Sequence[str]) -> list[np.ndarray]:
        """``model``'s outputs for ``batch``: the front end runs unless this batch equals the last one."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            last = self._last_in
            if last is None or last.shape != batch.shape or not np.array_equal(last, batch):
                self._last_out = self._front(batch)
                self._last_in = batch
            else:
                self.hits += 1
            spectrogram = self._last_out
        body, cut = self.members[id(model)]
        binding = body.io_binding()
        binding.bind_ortvalue_input(cut, spectrogram)
        for name in output_names:
            binding.bind_output(name, "cpu")
        body.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


# Each pair's split, kept as long as both models live (a daemon builds a new engine for every batch of files).
_PAIRS: "weakref.WeakKeyDictionary[object, weakref.WeakKeyDictionary[object, SharedFront | None]]" = \
    weakref.WeakKeyDictionary()


def find_shared_fronts(models: Sequence) -> dict[int, SharedFront]:
    """Model index -> the SharedFront it runs through, for models of the set that share a front end with another
    (see the module docstring); models that share nothing are absent and run whole. Each pair of live models is
    analysed once per process."""
    out: dict[int, SharedFront] = {}
    for i, mi in enumerate(models):
        if i in out:
            continue
        for j in range(i + 1, len(models)):
            mj = models[j]
            if j in out or mi.card.windowing != mj.card.windowing:
                continue
            known = _PAIRS.setdefault(mi, weakref.WeakKeyDictionary())
            if mj not in known:
                known[mj] = _pair(mi, mj)
            shared = known[mj]
            if shared is None:
                continue
            out[i] = out[j] = shared
            break
    return out


CACHE_VERSION = "1"  # bump when the split changes, so old cached parts are not reused
CACHE_ROOT: Path | None = None  # None: $XDG_CACHE_HOME/tagger/fronts (the tests point it at a fresh folder)


def _cache_dir(mi, mj) -> Path:
    """Where the split of this pair of model files is kept: keyed by both files' path, size and mtime."""
    from tagger.config import xdg

    parts = [CACHE_VERSION]
    for m in (mi, mj):
        st = os.stat(m.file)
        parts += [os.path.realpath(m.file), str(st.st_size), str(st.st_mtime_ns)]
    key = hashlib.sha1("|".join(parts).encode()).hexdigest()[:24]
    return (CACHE_ROOT or xdg("cache") / "tagger" / "fronts") / key


def _pair(mi, mj) -> SharedFront | None:
    """Split two models at their shared prefix and open the sessions, or None.

    The split is kept on disk (``$XDG_CACHE_HOME/tagger/fronts``), so later processes only open three sessions
    instead of loading and comparing both graphs (about 0.2 s and 30 MB of transient memory); a pair found not
    to share is remembered too.
    """
    try:
        folder = _cache_dir(mi, mj)
        cuts = _read_split(folder)
        if cuts is None:
            cuts = _write_split(folder, mi, mj)
        if not cuts:
            return None
        shared = SharedFront(mi.open_part(folder / "front.onnx"), mi.card.input_name)
        shared.members = {id(mi): (mi.open_part(folder / "body-a.onnx"), cuts["a"]),
                          id(mj): (mj.open_part(folder / "body-b.onnx"), cuts["b"])}
    except Exception as exc:  # no onnx, an unwritable cache, a graph this cannot split: both run whole
        log.debug("no shared front end for %s and %s: %s", mi.card.id, mj.card.id, exc)
        return None
    log.info("%s and %s share their front end: it runs once per window", mi.card.id, mj.card.id)
    return shared


def _read_split(folder: Path) -> dict | None:
    """The cached cut names ({} when the pair shares nothing), or None when nothing usable is cached."""
    try:
        cuts = json.loads((folder / "cuts.json").read_text())
    except (OSError, ValueError):
        return None
    if cuts and not all((folder / f).is_file() for f in ("front.onnx", "body-a.onnx", "body-b.onnx")):
        return None
    return cuts if isinstance(cuts, dict) else None


def _write_split(folder: Path, mi, mj) -> dict:
    import onnx

    parts = split_shared_prefix(onnx.load(str(mi.file)), onnx.load(str(mj.file)))
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    cuts: dict = {}
    if parts is not None:
        front, body_a, body_b, cut_a, cut_b = parts
        for name, proto in (("front.onnx", front), ("body-a.onnx", body_a), ("body-b.onnx", body_b)):
            onnx.save(proto, str(tmp / name))
        cuts = {"a": cut_a, "b": cut_b}
    (tmp / "cuts.json").write_text(json.dumps(cuts))
    del parts
    try:
        os.replace(tmp, folder)
    except OSError:  # a folder is there: another process's complete split (use it) or a damaged one (replace it)
        if _read_split(folder) == cuts:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    _prune(folder.parent, keep=folder)
    _release_heap()
    return cuts


def _prune(root: Path, keep: Path, max_age_days: float = 30.0) -> None:
    """Drop splits not written for a month (models replaced or moved leave theirs behind); one still in use is
    simply written again, once."""
    cutoff = time.time() - max_age_days * 86400
    for entry in root.iterdir():
        try:
            if entry != keep and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _release_heap() -> None:
    """Hand the graphs' transient copies back to the system (glibc keeps freed heap otherwise: ~30 MB here)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by the process instead
        pass
