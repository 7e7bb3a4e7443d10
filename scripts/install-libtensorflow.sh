#!/usr/bin/env bash
# Installs the pinned TensorFlow wheel (and the exporter, and what the tests use)
# into a virtualenv, and lays out lib/ so cgo links against the wheel's
# libtensorflow_cc.so.2 (which exports the C API) and finds its headers.
# The Docker images run this same script. Usage: install-libtensorflow.sh PYTHON VENV LIBDIR
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
lib=${3:-lib}
here=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/python/requirements.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$here/python"

tf=$("$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("tensorflow")
print(os.path.dirname(spec.origin))
PY
)
for f in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
  [ -f "$tf/$f" ] || { echo "install-libtensorflow: $tf/$f is missing from the TensorFlow wheel" >&2; exit 1; }
done
# The C API must be exported by the wheel's library, or cgo links but the
# binary cannot load a SavedModel.
syms=$(nm -D --defined-only "$tf/libtensorflow_cc.so.2")
for sym in TF_NewSession TF_LoadSessionFromSavedModel TF_SessionRun; do
  grep -w "$sym" <<<"$syms" >/dev/null ||
    { echo "install-libtensorflow: $tf/libtensorflow_cc.so.2 does not export $sym" >&2; exit 1; }
done
mkdir -p "$lib"
ln -sfn "$tf/libtensorflow_cc.so.2" "$lib/libtensorflow_cc.so.2"
ln -sfn "$tf/libtensorflow_framework.so.2" "$lib/libtensorflow_framework.so.2"
# The galeone bindings link -ltensorflow.
ln -sfn "$tf/libtensorflow_cc.so.2" "$lib/libtensorflow.so"
ln -sfn "$tf/include" "$lib/include"
echo "libtensorflow from $tf ($(basename "$(dirname "$tf")"))"
