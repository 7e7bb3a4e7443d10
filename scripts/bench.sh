#!/usr/bin/env bash
# Single-host training against Keras model.fit at its fastest
# (steps_per_execution, jit_compile), sagefit's overhead per step over the
# graph's own limit, and start-up to the first step; updates the bench,
# steplimit, prefetch and startup sections of BENCHMARKS.md. Raw results in
# .bench/bench/results.json.
#
#   scripts/bench.sh [--rows seed-32,cnn] [--rounds N] ...
#   (options: .venv/bin/python -m sagefit.bench --help)
#   BENCH_QUICK=1 scripts/bench.sh    one round, K=32 only, one start-up round
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
GO=${GO:-go}
if [ -z "${CGO_LDFLAGS:-}" ]; then
	eval "$(make -s env)" # the cgo flags for model/tf, as make sets them
	export CGO_CFLAGS CGO_LDFLAGS
fi
mkdir -p .bench
# The graph's own limit: BenchmarkStepLimit and BenchmarkTrainStepCall.
"$GO" test -c -o .bench/tf.test ./model/tf
args=()
if [ -n "${BENCH_QUICK:-}" ]; then
	args+=(--quick)
fi
.venv/bin/python -m sagefit.bench --sagefit bin/sagefit --steplimit .bench/tf.test \
	--markdown BENCHMARKS.md --out .bench/bench "${args[@]}" "$@"
