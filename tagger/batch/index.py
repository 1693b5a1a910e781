"""Similarity at catalogue scale: a FAISS IVF-PQ index over one model's embeddings, with exact re-ranking.

Exact search (``similar.py``) scans every vector: 42 ms at 1M tracks on two cores, but linear in the catalogue
and with the whole matrix in memory. The index keeps compressed codes (``m`` bytes per track) in ``nlist``
inverted lists; a query visits ``nprobe`` lists, takes the best ``rerank`` candidates by their approximate
score and re-scores them exactly against the full unit vectors (memory-mapped, read only for those
candidates), so the final order is exact cosine among the candidates. Recall@10 against exact search is
measured in ``bench/bench_batch.py``.

Files in the index folder: ``index.faiss`` (the IVF-PQ, or an exact flat index for collections too small
to train one), ``vectors.npy`` (unit float32 embeddings, one row per track), ``tracks.parquet`` (row -> id,
path, duration, fingerprint), ``index.json`` (model, analyser, parameters).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger.batch.results import latest_rows
from tagger.errors import StoreError

MIN_TRAIN_PER_LIST = 39  # FAISS's k-means wants about this many points per centroid


@dataclass
class IndexParams:
    nlist: int = 0  # 0: about 4 * sqrt(N)
    m: int = 25  # PQ sub-quantisers (bytes per vector); must divide the dimension
    nbits: int = 8
    nprobe: int = 64  # 1M synthetic tracks: recall@10 0.9995 at 0.75 ms (bench/bench_batch.py)
    rerank: int = 400


def build_index(results: Path, out: Path, model: str, params: IndexParams | None = None) -> dict[str, Any]:
    """Build the index for ``model`` from a batch result folder; returns what was built."""
    params = params or IndexParams()
    vecs, meta, analyser = [], [], ""
    for row in latest_rows(results):
        if row["model"] == model and row["status"] == "ok" and row["embedding"]:
            vecs.append(np.asarray(row["embedding"], np.float32))
            meta.append({k: row[k] for k in ("id", "path", "duration", "fingerprint")})
            analyser = row["analyser"]
    if not vecs:
        raise StoreError(results, f"no ok rows with embeddings for model {model!r}")
    return write_index(np.stack(vecs), meta, out, {"model": model, "analyser": analyser}, params)


def write_index(vectors: np.ndarray, meta: list[dict[str, Any]], out: Path, about: dict[str, Any],
                params: IndexParams) -> dict[str, Any]:
    """Index ``vectors`` (one row per track, described by ``meta``) into the folder ``out``."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    unit = np.ascontiguousarray(unit, np.float32)
    n, dim = unit.shape
    nlist = params.nlist or max(1, int(4 * math.sqrt(n)))
    m = params.m if dim % params.m == 0 else next(k for k in range(min(params.m, dim), 0, -1) if dim % k == 0)
    # Each PQ sub-quantiser has 2**nbits centroids and k-means wants ~39 points per centroid: fewer bits for
    # a small collection, and below 16 centroids per sub-quantiser exact search is the better tool anyway.
    nbits = min(params.nbits, int(math.log2(max(n, 1) / MIN_TRAIN_PER_LIST)) if n >= MIN_TRAIN_PER_LIST else 0)
    if n >= nlist * MIN_TRAIN_PER_LIST and nbits >= 4:
        quantizer = faiss.IndexFlatIP(dim)
        index: Any = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        train = unit if n <= 200_000 else unit[np.random.default_rng(0).choice(n, 200_000, replace=False)]
        index.train(train)
        kind = "ivfpq"
    else:  # too few tracks to train a quantiser: exact search is fast at this size anyway
        index = faiss.IndexFlatIP(dim)
        kind = "flat"
    for start in range(0, n, 100_000):
        index.add(unit[start:start + 100_000])
    faiss.write_index(index, str(out / "index.faiss"))
    np.save(out / "vectors.npy", unit)
    pq.write_table(pa.Table.from_pylist(meta), out / "tracks.parquet")
    info = {**about, "kind": kind, "tracks": n, "dim": dim, "nlist": nlist if kind == "ivfpq" else 0,
            "m": m if kind == "ivfpq" else 0, "nbits": nbits if kind == "ivfpq" else 0, "nprobe": params.nprobe, "rerank": params.rerank}
    (out / "index.json").write_text(json.dumps(info, indent=1))
    return info


class Index:
    """A built index, opened for queries."""

    def __init__(self, folder: Path, nprobe: int | None = None, rerank: int | None = None) -> None:
        import faiss
        import pyarrow.parquet as pq

        try:
            self.info = json.loads((folder / "index.json").read_text())
            self.index: Any = faiss.read_index(str(folder / "index.faiss"))
            self.unit = np.load(folder / "vectors.npy", mmap_mode="r")
            self.meta = pq.read_table(folder / "tracks.parquet").to_pylist()
        except (OSError, ValueError, RuntimeError) as exc:
            raise StoreError(folder, f"not a usable index: {exc}") from exc
        if self.info["kind"] == "ivfpq":
            ivf: Any = self.index
            ivf.nprobe = nprobe or self.info["nprobe"]
        self.rerank = rerank or self.info["rerank"]
        self.row_of = {m["path"]: i for i, m in enumerate(self.meta)}

    def search(self, query: np.ndarray, k: int, exclude: int | None = None) -> list[tuple[int, float]]:
        """(row, exact cosine) of the ``k`` best tracks, best first."""
        q = np.ascontiguousarray(query.reshape(1, -1) / max(float(np.linalg.norm(query)), 1e-12), np.float32)
        want = max(k + 1, self.rerank)
        _, cand = self.index.search(q, want)
        rows = np.array(sorted({int(c) for c in cand[0] if c >= 0 and c != exclude}), dtype=np.int64)
        if not len(rows):
            return []
        exact = np.asarray(self.unit[rows]) @ q[0]
        order = np.lexsort((rows, -exact))[:k]
        return [(int(rows[i]), float(exact[i])) for i in order]
