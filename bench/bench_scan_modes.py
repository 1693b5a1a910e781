"""`tagger scan --no-write` on real full-length tracks in each memory and window mode, side by side in one run:
seconds, tracks per minute, x realtime and the peak resident memory of the scanning process.

Every run is a fresh process with a fresh database (so nothing is skipped), on the same files, alternating
modes; medians of --repeats.

    python bench/bench_scan_modes.py TRACK... [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import machine  # noqa: E402

MODES = {"default: shared arena, int8 variants, 32 windows": {"memory": "shared", "max_windows": 32},
         "shared arena, float, 32 windows": {"memory": "shared", "max_windows": 32, "precision": "float"},
         "lean (no arenas), int8 variants, 32 windows": {"memory": "lean", "max_windows": 32},
         "shared arena, int8 variants, all windows": {"memory": "shared", "max_windows": 0},
         "fast (arena per model), int8 variants, all windows": {"memory": "fast", "max_windows": 0},
         "lean (no arenas), int8 variants, all windows": {"memory": "lean", "max_windows": 0},
         # peak_mb is the largest single process: the decoder processes' own memory comes on top
         "default with decoder processes": {"memory": "shared", "max_windows": 32, "decode_processes": True}}


def one(files: list[Path], settings: dict) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(f"database: {tmp}/db\nmemory: {settings['memory']}\nmax_windows: {settings['max_windows']}\n"
                       f"decode_processes: {'true' if settings.get('decode_processes') else 'false'}\n"
                       f"precision: {settings.get('precision', 'auto')}\n")
        env = {**os.environ, "XDG_CONFIG_HOME": f"{tmp}/cfg", "XDG_DATA_HOME": f"{tmp}/data"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "tagger", "scan", *map(str, files), "--no-write", "--json",
                              "--config", str(cfg)], env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        report = json.loads(out.stdout)
        if peak <= before:
            raise SystemExit("cannot attribute peak memory: run each mode in its own benchmark process")
        return seconds, peak / 1024, report["audio_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mode", choices=list(MODES), action="append")
    ap.add_argument("--name", default="scan_modes", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()
    modes = args.mode or list(MODES)
    if len(modes) > 1:  # ru_maxrss of children is a maximum over all of them: one process per mode
        results = {}
        for r in range(args.repeats):
            for m in modes:
                out = subprocess.run([sys.executable, __file__, *map(str, args.files), "--repeats", "1", "--mode", m,
                                      "--name", args.name],
                                     capture_output=True, text=True, check=True)
                results.setdefault(m, []).append(json.loads(out.stdout))
        audio = results[modes[0]][0]["audio_seconds"]
        table = {}
        for m, runs in results.items():
            secs = statistics.median(x["seconds"] for x in runs)
            table[m] = {"seconds": round(secs, 1), "tracks_per_min": round(len(args.files) / secs * 60, 1),
                        "x_realtime": round(audio / secs, 1),
                        "peak_mb": round(statistics.median(x["peak_mb"] for x in runs))}
        out = {"date": str(date.today()), "machine": machine(),
               "tracks": len(args.files), "audio_minutes": round(audio / 60, 1), "repeats": args.repeats,
               "modes": table}
        print(json.dumps(out, indent=1))
        (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
        (ROOT / f"bench/results/{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
        return
    seconds, peak, audio = one(args.files, MODES[modes[0]])
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "audio_seconds": audio}))


if __name__ == "__main__":
    main()
