"""Side by side in one run: the ORIGINAL musicnn 0.1.0 on TensorFlow against this project, on this machine.

    bench/setup_original.sh /tmp/tagger-original-env      # once: TensorFlow + musicnn 0.1.0, outside the project
    python bench/bench_original.py --original-python /tmp/tagger-original-env/bin/python \
        --corpus vorbis44=FOLDER --corpus mp3=FOLDER [TRACK...] [--rounds 3]

1. Per window, musicnn-msd (MSD_musicnn): TensorFlow's graph restored once, ``sess.run`` on log-mel windows
   (the mel spectrogram excluded: it is computed by librosa outside the graph), against onnxruntime on the
   exported model (its log-mel front end inside the graph, so included), float and the int8 variant, batch
   1 and 8, alternating rounds, medians.
2. Per file, on the given real tracks, ``--rounds`` alternating rounds, medians: the original extractor as its
   CLI runs it (load, log-mel, graph build and restore, every window) against `tagger scan --no-write` in a
   fresh process and database: the default
   (the configured model set and window bound, int8 variants where the CPU has VNNI/AMX), the same in float,
   musicnn-msd alone with every window (the like-for-like), and musicnn-msd alone with the default window bound;
   each scan's peak RSS; tracks per minute and the realtime factor of the default; then, per stage, where a
   default scan's time goes (decoding in core seconds per track, each model's windows and milliseconds).
   Each ``--corpus`` is compared on its own.
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
AUDIO = {".ogg", ".mp3", ".flac", ".opus", ".m4a", ".wav"}  # what a corpus folder contributes


def original(py: str, *args: str) -> dict:
    out = subprocess.run([py, str(HERE / "original_musicnn.py"), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# Peak RSS from /proc's VmHWM: ru_maxrss would carry over the bench's own peak through fork and exec.
SCAN = """
import sys
from tagger.cli import main
rc = main(sys.argv[1:])
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")]
print("peak_rss_kb", hwm[0], file=sys.stderr)
sys.exit(rc)
"""

STAGES = """
import json, sys, time
from pathlib import Path
from tagger.analysis.cut import FINGERPRINT_RATE, decode_windows
from tagger.analysis.decode import StreamInfo, stream_native_mono
from tagger.analysis.digests import Fingerprint
from tagger.analysis.resample import RateConverter
from tagger.config import load_config
from tagger.models.session import load_model
from tagger.pipeline.scanner import engine_for, load_models
files = [Path(p) for p in sys.argv[1:]]
cfg = load_config(None)
models = load_models(cfg)
cards = [m.card for m in models]
rates = sorted({c.sample_rate for c in cards} | {FINGERPRINT_RATE})


def core_s(work):
    t = time.process_time()
    work()
    return (time.process_time() - t) / len(files)


def decoder_only():
    for f in files:
        for _ in stream_native_mono(f):
            pass


def with_resampling():  # the whole-file path's decoding, resampling to every rate and the 16-kHz fingerprint
    for f in files:
        info, fp, convs = StreamInfo(), Fingerprint(), None
        for mono in stream_native_mono(f, info):
            convs = convs or {r: RateConverter(info.source_rate, r) for r in rates}
            for r, c in convs.items():
                block = c.push(mono)
                if r == FINGERPRINT_RATE:
                    fp.update(block)


decoder = core_s(decoder_only)
resampled = core_s(with_resampling)
decode = core_s(lambda: [decode_windows(f, cards, range(len(cards)), cfg.max_windows, lambda i, w: None)
                         for f in files])
# Each model's own inference cost: its kept windows of every file, one window per call on a single-threaded
# session, nothing else running (the FCN pair's shared front end is counted in both).
alone = {}
for i, m in enumerate(models):
    solo = load_model(str(m.path), device="cpu", threads=1, memory="shared", precision=cfg.precision)
    spent = 0.0
    for f in files:
        windows = []
        decode_windows(f, cards, [i], cfg.max_windows, lambda _, w: windows.append(w))
        t = time.process_time()
        for w in windows:
            solo.run(w[None])
        spent += time.process_time() - t
    alone[solo.card.id] = spent / len(files)
engine = engine_for(cfg, models)  # as a scan builds it
t, c = time.perf_counter(), time.process_time()
for _ in engine.analyse(files):
    pass
wall, cpu = (time.perf_counter() - t) / len(files), (time.process_time() - c) / len(files)
print(json.dumps({"decode_core_s_per_track": decode, "decoder_only_core_s_per_track": decoder,
                  "resampling_and_fingerprint_core_s_per_track": resampled - decoder,
                  "windowing_and_regions_core_s_per_track": decode - resampled,
                  "models_alone_core_s_per_track": alone, "wall_s_per_track": wall, "scan_core_s_per_track": cpu,
                  "rest_core_s_per_track": cpu - decode - sum(alone.values()),
                  "streams": engine.streams, "threads_per_session": models[0].threads,
                  "per_model": {k: {"windows_per_track": v["windows"] / len(files),
                                    "ms_per_window": 1000 * v["seconds"] / max(v["windows"], 1),
                                    "s_per_track": v["seconds"] / len(files)} for k, v in engine.per_model.items()}}))
"""


def scan_seconds(files: list[Path], extra: list[str]) -> tuple[float, float]:
    """Wall seconds of a fresh `tagger scan --no-write` process over ``files``, and its peak RSS in MB."""
    with tempfile.TemporaryDirectory() as td:
        lib = Path(td) / "lib"
        lib.mkdir()
        for f in files:
            os.symlink(f.resolve(), lib / f.name)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", SCAN, "scan", str(lib), "--no-write", "--database", f"{td}/db",
                              *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t
    rss = [int(line.split()[1]) for line in out.stderr.splitlines() if line.startswith("peak_rss_kb")]
    return wall, rss[-1] / 1024 if rss else float("nan")


def stages(files: list[Path]) -> dict:
    """Where a track's time goes in the default scan, in core seconds per track: the decoder alone; resampling
    to every model rate plus the 16-kHz fingerprint; windowing (and region reads where they apply); each model's
    inference alone on one core; then the scan itself (wall and CPU, each model's seconds of one stream sharing
    the cores) and the rest (what the scan's CPU holds beyond decoding and inference: the engine's Python,
    contention)."""
    out = subprocess.run([sys.executable, "-c", STAGES, *map(str, files)], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def audio_seconds(files: list[Path]) -> float:
    import av

    total = 0.0
    for f in files:
        with av.open(str(f)) as c:
            total += float(c.duration or 0) / 1e6
    return total


def per_file(py: str, name: str, files: list[Path], rounds: int) -> dict:
    """One corpus: ``rounds`` alternating rounds of the original extractor and each scan, medians."""
    n = len(files)
    # One round = the original extractor once over every file, then each scan once; rounds alternate, so a
    # drift of the machine (up to 10 % here) falls on both sides, and the figures are medians of the rounds.
    configs = {"default": [], "default_float": ["--model-precision", "float"],
               "alike": ["--model", "musicnn-msd", "--max-windows", "0"], "alone": ["--model", "musicnn-msd"]}
    runs: dict[str, list[float]] = {"original": [], **{k: [] for k in configs}}
    steady: list[float] = []  # the original without its first file (TensorFlow's import and librosa's JIT)
    rss: dict[str, float] = {}
    for _ in range(rounds):
        orig = original(py, "files", *map(str, files))["seconds_per_file"]
        runs["original"].append(sum(orig.values()) / n)
        steady.append(sum(list(orig.values())[1:]) / max(n - 1, 1))
        for key, extra in configs.items():
            wall, mb = scan_seconds(files, extra)
            runs[key].append(wall / n)
            rss[key] = max(rss.get(key, 0.0), mb)
    med = {k: statistics.median(v) for k, v in runs.items()}
    per_orig, default, default_float, alike, alone = (med[k] for k in ("original", *configs))
    seconds = audio_seconds(files)
    res = {"tracks": n, "seconds_of_audio": round(seconds, 1), "rounds": rounds,
           "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
           "original_extractor": round(per_orig, 2),
           "tagger_scan_default": round(default, 2), "tagger_scan_default_float": round(default_float, 2),
           "tagger_scan_musicnn_msd_all_windows": round(alike, 2),
           "tagger_scan_musicnn_msd_default_windows": round(alone, 2),
           "speedup_default": round(per_orig / default, 2),
           "speedup_default_float": round(per_orig / default_float, 2),
           "speedup_like_for_like": round(per_orig / alike, 2),
           "speedup_musicnn_msd_default_windows": round(per_orig / alone, 2),
           "speedup_default_per_round": [round(o / d, 2) for o, d in zip(runs["original"], runs["default"])],
           # Both sides above pay their process's one-time costs once per corpus; this ratio gives the original
           # its steady state (every file after the first) against the whole default scan, start-up included.
           "original_after_first_file": round(statistics.median(steady), 2),
           "speedup_default_against_original_after_first_file": round(statistics.median(steady) / default, 2),
           "default_tracks_per_min": round(60 / default, 1),
           "default_realtime_factor": round(seconds / n / default, 1),
           "peak_rss_mb": {k: round(v) for k, v in rss.items()},
           "stages": stages(files)}
    print(f"{name}: per file ({n} tracks, {seconds / n:.0f} s each, medians of {rounds} rounds): original "
          f"{per_orig:.2f} s; tagger scan default {default:.2f} s ({per_orig / default:.2f}x; rounds "
          f"{res['speedup_default_per_round']}; {res['default_tracks_per_min']} tracks/min, "
          f"{res['default_realtime_factor']}x realtime, peak RSS {res['peak_rss_mb']['default']} MB; against the "
          f"original's files after its first {res['speedup_default_against_original_after_first_file']}x), in float "
          f"{default_float:.2f} s ({per_orig / default_float:.2f}x); musicnn-msd every window {alike:.2f} s "
          f"({per_orig / alike:.2f}x), with the default bound {alone:.2f} s ({per_orig / alone:.2f}x)")
    print(f"{name}: stages per track: {json.dumps(res['stages'])}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--original-python", required=True, help="python of an environment from setup_original.sh")
    ap.add_argument("--corpus", action="append", default=[], metavar="NAME=FOLDER",
                    help="a named corpus of real tracks (repeat); each gets its own per-file comparison")
    ap.add_argument("files", nargs="*", type=Path, help="tracks of one more corpus, named 'files'")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-window", action="store_true", help="only the per-file comparisons")
    ap.add_argument("--stages-only", action="store_true",
                    help="only the per-stage breakdown, merged into the saved results of an earlier full run")
    args = ap.parse_args()
    corpora: dict[str, list[Path]] = {}
    for spec in args.corpus:
        name, _, folder = spec.partition("=")
        corpora[name] = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO)
    if args.files:
        corpora["files"] = list(args.files)
    from bench.common import machine

    m = machine()
    print(f"CPU: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['isa'])}; onnxruntime {m['onnxruntime']}; {m['date']}")
    py = args.original_python
    if args.stages_only:
        saved = json.loads((HERE / "results" / "original.json").read_text())
        for name, files in corpora.items():
            saved["per_file_s"][name]["stages"] = stages(files)
            print(f"{name}: stages per track: {json.dumps(saved['per_file_s'][name]['stages'])}")
        saved.pop("machine", None)
        print("wrote", save("original", saved))
        return
    out: dict = {"per_window_ms": {}, "per_file_s": {}}
    threads = os.cpu_count() or 1
    for batch in () if args.skip_window else (1, 8):
        tf_ms, fp_ms, q_ms, s_ms = [], [], [], []
        for _ in range(args.rounds):
            tf_ms.append(original(py, "window", "--batch", str(batch))["ms_per_window"])
            fp_ms.append(ms_per_window("musicnn-msd", threads, batch)[0])
            q_ms.append(ms_per_window("musicnn-msd", threads, batch, precision="int8")[0])
            s_ms.append(ms_per_window("musicnn-msd", 1, batch, precision="int8", streams=threads)[0])
        a, b, c, d = (statistics.median(x) for x in (tf_ms, fp_ms, q_ms, s_ms))
        out["per_window_ms"][f"batch {batch}"] = {"original_tensorflow": round(a, 2), "tagger_float": round(b, 2),
                                                  "tagger_int8": round(c, 2),
                                                  "tagger_int8_one_session_per_core": round(d, 2),
                                                  "speedup_float": round(a / b, 2), "speedup_int8": round(a / c, 2),
                                                  "speedup_int8_one_session_per_core": round(a / d, 2)}
        print(f"musicnn-msd per window, batch {batch}: original {a:.1f} ms, ours float {b:.1f} ms ({a / b:.2f}x), "
              f"int8 {c:.1f} ms ({a / c:.2f}x); int8 with one single-threaded session per core (as a scan runs "
              f"it) {d:.1f} ms per window of throughput ({a / d:.2f}x)")
    out["tensorflow"] = original(py, "window", "--runs", "3")["tensorflow"]
    for name, files in corpora.items():
        out["per_file_s"][name] = per_file(py, name, files, args.rounds)
    print("wrote", save("original", out))


if __name__ == "__main__":
    main()
