"""The CUDA path on a real GPU machine: does it work, does it agree with the CPU, and is the GPU kept busy?

    python bench/bench_gpu.py TRACK... [--copies 8] [--out FILE]

1. Agreement: every model of the default set, float, on real windows from the given tracks, run by the CUDA
   provider and by the CPU; the largest tag difference and the lowest embedding cosine.
2. Per window: CUDA milliseconds per window at batch 1, 4, 16 and 64 (medians of 20 after warm-up), against
   the CPU at the scan's batch.
3. The pipeline: ``Engine`` over the tracks repeated ``--copies`` times (each copy its own path), CUDA
   inference, decoding in threads or worker processes, several worker counts and batch sizes. Reported:
   wall seconds, tracks per minute, times realtime, the GPU's mean utilisation (``nvidia-smi`` sampled every
   100 ms) and the machine's mean CPU use (``/proc/stat``).

Needs a CUDA device and onnxruntime with its CUDA provider; refuses to run otherwise (nothing here is
simulated). Figures go to ``bench/results/gpu.json`` unless ``--out`` names another file.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, median_time  # noqa: E402
from tagger.analysis.cut import decode_windows
from tagger.analysis.engine import Engine, TrackResult
from tagger.errors import ModelError  # noqa: E402
from tagger.models.session import load_model  # noqa: E402

DEFAULT_SET = ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat"]


class GpuSampler:
    """``nvidia-smi`` utilisation samples in the background, for the mean over one run."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                      "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self.samples: list[tuple[float, float]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, mem))

    def stop(self) -> dict:
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(timeout=2)
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_mem_max_mib": None}
        return {"gpu_util_mean": round(statistics.fmean(u for u, _ in self.samples), 1),
                "gpu_mem_max_mib": max(m for _, m in self.samples)}


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def agreement(names: list[str], windows: dict[str, np.ndarray]) -> dict:
    out = {}
    for name in names:
        cpu = load_model(name, device="cpu", precision="float")
        gpu = load_model(name, device="cuda", precision="float")
        if not gpu.provider.startswith("CUDA"):
            raise SystemExit(f"{name}: the CUDA provider did not start ({gpu.provider})")
        x = windows[name]
        a, b = cpu.run(x), gpu.run(x)
        emb = cpu.card.embedding is not None
        cos = (np.sum(a[1] * b[1], 1) / (np.linalg.norm(a[1], axis=1) * np.linalg.norm(b[1], axis=1) + 1e-12)
               if emb else np.ones(1))
        out[name] = {"windows": len(x), "max_tag_diff": float(np.abs(a[0] - b[0]).max()),
                     "song_tag_diff": float(np.abs(a[0].mean(0) - b[0].mean(0)).max()),
                     "min_embedding_cosine": float(cos.min())}
        print(f"{name}: CUDA against CPU on {len(x)} real windows: tags within {out[name]['max_tag_diff']:.2e}, "
              f"embedding cosine >= {out[name]['min_embedding_cosine']:.6f}", flush=True)
    return out


def per_window(names: list[str], windows: dict[str, np.ndarray]) -> dict:
    out = {}
    for name in names:
        gpu = load_model(name, device="cuda", precision="float")
        row = {}
        for batch in (1, 4, 16, 64):
            x = np.resize(windows[name], (batch, windows[name].shape[1])).astype(np.float32)
            seconds = median_time(lambda: gpu.run_all(x), runs=20, warmup=5)
            row[f"cuda_batch_{batch}"] = round(seconds * 1000 / batch, 3)
        cpu = load_model(name, device="cpu", precision="auto")
        x = np.resize(windows[name], (4, windows[name].shape[1])).astype(np.float32)
        seconds = median_time(lambda: cpu.run_all(x), runs=10, warmup=3)
        row[f"cpu_batch_4_{cpu.precision}"] = round(seconds * 1000 / 4, 3)
        out[name] = row
        print(f"{name}: ms per window {row}", flush=True)
    return out


def pipeline(names: list[str], files: list[Path], seconds: float,
             configs: list[tuple[bool | None, int, int]]) -> list[dict]:
    """One row per (decode_processes, decode_workers, batch); None, 0 and 0 are the config's auto."""
    models = [load_model(n, device="cuda", precision="auto", memory="shared") for n in names]
    rows = []
    for processes, workers, batch in configs:
        engine = Engine(models, max_batch=batch, decode_workers=workers, max_windows=32, decode_processes=processes)
        try:
            if engine.decode_processes:  # start the worker processes outside the timed run
                list(engine.analyse(files[:1]))
                engine.stats["infer_seconds"] = 0.0
            sampler = GpuSampler()
            busy0, total0 = cpu_busy()
            t = time.perf_counter()
            done = sum(isinstance(r, TrackResult) for r in engine.analyse(files))
            wall = time.perf_counter() - t
            busy1, total1 = cpu_busy()
            gpu = sampler.stop()
        finally:
            engine.close()
        if done != len(files):
            raise SystemExit(f"only {done} of {len(files)} tracks analysed")
        row = {"settings": "auto" if (processes, workers, batch) == (None, 0, 0) else "given",
               "decode": "processes" if engine.decode_processes else "threads",
               "decode_workers": engine.decode_workers, "batch": engine.max_batch,
               "inference_thread_busy": round(engine.stats["infer_seconds"] / wall, 2),
               "seconds": round(wall, 2), "tracks_per_min": round(len(files) / wall * 60, 1),
               "x_realtime": round(seconds / wall, 1),
               "cpu_cores_busy": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 1), **gpu}
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = ap.parse_args()
    import av

    try:
        probe = load_model(DEFAULT_SET[0], device="cuda", precision="float")
    except ModelError as exc:
        raise SystemExit(f"no working CUDA provider here: {exc}") from None
    if not probe.provider.startswith("CUDA"):
        raise SystemExit(f"no working CUDA provider here ({probe.provider}): nothing to measure")
    windows: dict[str, np.ndarray] = {}
    for name in DEFAULT_SET:
        card = load_model(name, device="cpu").card
        got: list[np.ndarray] = []
        for f in args.files[:3]:
            decode_windows(f, [card], [0], 8, lambda _i, w: got.append(w))
        windows[name] = np.stack(got)
    result: dict = {"machine": {**machine(), "gpu": subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True).stdout.strip()}}
    result["agreement"] = agreement(DEFAULT_SET, windows)
    result["per_window_ms"] = per_window(DEFAULT_SET, windows)
    with tempfile.TemporaryDirectory() as td:
        files, seconds = [], 0.0
        for k in range(args.copies):
            for f in args.files:
                link = Path(td) / f"{k}-{f.name}"
                os.symlink(f.resolve(), link)
                files.append(link)
                with av.open(str(f)) as c:
                    seconds += float(c.duration or 0) / 1e6
        result["pipeline"] = {"tracks": len(files), "seconds_of_audio": round(seconds, 1), "max_windows": 32,
                              "runs": pipeline(DEFAULT_SET, files, seconds,
                                               [(False, 2, 4), (False, 8, 4), (True, 8, 4), (True, 14, 4),
                                                (None, 0, 0), (True, 14, 32), (True, 14, 64)])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
