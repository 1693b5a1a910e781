#!/usr/bin/env bash
# An environment with the ORIGINAL musicnn 0.1.0 on TensorFlow, for bench/bench_original.py (not a project
# dependency). musicnn 0.1.0 pins numpy<1.17, which no current TensorFlow accepts, so it is installed without
# its dependencies; it runs on TensorFlow 2 through tf.compat.v1 with the legacy Keras layers.
set -euo pipefail
ENV=${1:-/tmp/tagger-original-env}
python3 -m venv "$ENV"
"$ENV/bin/pip" install -q tensorflow-cpu tf_keras librosa
"$ENV/bin/pip" install -q --no-deps musicnn==0.1.0
echo "$ENV/bin/python"
