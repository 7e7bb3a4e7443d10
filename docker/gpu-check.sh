#!/usr/bin/env bash
# GPU check: run it whenever a machine with an NVIDIA GPU is at hand.
#
# Trains the seed MLP and the small CNN with `sagefit local`, checks with
# log_device_placement=true that the train step was placed on GPU:0, and
# measures examples/s on the GPU against the same binary with the GPUs hidden
# (CUDA_VISIBLE_DEVICES=""), from output/data/timing.json; on a machine with
# several GPUs, also one process per GPU (sagefit_processes_per_host=auto)
# against one process on one GPU. Prints a section to paste into
# BENCHMARKS.md (and writes it to WORK/gpu-check.md).
#
#   docker/gpu-check.sh                      bin/sagefit of the set-up (`make build`)
#   docker/gpu-check.sh --image sagefit:gpu  the binary inside the GPU image (docker run --gpus all),
#                                            as docker/build-images.sh gpu builds it: never pulled;
#                                            its check-gpu-libs runs first
#   docker/gpu-check.sh --dry-run-on-cpu     the whole procedure on a machine without a GPU,
#                                            expecting CPU:0 (checks the script, measures nothing)
#
# Options: --epochs N (default 4; the first, which includes tracing, is not
# averaged), --batches "32 256" (batch sizes), --processes N (processes for
# the one-per-GPU run; default: the GPU count, the run skipped below 2),
# --keep (keep WORK).
# The fixtures are made with the set-up's Python (.venv). Without a CUDA 12
# and cuDNN >= 9.3 on the machine, TensorFlow cannot use the GPU outside the
# image: see docker/README.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."

image="" dry=0 epochs=4 batches="32 256" keep=0 procs=
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --dry-run-on-cpu) dry=1; shift ;;
    --epochs) epochs=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --processes) procs=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$epochs" -lt 2 ]; then
  echo "gpu-check: --epochs must be 2 or more (the first epoch is not averaged)" >&2
  exit 2
fi
device=GPU:0
[ "$dry" = 1 ] && device=CPU:0

py=.venv/bin/python
[ -x "$py" ] || { echo "gpu-check: no .venv; run \`make build\` first" >&2; exit 1; }
if [ -z "$image" ] && [ ! -x bin/sagefit ]; then
  echo "gpu-check: no bin/sagefit; run \`make build\` first" >&2
  exit 1
fi
docker=${DOCKER:-docker}
if [ -n "$image" ]; then
  if ! "$docker" image inspect "$image" > /dev/null 2>&1; then
    echo "gpu-check: no image $image on this machine's Docker engine; build it with docker/build-images.sh gpu (nothing is pulled)" >&2
    exit 1
  fi
  echo "== check-gpu-libs in $image"
  "$docker" run --rm --pull=never --network none --entrypoint check-gpu-libs "$image"
fi

gpus=0
if command -v nvidia-smi > /dev/null; then
  gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true)
fi
if [ "$dry" = 0 ] && [ "$gpus" = 0 ]; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi -L lists none); --dry-run-on-cpu runs the procedure anyway" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sagefit-gpu-check.XXXXXX")
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT

# Outside the image, TensorFlow finds CUDA and cuDNN on the loader's path: the
# system's, or the nvidia-* wheels of `pip install tensorflow[and-cuda]` in .venv.
if [ -z "$image" ]; then
  for d in .venv/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$PWD/$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
fi

# sagefit ON_GPU ARGS...: the binary, with the GPUs visible (1) or hidden (0).
sagefit() {
  local on_gpu=$1
  shift
  if [ -n "$image" ]; then
    local gpu_flags=()
    [ "$on_gpu" = 1 ] && gpu_flags=(--gpus all)
    "$docker" run --rm --pull=never "${gpu_flags[@]}" -v "$work:$work" -e TF_CPP_MIN_LOG_LEVEL \
      --entrypoint /opt/sagefit/bin/sagefit "$image" "$@"
  elif [ "$on_gpu" = 1 ]; then
    bin/sagefit "$@"
  else
    CUDA_VISIBLE_DEVICES="" bin/sagefit "$@"
  fi
}

echo "== fixtures (seed MLP 32000 rows, CNN 4096 rows) in $work"
TF_CPP_MIN_LOG_LEVEL=3 "$py" -m sagefit.testing seed "$work/seed" --no-fit --rows 32000 --no-validation > /dev/null
TF_CPP_MIN_LOG_LEVEL=3 "$py" -m sagefit.testing cnn "$work/cnn" --no-fit --rows 4096 --no-validation > /dev/null

# rate JOB: examples per second over the epochs after the first.
rate() {
  "$py" - "$1/output/data/timing.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
secs = t["epoch_seconds"][1:]
print(f"{t['examples'] / (sum(secs) / len(secs)):.0f}")
PY
}

fail=0
echo "== placement: the train step on $device (log_device_placement=true)"
for m in seed cnn; do
  log=$work/placement-$m.log
  TF_CPP_MIN_LOG_LEVEL=0 sagefit 1 local --model "$work/$m/model" --channel "training=$work/$m/train" \
    --hp epochs=1 --hp log_device_placement=true --hp sagefit_processes_per_host=1 --output "$work/place-$m" > "$log" 2>&1 ||
    { echo "gpu-check: $m: sagefit failed, see $log" >&2; tail -20 "$log" >&2; exit 1; }
  # TensorFlow prints each placement to stdout as "node: (Op): device" (and
  # logs it once more to stderr, prefixed, which these patterns skip).
  on=$(grep -cE "^[^ ]+: \(StatefulPartitionedCall\): .*device:$device\$" "$log" || true)
  all=$(grep -cE "^[^ ]+: \(StatefulPartitionedCall\): " "$log" || true)
  ops=$(grep -cE "^[^ ]+: \([A-Za-z0-9_]+\): .*device:$device\$" "$log" || true)
  echo "$m: $on of $all function calls (train, test, gradient steps...) and $ops ops in all placed on $device"
  if grep -q "Cannot dlopen some GPU libraries" "$log"; then
    echo "gpu-check: $m: TensorFlow could not load the CUDA libraries (see $log): it trained on the CPU" >&2
    grep -iE "dlopen|Could not load dynamic library" "$log" | head -10 >&2
    fail=1
  fi
  if [ "$on" = 0 ] || [ "$on" != "$all" ]; then
    echo "gpu-check: $m: not every function call was placed on $device:" >&2
    grep -E "^[^ ]+: \(StatefulPartitionedCall\): " "$log" | grep -v "device:$device\$" | head -5 >&2
    fail=1
  fi
done
[ "$fail" = 0 ] || exit 1

echo "== throughput: examples/s, $device against the CPU, epochs after the first averaged"
rows=()
for m in seed cnn; do
  for b in $batches; do
    for dev in gpu cpu; do
      on_gpu=1
      [ "$dev" = cpu ] && on_gpu=0
      TF_CPP_MIN_LOG_LEVEL=2 sagefit "$on_gpu" local --model "$work/$m/model" --channel "training=$work/$m/train" \
        --hp epochs="$epochs" --hp batch_size="$b" --hp sagefit_processes_per_host=1 \
        --output "$work/$m-$b-$dev" > "$work/$m-$b-$dev.log" 2>&1 ||
        { echo "gpu-check: $m batch $b on $dev failed, see $work/$m-$b-$dev.log" >&2; exit 1; }
    done
    g=$(rate "$work/$m-$b-gpu") c=$(rate "$work/$m-$b-cpu")
    n=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['examples'])" "$work/$m-$b-gpu/output/data/timing.json")
    rows+=("$(printf '| %s | %s | %s | %s | %s | %s | %s |' "$m" "$b" "$n" "$epochs" \
      "$("$py" -c "print(f'{int(\"$c\"):,}')")" "$("$py" -c "print(f'{int(\"$g\"):,}')")" \
      "$("$py" -c "print(f'{$g / $c:.2f}x')")")")
    echo "${rows[-1]}"
  done
done

multi=()
procs=${procs:-$gpus}
if [ "$procs" -ge 2 ]; then
  echo "== $procs processes, one per GPU, against one process on one GPU, same batch per process"
  b=${batches##* }
  for m in seed cnn; do
    log=$work/$m-$b-all.log
    TF_CPP_MIN_LOG_LEVEL=2 sagefit 1 local --model "$work/$m/model" --channel "training=$work/$m/train" \
      --hp epochs="$epochs" --hp batch_size="$b" --hp sagefit_processes_per_host="$procs" \
      --output "$work/$m-$b-all" > "$log" 2>&1 ||
      { echo "gpu-check: $m on all GPUs failed, see $log" >&2; exit 1; }
    grep -q "runs $procs training processes" "$log" ||
      { echo "gpu-check: $m: the host did not run one process per GPU, see $log" >&2; exit 1; }
    a=$(rate "$work/$m-$b-all") g=$(rate "$work/$m-$b-gpu")
    multi+=("$(printf '| %s | %s | %s | %s | %s |' "$m" "$b" "$("$py" -c "print(f'{int(\"$g\"):,}')")" \
      "$("$py" -c "print(f'{int(\"$a\"):,}')")" "$("$py" -c "print(f'{$a / $g:.2f}x')")")")
    echo "${multi[-1]}"
  done
fi

gpu_name="none (dry run on the CPU)"
if [ "$gpus" != 0 ]; then
  gpu_name="$gpus x $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1 | sed 's/, / /; s/, / driver /')"
fi
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
tf="?"
for d in .venv/lib/python3*/site-packages/tensorflow-*.dist-info; do
  [ -d "$d" ] && tf=${d##*/tensorflow-} && tf=${tf%.dist-info}
done
where="bin/sagefit of the set-up"
[ -n "$image" ] && where="the GPU image $image"
{
  echo "## GPU training: \`docker/gpu-check.sh\`"
  echo
  echo "sagefit (\`sagefit local\`, one process, TensorFlow's default placement: GPU:0)"
  echo "with the GPU against the same binary with the GPUs hidden (\`CUDA_VISIBLE_DEVICES=\`),"
  echo "same data, batch and epochs; the train step placed on $device (log_device_placement)."
  echo
  echo "Measured $(date +%Y-%m-%d) with $where on $gpu_name; $cpu, $(nproc) cores;"
  echo "TensorFlow $tf; shuffle on, epochs after the first averaged."
  [ "$dry" = 1 ] && echo "DRY RUN: no GPU, both columns ran on the CPU; not for BENCHMARKS.md."
  echo
  echo "| model | batch | examples/epoch | epochs | CPU ex/s | GPU ex/s | GPU / CPU |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if [ "${#multi[@]}" -gt 0 ]; then
    echo
    echo "One process per GPU (\`sagefit_processes_per_host\`, $procs processes, batch per process):"
    echo
    echo "| model | batch | 1 process ex/s | $procs processes ex/s | speed-up |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${multi[@]}"
  fi
} | tee "$work/gpu-check.md"
