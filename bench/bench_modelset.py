"""The model set: per-model inference cost, and `tagger scan` with the default set against the single
musicnn-msd model of the previous release, on the same real full-length music in one run.

    python bench/bench_modelset.py [MUSIC_DIR] [--files N]

MUSIC_DIR defaults to /tmp/deb/x: the free game soundtracks Debian ships, unpacked with
    apt-get download nexuiz-music warzone2100-music singularity-music && for f in *.deb; do dpkg-deb -x $f x; done
    (cd x && python3 -c "import zipfile; zipfile.ZipFile('usr/share/games/nexuiz/data/music.pk3').extractall('nexuiz')")
(licences: CC BY-SA 3.0 / GPL-2+, see each package's copyright file). Every file is copied to a scratch library,
so nothing of the originals changes; `--no-write` keeps tag writing out of the comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median_time, save  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.models.session import load_model  # noqa: E402

MODELS = ["fcn-jamendo", "musicnn-jamendo", "fcn-mtat", "fcn-msd", "musicnn-msd", "musicnn-mtt"]
# Peak memory from the child's own VmHWM: getrusage's ru_maxrss survives fork and exec on Linux, so a child of
# this (large) benchmark process would report the parent's peak.
RUNNER = ("import runpy, sys\n"
          "sys.argv = ['tagger'] + sys.argv[1:]\n"
          "try:\n    runpy.run_module('tagger', run_name='__main__')\n"
          "finally:\n"
          "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
          "    print('PEAK_RSS_KB', hwm, file=sys.stderr)\n")


def per_window() -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for name in MODELS:
        model = load_model(name, device="cpu", threads=2)
        card = model.card
        batches = (1, 2, 4) if card.window > 100_000 else (1, 4, 16)
        row = {"window_s": round(card.window / card.sample_rate, 2)}
        for b in batches:
            x = (rng.standard_normal((b, card.window)) * 0.1).astype(np.float32)
            row[f"batch{b}_ms"] = round(median_time(lambda: model.run(x), runs=5) / b * 1000, 2)
        best = min((v, k) for k, v in row.items() if k.startswith("batch"))
        row["best_ms"], row["best_batch"] = best[0], int(best[1][5:-3])
        row["ms_per_minute_of_audio"] = round(row["best_ms"] * 60 / row["window_s"], 1)
        out[name] = row
        print(name, row, flush=True)
    return out


def pick(music: Path, n: int) -> list[Path]:
    files = sorted(p for p in music.rglob("*") if p.suffix in (".ogg", ".opus") and p.is_file())
    groups: dict[str, list[Path]] = {}
    for p in files:
        groups.setdefault(p.parts[len(music.parts)], []).append(p)
    chosen: list[Path] = []
    while len(chosen) < n and any(groups.values()):  # round-robin over the packages
        for g in sorted(groups):
            if groups[g] and len(chosen) < n:
                chosen.append(groups[g].pop(0))
    return chosen


def scan_run(lib: Path, models: list[str], tmp: Path) -> dict:
    db = tmp / f"db-{len(models)}"
    args = ["scan", str(lib), "--no-write", "--json", "--database", str(db)]
    for m in models:
        args += ["--model", m]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "noconfig")}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr[-3000:])
    report = json.loads(proc.stdout)
    peak = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    genres = {}
    for f in report["files"]:
        values = ((f.get("decision") or {}).get("genre") or {}).get("values") or []
        genres[Path(f["path"]).name] = values
    return {"models": models, "seconds": round(wall, 1), "audio_seconds": report["audio_seconds"],
            "tracks": report["analysed"], "tracks_per_min": round(report["analysed"] / wall * 60, 1),
            "x_realtime": round(report["audio_seconds"] / wall, 1), "peak_rss_mb": round(peak / 1024),
            "genre_written_share": round(sum(bool(v) for v in genres.values()) / max(len(genres), 1), 3),
            "genres": genres}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("music", nargs="?", default="/tmp/deb/x", type=Path)
    ap.add_argument("--files", type=int, default=16)
    args = ap.parse_args()
    result = {"per_window": per_window()}
    files = pick(args.music, args.files)
    if not files:
        raise SystemExit(f"no .ogg/.opus files under {args.music}: see this script's docstring")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        lib = tmp / "lib"
        lib.mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, lib / f"{i:02d}-{f.name}")
        runs = [scan_run(lib, ["musicnn-msd"], tmp),
                scan_run(lib, list(load_config(None).models), tmp)]
    result["scan"] = {"files": [str(f) for f in files], "single_model": runs[0], "default_set": runs[1],
                      "set_vs_single_time": round(runs[1]["seconds"] / runs[0]["seconds"], 2)}
    for r in runs:
        print({k: v for k, v in r.items() if k != "genres"}, flush=True)
    print("saved", save("modelset", result))


if __name__ == "__main__":
    main()
