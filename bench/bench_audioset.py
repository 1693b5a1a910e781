"""What the AudioSet model costs in the default scan: the set without it and with it, in one run.

    python bench/bench_audioset.py FOLDER [--rounds 3]

Each round runs `tagger scan --no-write` on FOLDER (full-length real music) into a fresh database, once with
the four-model set and once with the AudioSet model added, alternating, in separate processes (so each is
measured from a cold start like a user's scan). Reported: median wall seconds per file, CPU seconds per file
(user + system of the process), peak RSS, and the ratio with / without. Also the AudioSet model alone per
10-s window at the scan's batch size.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import ms_per_window, save  # noqa: E402

SETS = {"without": ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat"],
        "with": ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat", "mn04-audioset"]}


def one_scan(folder: Path, models: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "tagger", "scan", str(folder), "--no-write", "--json", "--database",
               str(Path(tmp) / "db"), *[a for m in models for a in ("--model", m)]]
        env = {**os.environ, "XDG_CONFIG_HOME": str(Path(tmp) / "cfg"), "PYTHONPATH": str(ROOT)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise SystemExit(f"scan failed: {out.stderr[-2000:]}")
        import json

        report = json.loads(out.stdout)
        files = report["analysed"]
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rss_mb = int(out.stderr.strip().splitlines()[-1]) / 1024
        return {"files": files, "wall_s": wall, "cpu_s": cpu, "audio_s": report["audio_seconds"], "rss_mb": rss_mb}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {k: [] for k in SETS}
    for r in range(args.rounds):
        for name, models in SETS.items():
            res = one_scan(args.folder, models)
            runs[name].append(res)
            print(f"round {r + 1} {name}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU for {res['files']} "
                  f"files, peak {res['rss_mb']:.0f} MB", flush=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {"files": rs[0]["files"], "audio_s": round(rs[0]["audio_s"], 1),
                         "wall_s_per_file": round(statistics.median(x["wall_s"] / x["files"] for x in rs), 3),
                         "cpu_s_per_file": round(statistics.median(x["cpu_s"] / x["files"] for x in rs), 3),
                         "peak_rss_mb": round(max(x["rss_mb"] for x in rs))}
    summary["ratio_wall"] = round(summary["with"]["wall_s_per_file"] / summary["without"]["wall_s_per_file"], 3)
    summary["ratio_cpu"] = round(summary["with"]["cpu_s_per_file"] / summary["without"]["cpu_s_per_file"], 3)
    median, p90 = ms_per_window("mn04-audioset", threads=2, batch=4, runs=20)
    summary["mn04_ms_per_10s_window_batch4"] = {"median": round(median, 1), "p90": round(p90, 1)}
    print(summary)
    print("saved", save("audioset", {"folder": str(args.folder), "rounds": args.rounds, "sets": SETS,
                                     "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
