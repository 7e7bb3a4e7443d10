#!/usr/bin/env bash
# The seed article's Example 3 end to end, the sagefit way: export a compiled
# Keras model, train it for 10 epochs in Go through the SageMaker contract in
# a temporary base dir, and show that the result serves.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/sagefit-demo.XXXXXX")
# Python's TensorFlow quiet unless asked otherwise; sagefit gets the level
# only where the caller set one (unset, it quiets TensorFlow's start-up
# lines itself, which the level alone does not all keep out).
py() { TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} .venv/bin/python "$@"; }

echo "== export (Python, once)"
py python/examples/seed_example3.py "$work"

echo "== train on one host (Go, SageMaker contract under $work/job)"
bin/sagefit local --model "$work/model" --channel "training=$work/data" \
  --hp epochs=10 --hp batch_size=32 --output "$work/job"

echo "== the trained model serves (tf.saved_model.load, serving_default)"
py - "$work/job/model/1" "$work/data/train.npy" <<'PY'
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
serve = m.signatures["serving_default"]
x = np.load(sys.argv[2])[:3]
(key,) = serve.structured_input_signature[1].keys()
print("predictions for 3 rows:", {k: v.numpy().ravel().round(4).tolist() for k, v in serve(**{key: tf.constant(x)}).items()})
PY

echo "== the seed's Example 2: the same model on 2 hosts (processes algo-1, algo-2 on loopback)"
bin/sagefit local --hosts 2 --model "$work/model" --channel "training=$work/data" \
  --hp epochs=10 --hp batch_size=16 --output "$work/job2"

echo
echo "model:   $work/job/model/1 (TF Serving layout; 2 hosts: $work/job2/algo-1/model/1)"
echo "history: $work/job/output/data/history.json"
echo "plot:    $work/job/output/data/loss.png"
