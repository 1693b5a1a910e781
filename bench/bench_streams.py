"""One model at a time on every core, or several models at once on a core each: the default set on real tracks.

    python bench/bench_streams.py TRACK_OR_FOLDER... [--rounds 3]

Each configuration runs the engine (default model set, default window bound, CPU) over the tracks in a fresh
process, so peak RSS is its own; rounds alternate between configurations and the figures are medians:

- ``threads=cores, streams=1``: one inference call at a time, each session on every core (before 2026-12-05);
- ``threads=1, streams=cores``: the default now: as many models at once as cores, one thread each;
- ``threads=cores, streams=cores``: both (oversubscribed).

Prints wall seconds, tracks per minute, CPU seconds and peak RSS, and saves ``bench/results/streams.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import save  # noqa: E402

CHILD = """
import json, sys, time
from pathlib import Path
from tagger.pipeline.scanner import engine_for
from tagger.config import load_config
from tagger.models.session import load_model
threads, streams, files = int(sys.argv[1]), int(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
cfg = load_config(None)
models = [load_model(n, device="cpu", threads=threads, memory=cfg.memory, precision=cfg.precision) for n in cfg.models]
engine = engine_for(cfg, models, streams=streams)  # as a scan builds it
t, c = time.perf_counter(), time.process_time()
n = sum(1 for _ in engine.analyse(files))
print(json.dumps({"tracks": n, "wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                  "rss_mb": int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]) / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(str(p) for a in args.paths for p in ([a] if a.is_file() else a.rglob("*")) if p.is_file())
    cores = os.cpu_count() or 1
    configs = {f"threads={cores}, streams=1": (cores, 1), f"threads=1, streams={cores}": (1, cores),
               f"threads={cores}, streams={cores}": (cores, cores)}
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        for key, (threads, streams) in configs.items():
            out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(streams), *files], check=True,
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            runs[key].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {}
    for key, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        summary[key] = {"wall_s": round(wall, 2), "tracks_per_min": round(60 * len(files) / wall, 1),
                        "cpu_s": round(statistics.median(r["cpu"] for r in rs), 2),
                        "peak_rss_mb": round(max(r["rss_mb"] for r in rs)), "walls": [round(r["wall"], 2) for r in rs]}
        print(f"{key}: {summary[key]}")
    print("wrote", save("streams", {"tracks": len(files), "rounds": args.rounds, "configs": summary}))


if __name__ == "__main__":
    main()
