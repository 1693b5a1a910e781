"""musicnn-msd per window with and without another process busy on one core, for 1 and 2 onnxruntime threads.

    python bench/bench_contention.py

A home server is rarely idle. The sessions never spin idle threads (``allow_spinning=0``), so a busy core slows
a two-thread session down instead of stalling it; the table shows by how much, against one thread.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ms_per_window, save  # noqa: E402


def main() -> None:
    out = {}
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(0.5)
            for threads in (1, 2):
                med, p90 = ms_per_window("musicnn-msd", threads, runs=60)
                key = f"{'one core busy' if busy else 'idle'}, {threads} thread(s)"
                out[key] = {"median_ms": round(med, 1), "p90_ms": round(p90, 1)}
                print(f"{key:<28} median {med:5.1f} ms   p90 {p90:5.1f} ms")
        finally:
            if hog is not None:
                hog.kill()
    print("wrote", save("contention", out))


if __name__ == "__main__":
    main()
