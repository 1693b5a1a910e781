"""The web app's library page on a 100,000-track database: server time per page, index build, memory.

    python bench/bench_web.py [--tracks 100000]

Builds a synthetic database in a scratch folder with the real store (records with titles, artists, albums,
folders, decided and user genres and moods, descriptors; random tag vectors and unit embeddings for the
bundled musicnn-msd card), starts `tagger serve` in this process, and times real HTTP requests on loopback
(median of 9 after one warm-up): the first library page, facet filters, a text search, a deep sorted page,
a track page. Server time is measured inside the handler's page function too (the same work without the
socket). The index build (first request after the database changes) is reported apart.
"""
from __future__ import annotations

import argparse
import http.client
import resource
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import save  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.library.store import Store  # noqa: E402
from tagger.models.session import load_model  # noqa: E402
from tagger.serving.http import ServeConfig, make_server  # noqa: E402

GENRES = ["Rock", "Pop", "Jazz", "Classical", "Electronic", "Folk", "Metal", "Ambient", "Soundtrack", "Blues"]
MOODS = ["Calm", "Happy", "Sad", "Energetic", "Dark", "Romantic"]
DESCRIPTORS = ["piano", "guitar", "strings", "drums", "synthesizer", "female vocals", "male vocals", "1990s"]


def build(db: Path, n: int, model) -> None:
    rng = np.random.default_rng(0)
    card = model.card
    mid = card.id
    with Store(db) as store:
        store.describe(mid, card.to_json())
        for i in range(n):
            g = GENRES[int(rng.integers(len(GENRES)))]
            rec = {"path": f"/music/Artist {i % 2000:04d}/Album {i % 9000:04d}/{i:06d} Track.flac", "model": mid,
                   "analyser": card.analyser, "status": "ok", "size": 1000 + i, "mtime_ns": i,
                   "title": f"Track {i:06d}", "artist": f"Artist {i % 2000:04d}", "album": f"Album {i % 9000:04d}",
                   "duration": float(120 + i % 300), "analysed_at": f"2026-11-{1 + i % 28:02d}T00:00:00Z",
                   "decided": {"genre": [g], "mood": [MOODS[i % len(MOODS)]] if i % 3 else [],
                               "descriptors": [DESCRIPTORS[i % len(DESCRIPTORS)]]}}
            if i % 10 == 0:
                rec["user"] = {"genre": [GENRES[(i // 10) % len(GENRES)]]}
            tags = rng.random(len(card.labels), dtype=np.float32)
            emb = rng.standard_normal(card.embedding_dim, dtype=np.float32)
            store.put(rec, tags, emb)
            if i % 20_000 == 19_999:
                store.commit()
        store.commit()


def get(addr, path: str) -> float:
    t = time.perf_counter()
    conn = http.client.HTTPConnection(*addr, timeout=120)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200, (path, resp.status)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=100_000)
    args = ap.parse_args()
    model = load_model("musicnn-msd", device="cpu", threads=2)
    with tempfile.TemporaryDirectory() as td:
        db = Path(td) / "db"
        t = time.perf_counter()
        build(db, args.tracks, model)
        built_s = time.perf_counter() - t
        cfg = replace(load_config(None), database=db, library=(Path("/music"),), models=("musicnn-msd",))
        t = time.perf_counter()
        srv = make_server(cfg, model, ServeConfig(port=0))
        open_s = time.perf_counter() - t  # opening the store and building the library index
        thread = threading.Thread(target=srv.serve_forever, name="bench-web", daemon=True)
        thread.start()
        addr = srv.server_address[:2]
        handler = srv.RequestHandlerClass
        snap = handler.state.snapshot()
        track_id = next(iter(snap.by_id))
        pages = {"first library page": "/", "filter genre=Jazz": "/?genre=Jazz",
                 "filter genre=Jazz + mood=Calm + instrument=piano": "/?genre=Jazz&mood=Calm&instrument=piano",
                 "text search 'track 0123'": "/?q=track+0123", "sorted by length, page 500": "/?sort=duration&order=desc&page=500",
                 "100 per page, folder filter": "/?folder=Artist+0042&per_page=100",
                 f"track page (/track/{track_id})": f"/track/{track_id}", "status page": "/status"}
        out: dict = {"tracks": args.tracks, "database_build_s": round(built_s, 1),
                     "server_start_with_index_s": round(open_s, 2), "pages": {}}
        for name, path in pages.items():
            cold = get(addr, path)  # the first use of a sort order builds that order once
            http_ms = [get(addr, path) for _ in range(9)]
            url_path, _, query = path.partition("?")
            params = parse_qs(query)
            inner = []
            for _ in range(9):
                t = time.perf_counter()
                if url_path == "/":
                    handler.site.library(snap, params)
                elif url_path.startswith("/track/"):
                    handler.site.track(snap, track_id)
                else:
                    handler.site.status(snap)
                inner.append((time.perf_counter() - t) * 1000)
            out["pages"][name] = {"http_first_ms": round(cold, 1), "http_median_ms": round(statistics.median(http_ms), 1),
                                  "server_median_ms": round(statistics.median(inner), 1)}
            print(f"{name:<50} server {statistics.median(inner):7.1f} ms   over HTTP {statistics.median(http_ms):7.1f} ms"
                  f"   first request {cold:7.1f} ms")
        out["max_rss_mb_including_database_build"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(f"index built with the server in {open_s:.2f} s; peak RSS {out['max_rss_mb_including_database_build']} MB"
              " (this process also built the database)")
        srv.shutdown()
        srv.server_close()
    print("wrote", save("web", out))


if __name__ == "__main__":
    main()
