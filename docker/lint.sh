#!/usr/bin/env bash
# Lints the training images: hadolint (with its built-in ShellCheck for RUN
# lines) on both Dockerfiles, ShellCheck on docker/*.sh and
# scripts/test-images.sh. Installs the pinned
# linters (docker/lint-requirements.txt, hash-checked wheels that ship the
# binaries) into .cache/docker-lint once. Usage: docker/lint.sh [PYTHON]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${1:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
tools=.cache/docker-lint
hadolint=$tools/bin/hadolint
shellcheck=$tools/bin/shellcheck

installed() {
  [ -x "$hadolint" ] && [ -x "$shellcheck" ] &&
    "$hadolint" --version | grep -q ' 2\.15\.1$' &&
    "$shellcheck" --version | grep -q '^version: 0\.11\.0$'
}
if ! installed; then
  rm -rf "$tools"
  "$python" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r docker/lint-requirements.txt --target "$tools"
  installed || { echo "docker/lint.sh: the linters did not install into $tools" >&2; exit 1; }
fi

"$hadolint" --config docker/hadolint.yaml docker/Dockerfile.cpu docker/Dockerfile.gpu
"$shellcheck" docker/*.sh scripts/test-images.sh
echo "docker/lint.sh: hadolint $("$hadolint" --version | awk '{print $NF}') and shellcheck $("$shellcheck" --version | awk '/^version:/ {print $2}'): Dockerfile.cpu, Dockerfile.gpu, $(cd docker && echo *.sh), scripts/test-images.sh clean"
