"""End-to-end `tagger scan` throughput beside decode-only and inference-only throughput, same run.

    python bench/bench_scan.py [--files 300] [--seconds 30]

Builds a library of excerpts of the shared clips (../shared/audio, or generated music when absent) in
mixed formats (mp3, flac, ogg, m4a, opus, wav), then measures on the same files:
  decode-only:    decode + resample + windowing with the scan's decode threads, nothing else;
  inference-only: the same number of windows through the model at the scan's batch size;
  scan:           the real thing (fresh database, tags written to a fresh copy of the library).
The original musicnn 0.1.0 estimate per file is 1.2 s graph build + 60 ms per window + 1.6 ms per second
of audio for decoding (doc §7, 2-core machine, MSD_musicnn).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from audiofiles import music_like, write_audio  # noqa: E402

from bench.common import save  # noqa: E402
from tagger.analysis.decode import decode, stream_mono  # noqa: E402
from tagger.analysis.windows import iter_windows  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.library.store import Store  # noqa: E402
from tagger.models.session import load_model  # noqa: E402
from tagger.pipeline.scanner import scan  # noqa: E402

SHARED = ROOT.parent / "shared" / "audio"
FORMATS = [".mp3", ".flac", ".ogg", ".m4a", ".opus", ".wav"]


def build_library(dest: Path, n_files: int, seconds: float) -> float:
    sources = []
    for clip in sorted(SHARED.glob("*.ogg")) if SHARED.is_dir() else []:
        a = decode(clip, 44100)  # mono at 44.1 kHz
        if a.duration >= seconds:
            sources.append(a.samples)
    if not sources:
        sources = [music_like(120.0, 44100, 1, seed=s)[0] for s in range(3)]
    rng = np.random.default_rng(0)
    total = 0.0
    n = int(seconds * 44100)
    for i in range(n_files):
        src = sources[i % len(sources)]
        start = int(rng.integers(0, len(src) - n + 1))
        excerpt = src[start:start + n]
        stereo = np.stack([excerpt, excerpt * 0.9]).astype(np.float32)
        write_audio(dest / f"{i:04d}{FORMATS[i % len(FORMATS)]}", stereo, 44100)
        total += seconds
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    base = load_config(None)
    cfg = replace(base, threads=0, models=base.models[:1])  # the single-model stages (see bench_modelset for the set)
    model = load_model(cfg.models[0], device="auto", threads=cfg.threads)
    spec = model.spec
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        lib.mkdir()
        audio_s = build_library(lib, args.files, args.seconds)
        files = sorted(lib.iterdir())

        def decode_one(p: Path) -> int:
            return sum(1 for _ in iter_windows(stream_mono(p, spec.sample_rate), spec))

        t = time.perf_counter()
        with ThreadPoolExecutor(cfg.decode_workers) as pool:
            windows = sum(pool.map(decode_one, files))
        decode_s = time.perf_counter() - t

        batch = np.random.default_rng(1).standard_normal((cfg.batch_size, spec.window)).astype(np.float32) * 0.1
        model.run(batch)
        t = time.perf_counter()
        done = 0
        while done < windows:
            model.run(batch[: min(cfg.batch_size, windows - done)])
            done += cfg.batch_size
        infer_s = time.perf_counter() - t

        work = Path(tmp) / "scan"
        shutil.copytree(lib, work)
        cfg = replace(cfg, database=Path(tmp) / "db")
        t = time.perf_counter()
        with Store(cfg.database) as store:
            report = scan([work], cfg, model, store)
        scan_s = time.perf_counter() - t
        assert report.analysed == len(files) and not report.failed, report.failed

    per_file_windows = windows / len(files)
    original_per_file = 1.2 + 0.060 * per_file_windows + 0.0016 * args.seconds
    res = {
        "files": len(files), "seconds_per_file": args.seconds, "audio_seconds": audio_s, "windows": windows,
        "batch_size": cfg.batch_size, "decode_workers": cfg.decode_workers, "threads": model.threads,
        "decode_only": {"seconds": decode_s, "tracks_per_min": 60 * len(files) / decode_s, "x_realtime": audio_s / decode_s},
        "inference_only": {"seconds": infer_s, "tracks_per_min": 60 * len(files) / infer_s, "x_realtime": audio_s / infer_s},
        "scan": {"seconds": scan_s, "tracks_per_min": 60 * len(files) / scan_s, "x_realtime": audio_s / scan_s,
                 "tags_written": report.written},
        "scan_vs_inference": infer_s / scan_s,
        "original_estimate": {"tracks_per_min": 60 / original_per_file, "x_realtime": args.seconds / original_per_file},
    }
    res["speedup_vs_original_per_file"] = res["scan"]["tracks_per_min"] / res["original_estimate"]["tracks_per_min"]
    for key in ("decode_only", "inference_only", "scan"):
        r = res[key]
        print(f"{key:15s} {r['seconds']:7.1f} s  {r['tracks_per_min']:7.1f} tracks/min  {r['x_realtime']:6.1f}x realtime")
    print(f"scan reaches {100 * res['scan_vs_inference']:.0f}% of inference-only throughput; "
          f"{res['speedup_vs_original_per_file']:.1f}x the original musicnn per file "
          f"({res['original_estimate']['tracks_per_min']:.1f} tracks/min estimated)")
    print("saved", save("scan", res))


if __name__ == "__main__":
    main()
