#!/usr/bin/env bash
# Single-host throughput, sagefit against Keras model.fit on this machine;
# updates the table in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
.venv/bin/python -m sagefit.bench --sagefit bin/sagefit --markdown BENCHMARKS.md "$@"
