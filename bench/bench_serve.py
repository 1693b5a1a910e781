"""`tagger serve` under load on loopback: concurrent clients, latency percentiles, idle connections held.

    python bench/bench_serve.py

Builds a small real database (real model, generated audio) in a scratch folder, starts the server in this
process, then: (1) 200 clients at once, each GET /health, then 200 at once GET /tracks/1/similar; (2) 1,000
idle TCP connections opened and held while 200 more clients are served; every request must be answered.
"""
from __future__ import annotations

import http.client
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from audiofiles import music_like, write_audio  # noqa: E402

from bench.common import save  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.library.store import Store  # noqa: E402
from tagger.models.session import load_model  # noqa: E402
from tagger.pipeline.scanner import scan  # noqa: E402
from tagger.serving.http import ServeConfig, make_server  # noqa: E402


def timed_get(addr, path: str) -> tuple[int, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection(*addr, timeout=60)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status, (time.perf_counter() - t) * 1000


def burst(addr, path: str, n: int = 200) -> dict:
    with ThreadPoolExecutor(n) as pool:
        res = list(pool.map(lambda _: timed_get(addr, path), range(n)))
    lat = sorted(ms for _, ms in res)
    return {"requests": n, "answered_200": sum(s == 200 for s, _ in res), "p50_ms": round(lat[n // 2], 1),
            "p95_ms": round(lat[int(n * 0.95)], 1), "p99_ms": round(lat[int(n * 0.99)], 1),
            "max_ms": round(lat[-1], 1), "mean_ms": round(statistics.mean(lat), 1)}


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        root = Path(td)
        lib = root / "lib"
        lib.mkdir()
        for i in range(20):
            write_audio(lib / f"t{i:02d}.flac", music_like(4.0 + 0.2 * i, 22050, 1, seed=i), 22050)
        model = load_model("musicnn-msd", device="cpu", threads=2)
        cfg = replace(load_config(None), database=root / "db", write_enabled=False, models=("musicnn-msd",))
        with Store(cfg.database) as store:
            scan([lib], cfg, model, store)
        srv = make_server(cfg, model, ServeConfig(port=0))
        thread = threading.Thread(target=srv.serve_forever, name="bench-serve", daemon=True)
        thread.start()
        addr = srv.server_address[:2]
        out = {"health_200_concurrent": burst(addr, "/health"),
               "similar_200_concurrent": burst(addr, "/tracks/1/similar?n=10")}
        idle = []
        for _ in range(1000):
            s = socket.create_connection(addr, timeout=10)
            idle.append(s)
        time.sleep(1.0)
        out["with_1000_idle_connections"] = burst(addr, "/health")
        alive = 0
        for s in idle:  # still held by the server (not dropped) until the idle timeout
            s.settimeout(0.01)
            try:
                alive += s.recv(1) == b"" and 0 or 1
            except (TimeoutError, socket.timeout):
                alive += 1
            except OSError:
                pass
            s.close()
        out["idle_connections_held"] = alive
        srv.shutdown()
        srv.server_close()
    for k, v in out.items():
        print(k, v)
    print("saved", save("serve", out))


if __name__ == "__main__":
    main()
