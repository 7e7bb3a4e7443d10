#!/usr/bin/env bash
# Builds the training images with BuildKit, offline-safe: the Debian base is
# made locally when the engine lacks it (docker/base-image.sh), nothing is
# pulled, and the machine's extra CA certificates (Debian's local CA folder,
# for proxies that intercept TLS) reach the build stages as a BuildKit secret
# only, never a layer of an image.
#
#   docker/build-images.sh [cpu] [gpu]       (default: both, CPU first: the GPU
#                                            build reuses its build stages)
#
# Without a running engine it starts one (docker/engine.sh start, which
# installs Debian's docker.io when missing; `docker/engine.sh stop` stops it).
# DOCKER: the client (default: docker/engine.sh client). SAGEFIT_IMAGE_CPU and
# SAGEFIT_IMAGE_GPU: the tags (default sagefit:cpu, sagefit:gpu).
# SAGEFIT_EXTRA_CA_DIR: the folder of extra certificates (default
# /usr/local/share/ca-certificates). Build logs go to .cache/images/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
docker=${DOCKER:-$(docker/engine.sh client)}
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(cpu gpu)
logs=$root/.cache/images
mkdir -p "$logs"

say() { echo "docker/build-images.sh: $*" >&2; }

if ! "$docker" version > /dev/null 2>&1; then
  say "no Docker engine answers $docker: starting one (docker/engine.sh start; docker/engine.sh stop stops it)"
  docker=$(docker/engine.sh start)
fi
docker/base-image.sh "$docker"

# The extra CA certificates, one PEM bundle, outside the build context.
ca_dir=${SAGEFIT_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
ca=$logs/extra-ca.pem
: > "$ca"
chmod 600 "$ca"
if [ -d "$ca_dir" ]; then
  find "$ca_dir" -type f -name '*.crt' -print0 | sort -z | xargs -0 -r cat >> "$ca"
fi
secret=()
if [ -s "$ca" ]; then
  secret=(--secret "id=extra-ca,src=$ca")
  say "$(grep -c 'BEGIN CERTIFICATE' "$ca") extra CA certificate(s) from $ca_dir go to the build stages as a secret"
fi

goproxy=${GOPROXY:-}
if [ -z "$goproxy" ] && command -v go > /dev/null; then goproxy=$(go env GOPROXY); fi

for kind in "${kinds[@]}"; do
  case "$kind" in
    cpu) tag=${SAGEFIT_IMAGE_CPU:-sagefit:cpu} ;;
    gpu) tag=${SAGEFIT_IMAGE_GPU:-sagefit:gpu} ;;
    *) say "unknown image $kind (cpu or gpu)"; exit 2 ;;
  esac
  log=$logs/build-$kind.log
  say "building $tag from docker/Dockerfile.$kind (log: $log)"
  start=$SECONDS
  old=$("$docker" image inspect --format '{{.Id}}' "$tag" 2> /dev/null || true)
  args=(build --progress=plain -f "docker/Dockerfile.$kind" -t "$tag" "${secret[@]}")
  [ -n "$goproxy" ] && args+=(--build-arg "GOPROXY=$goproxy")
  if ! DOCKER_BUILDKIT=1 "$docker" "${args[@]}" . > "$log" 2>&1; then
    tail -40 "$log" >&2
    say "building $tag failed (log: $log)"
    exit 1
  fi
  size=$("$docker" image inspect --format '{{.Size}}' "$tag")
  say "built $tag in $((SECONDS - start)) s: $((size / 1000000)) MB"
  # The image the tag named before, and build cache past 20 GB: kept, a
  # day of `make test` runs filled this machine's disk (55 GB, the next
  # build failing on "no space left on device"). A removal that fails (an
  # image in use) is left for later.
  if [ -n "$old" ] && [ "$old" != "$("$docker" image inspect --format '{{.Id}}' "$tag")" ]; then
    "$docker" image rm "$old" > /dev/null 2>&1 || true
  fi
done
"$docker" builder prune -f --keep-storage 20GB > /dev/null 2>&1 || true
