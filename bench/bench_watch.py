"""The watch daemon: a 1,000-file drop, single-file latency, and an idle daemon over a 10k-file tree.

    python bench/bench_watch.py [--files 1000] [--latency-runs 5] [--idle-seconds 30]

(a) 1,000 three-second files (mixed formats) appear at once: seconds until every one is tagged, beside
    `tagger scan` on a copy of the same files. (b) One 4-minute track is copied in: seconds until its tags
    are written, with the default settle time (3 s). (c) A daemon watching 10,000 files (all already in its
    database) sits idle: CPU share and resident memory.
Everything runs the real `python -m tagger` processes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from audiofiles import music_like, write_audio  # noqa: E402

from bench.common import save  # noqa: E402

FORMATS = [".mp3", ".flac", ".ogg", ".m4a", ".wav"]


def env(tmp: Path) -> dict:
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp / "noconfig")}


def start(lib: Path, db: Path, tmp: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tagger", "watch", str(lib), "--database", str(db), *extra],
                            cwd=ROOT, env=env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc


def wait_line(proc: subprocess.Popen, needle: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if needle in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
    raise TimeoutError(needle)


def count_tagged(proc: subprocess.Popen, n: int, timeout: float = 1800) -> float:
    t = time.monotonic()
    seen = 0
    while seen < n:
        line = proc.stderr.readline()
        if "analysed " in line:
            seen += 1
        if time.monotonic() - t > timeout:
            raise TimeoutError(f"{seen}/{n} tagged")
    return time.monotonic() - t


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def bench_drop(tmp: Path, n: int) -> dict:
    src = tmp / "drop-src"
    src.mkdir()
    for i in range(n):
        write_audio(src / f"{i:04d}{FORMATS[i % len(FORMATS)]}", music_like(3.0, 44100, 2, seed=i), 44100)
    scan_lib = tmp / "scan-lib"
    shutil.copytree(src, scan_lib)
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "tagger", "scan", str(scan_lib), "--database", str(tmp / "scan-db"), "--json"],
                   cwd=ROOT, env=env(tmp), check=True, capture_output=True)
    scan_s = time.monotonic() - t
    lib = tmp / "drop-lib"
    lib.mkdir()
    proc = start(lib, tmp / "drop-db", tmp)
    wait_line(proc, "reconciled")
    t = time.monotonic()
    staging = tmp / "drop-staging"
    shutil.copytree(src, staging)
    for f in sorted(staging.iterdir()):  # as a sync tool would: each file appears complete, by rename
        os.rename(f, lib / f.name)
    count_tagged(proc, n)
    watch_s = time.monotonic() - t
    stop(proc)
    return {"files": n, "watch_seconds": watch_s, "scan_seconds": scan_s, "watch_vs_scan": scan_s / watch_s}


def bench_latency(tmp: Path, runs: int) -> dict:
    lib = tmp / "lat-lib"
    lib.mkdir()
    track = write_audio(tmp / "four-minutes.mp3", music_like(240.0, 44100, 2, seed=7), 44100)
    proc = start(lib, tmp / "lat-db", tmp)
    wait_line(proc, "reconciled")
    times = []
    for i in range(runs):
        t = time.monotonic()
        shutil.copy(track, lib / f"track{i}.mp3")
        wait_line(proc, "analysed ")
        times.append(time.monotonic() - t)
    stop(proc)
    return {"runs": runs, "median_seconds": statistics.median(times), "all": times, "settle_seconds": 3.0,
            "track_seconds": 240}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_idle(tmp: Path, seconds: float) -> dict:
    from tagger.library.store import Store

    lib = tmp / "idle-lib"
    db = tmp / "idle-db"
    rng = np.random.default_rng(0)
    with Store(db) as store:
        for d in range(500):
            folder = lib / f"Artist {d // 10}" / f"Album {d}"
            folder.mkdir(parents=True)
            for t in range(20):
                p = folder / f"{t:02d} track.flac"
                p.write_bytes(b"fLaC")
                st = p.stat()
                store.put({"path": p, "model": "musicnn-msd", "analyser": "musicnn-msd@0.1.0+tagger.1",
                           "size": st.st_size, "mtime_ns": st.st_mtime_ns, "status": "ok", "analysed_at": "x",
                           "duration": 200.0}, rng.random(50, dtype=np.float32),
                          rng.standard_normal(200, dtype=np.float32))
        store.commit()
    proc = start(lib, db, tmp, "-v")
    wait_line(proc, "reconciled")
    time.sleep(2)
    c0 = _cpu_seconds(proc.pid)
    time.sleep(seconds)
    cpu = (_cpu_seconds(proc.pid) - c0) / seconds
    rss = _rss_mb(proc.pid)
    stop(proc)
    return {"files": 10_000, "folders": 500, "idle_cpu_percent": 100 * cpu, "rss_mb": rss, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--idle-seconds", type=float, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        res = {"idle": bench_idle(tmp, args.idle_seconds)}
        print(json.dumps(res["idle"]))
        res["latency"] = bench_latency(tmp, args.latency_runs)
        print(json.dumps(res["latency"]))
        res["drop"] = bench_drop(tmp, args.files)
        print(json.dumps(res["drop"]))
    print("saved", save("watch", res))


if __name__ == "__main__":
    main()
