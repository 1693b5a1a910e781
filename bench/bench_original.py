"""Side by side in one run: the ORIGINAL musicnn 0.1.0 on TensorFlow against this project, on this machine.

    bench/setup_original.sh /tmp/tagger-original-env      # once: TensorFlow + musicnn 0.1.0, outside the project
    python bench/bench_original.py --original-python /tmp/tagger-original-env/bin/python TRACK... [--rounds 3]

1. Per window, musicnn-msd (MSD_musicnn): TensorFlow's graph restored once, ``sess.run`` on log-mel windows
   (the mel spectrogram excluded: it is computed by librosa outside the graph), against onnxruntime on the
   exported model (its log-mel front end inside the graph, so included), float and the int8 variant, batch
   1 and 8, alternating rounds, medians.
2. Per file, on the given real tracks, ``--rounds`` alternating rounds, medians: the original extractor as its
   CLI runs it (load, log-mel, graph build and restore, every window) against `tagger scan --no-write` in a
   fresh process and database: the default
   (model set of four, 32 windows per model, int8 variants where the CPU has VNNI/AMX), the same in float,
   musicnn-msd alone with every window (the like-for-like), and musicnn-msd alone with the default window bound.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import ms_per_window, save  # noqa: E402

HERE = Path(__file__).resolve().parent


def original(py: str, *args: str) -> dict:
    out = subprocess.run([py, str(HERE / "original_musicnn.py"), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scan_seconds(files: list[Path], extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as td:
        lib = Path(td) / "lib"
        lib.mkdir()
        for f in files:
            os.symlink(f.resolve(), lib / f.name)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tagger", "scan", str(lib), "--no-write", "--database", f"{td}/db",
                        *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--original-python", required=True, help="python of an environment from setup_original.sh")
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.audio_seconds = 0.0
    if args.files:
        import av

        for f in args.files:
            with av.open(str(f)) as c:
                args.audio_seconds += float(c.duration or 0) / 1e6
    py = args.original_python
    out: dict = {"per_window_ms": {}, "per_file_s": {}}
    threads = os.cpu_count() or 1
    for batch in (1, 8):
        tf_ms, fp_ms, q_ms = [], [], []
        for _ in range(args.rounds):
            tf_ms.append(original(py, "window", "--batch", str(batch))["ms_per_window"])
            fp_ms.append(ms_per_window("musicnn-msd", threads, batch)[0])
            q_ms.append(ms_per_window("musicnn-msd", threads, batch, precision="int8")[0])
        a, b, c = statistics.median(tf_ms), statistics.median(fp_ms), statistics.median(q_ms)
        out["per_window_ms"][f"batch {batch}"] = {"original_tensorflow": round(a, 2), "tagger_float": round(b, 2),
                                                  "tagger_int8": round(c, 2), "speedup_float": round(a / b, 2),
                                                  "speedup_int8": round(a / c, 2)}
        print(f"musicnn-msd per window, batch {batch}: original {a:.1f} ms, ours float {b:.1f} ms ({a / b:.2f}x), "
              f"int8 {c:.1f} ms ({a / c:.2f}x)")
    out["tensorflow"] = original(py, "window", "--runs", "3")["tensorflow"]
    if args.files:
        n = len(args.files)
        # One round = the original extractor once over every file, then each scan once; rounds alternate, so a
        # drift of the machine (up to 10 % here) falls on both sides, and the figures are medians of the rounds.
        configs = {"default": [], "default_float": ["--model-precision", "float"],
                   "alike": ["--model", "musicnn-msd", "--max-windows", "0"], "alone": ["--model", "musicnn-msd"]}
        runs: dict[str, list[float]] = {"original": [], **{k: [] for k in configs}}
        for _ in range(args.rounds):
            orig = original(py, "files", *map(str, args.files))["seconds_per_file"]
            runs["original"].append(sum(orig.values()) / n)
            for key, extra in configs.items():
                runs[key].append(scan_seconds(args.files, extra) / n)
        med = {k: statistics.median(v) for k, v in runs.items()}
        per_orig, default, default_float, alike, alone = (med[k] for k in ("original", *configs))
        out["per_file_s"] = {"tracks": n, "seconds_of_audio": round(args.audio_seconds, 1) if args.audio_seconds else None,
                             "rounds": args.rounds, "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
                             "original_extractor": round(per_orig, 2),
                             "tagger_scan_default": round(default, 2), "tagger_scan_default_float": round(default_float, 2),
                             "tagger_scan_musicnn_msd_all_windows": round(alike, 2),
                             "tagger_scan_musicnn_msd_default_windows": round(alone, 2),
                             "speedup_default": round(per_orig / default, 2),
                             "speedup_default_float": round(per_orig / default_float, 2),
                             "speedup_like_for_like": round(per_orig / alike, 2),
                             "speedup_musicnn_msd_default_windows": round(per_orig / alone, 2),
                             "speedup_default_per_round": [round(o / d, 2) for o, d in zip(runs["original"],
                                                                                           runs["default"])]}
        print(f"per file ({n} tracks, medians of {args.rounds} rounds): original {per_orig:.2f} s; tagger scan default "
              f"{default:.2f} s ({per_orig / default:.2f}x; rounds {out['per_file_s']['speedup_default_per_round']}), "
              f"in float {default_float:.2f} s ({per_orig / default_float:.2f}x); "
              f"musicnn-msd every window {alike:.2f} s ({per_orig / alike:.2f}x), with the default 32 windows "
              f"{alone:.2f} s ({per_orig / alone:.2f}x)")
    print("wrote", save("original", out))


if __name__ == "__main__":
    main()
