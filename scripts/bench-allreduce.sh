#!/usr/bin/env bash
# Gradient all-reduce bus bandwidth: sagefit's gRPC ring against TensorFlow's
# CollectiveAllReduce (MultiWorkerMirroredStrategy, RING), a bare ring (the
# yardstick for any ring here) and the raw TCP bound, n = 2, 3, 4 ranks as
# separate processes on loopback, plus (as root,
# with iproute2) a run between network namespaces over 1 Gbit/s links shaped
# with tc. Updates the allreduce section of BENCHMARKS.md and
# docs/allreduce.png; raw results in .bench/allreduce/results.json.
#
#   scripts/bench-allreduce.sh [--rounds N] [--ranks 2,3] [--netns off] ...
#   (options: .venv/bin/python -m sagefit.bench_allreduce --help)
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
GO=${GO:-go}
mkdir -p .bench
# The distributed package is pure Go: no cgo flags needed.
CGO_ENABLED=0 "$GO" test -c -o .bench/distributed.test ./distributed
CGO_ENABLED=0 "$GO" build -o .bench/allreduceplot ./distributed/internal/allreduceplot
.venv/bin/python -m sagefit.bench_allreduce \
	--helper .bench/distributed.test --plot .bench/allreduceplot \
	--png docs/allreduce.png --markdown BENCHMARKS.md --out .bench/allreduce "$@"
