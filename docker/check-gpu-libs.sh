#!/bin/sh
# Checks that every CUDA library TensorFlow loads resolves in this image.
# TensorFlow does not fail when one is missing: it logs "Cannot dlopen some
# GPU libraries" and trains on the CPU. Dockerfile.gpu runs this at build
# time; it stays in the image as /opt/sagefit/bin/check-gpu-libs:
#   docker run --rm --entrypoint check-gpu-libs IMAGE
#
# What TensorFlow loads is read from its own libraries, not from a list: the
# loaders it has (tsl's DsoLoader::Get<Name>DsoHandle) and the stubs that
# dlopen a library on first use (<name>_stub.cc). Each must resolve through
# the loader's cache (ldconfig -p: /etc/ld.so.conf.d/sagefit-cuda.conf names
# the wheels' folders), and so must every library those need; libcuda.so.1
# and libnvidia-ml.so.1 are the host driver's, which the NVIDIA container
# runtime mounts when the job starts. Every library of the NVIDIA wheels must
# resolve too (cuDNN dlopens its own parts and NVRTC by name).
set -eu
tflibs=${SAGEFIT_TF_LIBS:-/opt/sagefit/lib/libtensorflow_cc.so.2 /opt/sagefit/lib/libtensorflow_framework.so.2}
nvidia=${SAGEFIT_NVIDIA_DIR:-/opt/sagefit/nvidia}
driver="libcuda.so.1 libnvidia-ml.so.1"

say() { echo "check-gpu-libs: $*"; }

# shellcheck disable=SC2086 # tflibs is a list of paths
names=$( (grep -aoE '_ZN3tsl8internal9DsoLoader[0-9]+Get[A-Za-z]+DsoHandle' $tflibs |
  sed -E 's/.*DsoLoader[0-9]+Get([A-Za-z]+)DsoHandle/\1/'
grep -aoE '_GLOBAL__sub_I_[A-Za-z0-9_]+_stub\.cc' $tflibs |
  sed -E 's/.*_GLOBAL__sub_I_([A-Za-z0-9_]+)_stub\.cc/stub:\1/') | sort -u)
[ -n "$names" ] || { say "found no library loaders in $tflibs" >&2; exit 1; }

cache=$(ldconfig -p)
# resolve prints the file the loader's cache has for lib<base>.so.<major>.
resolve() {
  echo "$cache" | awk -v re="^lib$1[.]so[.][0-9]+$" '$1 ~ re && $NF ~ /^\// { print $1 " " $NF; exit }'
}

missing=""
for n in $names; do
  lib=""
  case "$n" in
    CudaRuntime | stub:cudart) lib=cudart ;;
    Cublas | stub:cublas) lib=cublas ;;
    CublasLt | stub:cublasLt) lib=cublasLt ;;
    Cufft | stub:cufft) lib=cufft ;;
    Cusolver | stub:cusolver) lib=cusolver ;;
    Cusparse | stub:cusparse) lib=cusparse ;;
    Cudnn | stub:cudnn) lib=cudnn ;;
    Nccl | stub:nccl) lib=nccl ;;
    Cupti | stub:cupti | stub:cupti_pm_sampler) lib=cupti ;;
    stub:nvjitlink) lib=nvJitLink ;;
    CudaDriver | stub:cuda) say "libcuda.so.1: the host's driver, at run time ($n)"; continue ;;
    Nvml | stub:nvml) say "libnvidia-ml.so.1: the host's driver, at run time ($n)"; continue ;;
    NvInfer | NvInferPlugin) say "TensorRT ($n): optional, not in tensorflow[and-cuda], not installed"; continue ;;
    Nvshmem | stub:nvshmem) say "NVSHMEM ($n): optional (XLA with --xla_gpu_experimental_enable_nvshmem), not installed"; continue ;;
    stub:ptx_compiler) say "libnvptxcompiler ($n): linked into TensorFlow or not used; XLA falls back to ptxas on PATH"; continue ;;
    stub:gpu_collectives) say "gpu_collectives ($n): not a library"; continue ;;
    Hip | Hipfft | Hipblaslt | Hipsparse | Miopen | Rocblas | Rocrand | Rocsolver | Roctracer) say "ROCm ($n): AMD GPUs only, not installed"; continue ;;
    *)
      say "TensorFlow loads $n, which this script does not know: add it to docker/check-gpu-libs.sh" >&2
      exit 1
      ;;
  esac
  found=$(resolve "$lib")
  if [ -z "$found" ]; then
    missing="$missing lib$lib.so ($n)"
    continue
  fi
  say "${found% *} -> ${found#* } ($n)"
done

# Every library of the wheels (and so what the ones above need) resolves by
# its soname, and needs nothing that is missing but the driver.
for f in "$nvidia"/*/lib/*.so*; do
  [ -f "$f" ] || continue
  base=$(basename "$f")
  echo "$cache" | awk -v so="$base" '$1 == so { found = 1 } END { exit !found }' ||
    missing="$missing $base (not in the loader's cache)"
  for dep in $(ldd "$f" 2> /dev/null | awk '/not found/ { print $1 }'); do
    case " $driver " in *" $dep "*) continue ;; esac
    missing="$missing $dep (needed by $base)"
  done
done

if [ -n "$missing" ]; then
  say "missing:$missing; TensorFlow would train on the CPU" >&2
  exit 1
fi
cudnn_h=$nvidia/cudnn/include/cudnn_version.h
if [ -f "$cudnn_h" ]; then
  v=$(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) / { printf "%s%s", sep, $3; sep = "." }' "$cudnn_h")
  say "cuDNN $v"
fi
say "ok"
