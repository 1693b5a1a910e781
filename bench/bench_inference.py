"""onnxruntime CPU (and CUDA when present) time per 3-second window for each exported model.

    python bench/bench_inference.py [--runs 5]

Exports the VGG models into bench/models/ on first use (needs the export extra); the musicnn models are
the bundled ones. Prints batch 1 and every batch size x thread count, medians over runs, beside the
original musicnn 0.1.0 figures measured on a 2-core machine (TF 2.15, one window per session run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median_time, save  # noqa: E402
from tagger.models.session import BUNDLED_DIR  # noqa: E402

ORIGINAL_MS = {"musicnn-mtt": 67, "musicnn-msd": 60, "vgg-mtt": 25, "vgg-msd": 19}  # batch 1, model loaded
MODELS_DIR = Path(__file__).parent / "models"


def model_path(model_id: str) -> Path:
    bundled = BUNDLED_DIR / f"{model_id}.onnx"
    if bundled.exists():
        return bundled
    path = MODELS_DIR / f"{model_id}.onnx"
    if not path.exists():
        from exporter.export import export_onnx
        from exporter.weights import open_weights
        from exporter.zoo import build_published, verification_audio

        module, card = build_published(model_id, open_weights())
        export_onnx(module, card, path, verify_audio=verification_audio())
    return path


def session(path: Path, threads: int, provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=[provider])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=list(ORIGINAL_MS))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        from tagger.models.session import _cuda_usable

        if _cuda_usable()[0]:
            providers.append("CUDAExecutionProvider")
    for model_id in args.models:
        path = model_path(model_id)
        rows = []
        for provider in providers:
            for threads in ((1, 2) if provider.startswith("CPU") else (1,)):
                sess = session(path, threads, provider)
                for batch in (1, 8, 16, 32, 64):
                    x = (rng.standard_normal((batch, 48128)) * 0.1).astype(np.float32)
                    t = median_time(lambda: sess.run(None, {"waveform": x}), runs=args.runs)
                    rows.append({"provider": provider, "threads": threads, "batch": batch, "ms_per_window": 1000 * t / batch})
        cpu = [r for r in rows if r["provider"] == "CPUExecutionProvider"]
        b1 = min(r["ms_per_window"] for r in cpu if r["batch"] == 1)
        best = min(cpu, key=lambda r: r["ms_per_window"])
        results[model_id] = {"rows": rows, "batch1_ms": b1, "best": best, "original_ms": ORIGINAL_MS[model_id],
                             "speedup_best": ORIGINAL_MS[model_id] / best["ms_per_window"]}
        print(f"{model_id:12s} batch 1: {b1:6.1f} ms/window | best {best['ms_per_window']:6.1f} ms/window "
              f"(batch {best['batch']}, {best['threads']} threads) | original {ORIGINAL_MS[model_id]} ms "
              f"-> {ORIGINAL_MS[model_id] / best['ms_per_window']:.2f}x")
        for r in rows:
            if not r["provider"].startswith("CPU"):
                print(f"{'':12s} CUDA batch {r['batch']:3d}: {r['ms_per_window']:.2f} ms/window")
    print("saved", save("inference", {"runs": args.runs, "models": results}))


if __name__ == "__main__":
    main()
