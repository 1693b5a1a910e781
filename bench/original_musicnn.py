"""Runs inside an environment with the ORIGINAL musicnn 0.1.0 on TensorFlow (see bench/setup_original.sh);
bench/bench_original.py calls it and compares. Prints one JSON object.

    python original_musicnn.py window --model MSD_musicnn --runs 50 [--batch 1]
    python original_musicnn.py files FILE... --model MSD_musicnn

``window``: the model's graph built and restored once (as the extractor does), then ``sess.run`` on one batch of
log-mel windows (187 x 96), the median per window; the mel spectrogram is not included (it is librosa's, outside
the graph). ``files``: the extractor as the musicnn CLI uses it, per file (load, log-mel, graph build and restore,
every window), wall seconds per file.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # musicnn 0.1.0 uses tf.compat.v1.layers
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def window(model: str, runs: int, batch: int) -> dict:
    import numpy as np
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    n_frames = 187
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        out = models.define_model(x, is_training, model, len(config.MSD_LABELS if "MSD" in model else config.MTT_LABELS))
        y = tf.nn.sigmoid(out[0])
    sess = tf.compat.v1.Session()
    sess.run(tf.compat.v1.global_variables_initializer())
    import musicnn

    tf.compat.v1.train.Saver().restore(sess, os.path.dirname(musicnn.__file__) + "/" + model + "/")
    feed = np.random.default_rng(0).standard_normal((batch, n_frames, config.N_MELS)).astype(np.float32)
    for _ in range(5):
        sess.run(y, feed_dict={x: feed, is_training: False})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(y, feed_dict={x: feed, is_training: False})
        times.append((time.perf_counter() - t) / batch)
    return {"model": model, "batch": batch, "ms_per_window": 1000 * statistics.median(times),
            "tensorflow": tf.__version__}


def files(paths: list[str], model: str) -> dict:
    import contextlib
    import io

    from musicnn.extractor import extractor

    per = {}
    for p in paths:
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            extractor(p, model=model, extract_features=True)
        per[p] = time.perf_counter() - t
    return {"model": model, "seconds_per_file": per}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    w = sub.add_parser("window")
    w.add_argument("--model", default="MSD_musicnn")
    w.add_argument("--runs", type=int, default=50)
    w.add_argument("--batch", type=int, default=1)
    f = sub.add_parser("files")
    f.add_argument("paths", nargs="+")
    f.add_argument("--model", default="MSD_musicnn")
    args = ap.parse_args()
    out = window(args.model, args.runs, args.batch) if args.what == "window" else files(args.paths, args.model)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
