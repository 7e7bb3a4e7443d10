#!/bin/sh
# Checks that the CUDA libraries TensorFlow 2.21 dlopens at start are in this
# image, and that cuDNN is new enough. TensorFlow does not fail when one is
# missing: it logs "Cannot dlopen some GPU libraries" and trains on the CPU.
# Dockerfile.gpu runs this at build time; it is kept in the image as
# /opt/sagefit/bin/check-gpu-libs for diagnosing a job:
#   docker run --rm --entrypoint check-gpu-libs IMAGE
set -eu

# The sonames of the CUDA 12 / cuDNN 9 build (tensorflow's build_info:
# cuda_version 12.5.1, cudnn_version 9; its [and-cuda] extra wants cuDNN >= 9.3).
libs="libcudart.so.12 libcublas.so.12 libcublasLt.so.12 libcufft.so.11 libcusolver.so.11 libcusparse.so.12 libcudnn.so.9"
cudnn_min_minor=3

# where prints the file the dynamic loader finds for a soname: the
# LD_LIBRARY_PATH folders first, then the ld.so cache.
where() {
  old_ifs=$IFS
  IFS=:
  for d in ${LD_LIBRARY_PATH:-}; do
    if [ -n "$d" ] && [ -e "$d/$1" ]; then
      IFS=$old_ifs
      echo "$d/$1"
      return 0
    fi
  done
  IFS=$old_ifs
  ldconfig -p | awk -v so="$1" '$1 == so { print $NF; found = 1; exit } END { exit !found }'
}

missing=""
for so in $libs; do
  if path=$(where "$so"); then
    echo "check-gpu-libs: $so -> $(readlink -f "$path")"
  else
    missing="$missing $so"
  fi
done
if [ -n "$missing" ]; then
  echo "check-gpu-libs: missing:$missing (TensorFlow would train on the CPU); use an nvidia/cuda 12.x cudnn-runtime base image" >&2
  exit 1
fi

cudnn=$(readlink -f "$(where libcudnn.so.9)")
minor=$(echo "$cudnn" | sed -n 's/.*libcudnn\.so\.9\.\([0-9][0-9]*\).*/\1/p')
if [ -z "$minor" ] || [ "$minor" -lt "$cudnn_min_minor" ]; then
  echo "check-gpu-libs: $cudnn is older than cuDNN 9.$cudnn_min_minor, which TensorFlow 2.21 was built with (it refuses an older minor version); use a newer nvidia/cuda 12.x cudnn-runtime tag" >&2
  exit 1
fi
echo "check-gpu-libs: ok (cuDNN 9.$minor)"
