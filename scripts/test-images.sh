#!/usr/bin/env bash
# make test-images: the training images, built and run for real.
#
# Installs what is missing (Debian's Docker engine and tools, through
# docker/engine.sh), starts dockerd when no engine answers (and stops it at
# the end), makes the Debian base offline when the engine lacks it, builds
# sagefit:cpu and sagefit:gpu (docker/build-images.sh: nothing pulled, the
# machine's extra CA certificates only as a build secret), installs the
# SageMaker Python SDK into its own virtualenv (.cache/sagemaker-sdk, from
# docker/sdk-requirements.txt), then runs the tests that need the images:
# ./docker (the built images, the GPU image's libraries, the SDK's local
# mode) and cmd/sagefit's TestLocalImage* (sagefit local --image).
#
#   scripts/test-images.sh [PYTHON]      (as root; PYTHON makes the SDK's virtualenv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${1:-python3}
start=$SECONDS
say() { echo "test-images: $*" >&2; }
took() { say "$1 after $((SECONDS - start)) s"; }

DOCKER=$(docker/engine.sh start)
export DOCKER
trap 'docker/engine.sh stop' EXIT
took "engine ready ($DOCKER)"

export SAGEFIT_IMAGE_CPU=${SAGEFIT_IMAGE_CPU:-sagefit:cpu} SAGEFIT_IMAGE_GPU=${SAGEFIT_IMAGE_GPU:-sagefit:gpu}
docker/build-images.sh cpu gpu
took "images built"

sdk=.cache/sagemaker-sdk
if [ ! -x "$sdk/bin/python" ] || ! cmp -s docker/sdk-requirements.txt "$sdk/sagefit-requirements.txt"; then
  say "installing the SageMaker Python SDK into $sdk"
  rm -rf "$sdk"
  "$python" -m venv "$sdk"
  "$sdk/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r docker/sdk-requirements.txt
  cp docker/sdk-requirements.txt "$sdk/sagefit-requirements.txt"
  took "SDK installed"
fi
SAGEFIT_SDK_PYTHON=$root/$sdk/bin/python
export SAGEFIT_SDK_PYTHON

go=${GO:-go}
"$go" test -count=1 -timeout 40m ./docker/
"$go" test -count=1 -timeout 20m -run 'TestLocalImage' ./cmd/sagefit/
took "make test-images passed"
