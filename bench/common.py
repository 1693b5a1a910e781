"""Helpers shared by the benchmarks: machine description, medians, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    from tagger.models.session import cpu_flags

    isa = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def median_time(fn, runs: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1))
    return path


def ms_per_window(model_name: str, threads: int, batch: int = 1, runs: int = 50,
                  precision: str = "float", streams: int = 1) -> tuple[float, float]:
    """(median, p90) milliseconds per window of a bundled model on noise windows, after 5 warm-up runs.

    With ``streams`` > 1, that many sessions of ``threads`` threads each run a batch side by side in every round
    (how a scan uses the cores: one model per core), and the figure is milliseconds per window of throughput."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from tagger.models.session import load_model

    models = [load_model(model_name, device="cpu", threads=threads, precision=precision) for _ in range(streams)]
    x = (np.random.default_rng(0).standard_normal((batch, models[0].card.window)) * 0.1).astype(np.float32)
    with ThreadPoolExecutor(streams) as pool:
        def round_() -> None:
            list(pool.map(lambda m: m.run_all(x), models))

        for _ in range(5):
            round_()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            round_()
            times.append((time.perf_counter() - t) * 1000 / (batch * streams))
    return statistics.median(times), float(np.percentile(times, 90))


LOW_RATE = 22050  # the rate of many older rips, of the shared clips and of the classic genre datasets


def decode_mono(path: Path, rate: int):
    """The file as 16-bit mono PCM at ``rate`` (PyAV's resampler): how the low-rate copies are made."""
    import av
    import numpy as np

    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            chunks.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(frame))
        chunks.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(None))
    return np.concatenate(chunks).astype("<i2")


def write_wav(path: Path, pcm, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
