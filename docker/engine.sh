#!/usr/bin/env bash
# The Docker engine for building and testing the images on a Debian or
# Ubuntu machine, as root.
#
#   docker/engine.sh start   install what is missing (Debian's docker.io,
#                            containerd, runc, docker-compose, debootstrap,
#                            iptables) and start dockerd unless an engine
#                            already answers; prints the client to use
#   docker/engine.sh stop    stop the dockerd that `start` started (only that one)
#   docker/engine.sh client  print the client to use
#
# The client is Debian's /usr/bin/docker (20.10, builds with BuildKit) unless
# DOCKER names another: a docker CLI without the buildx plugin cannot build
# with BuildKit, and the Dockerfiles need it (secret mounts).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${SAGEFIT_ENGINE_STATE:-$root/.cache/docker-engine}
engine_packages=(docker.io containerd runc iptables)
tool_packages=(docker-compose debootstrap)

say() { echo "docker/engine.sh: $*" >&2; }

client() {
  if [ -n "${DOCKER:-}" ]; then
    echo "$DOCKER"
  else
    echo /usr/bin/docker
  fi
}

missing_packages() {
  local p missing=()
  for p in "$@"; do
    if ! dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
      missing+=("$p")
    fi
  done
  echo "${missing[@]}"
}

# install installs the packages named that are missing.
install() {
  local missing
  missing=$(missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "missing packages: $missing; run as root, or install them: apt-get install $missing"
    exit 1
  fi
  say "installing $missing"
  local start=$SECONDS
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing > "$state/apt.log" 2>&1 ||
    { apt-get update -q > "$state/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >> "$state/apt.log" 2>&1; } ||
    { tail -20 "$state/apt.log" >&2; say "apt-get install $missing failed (log: $state/apt.log)"; exit 1; }
  say "installed in $((SECONDS - start)) s"
}

answers() { "$(client)" version --format '{{.Server.Version}}' > /dev/null 2>&1; }

# mtu is the MTU of the interface of the default route: containers' packets
# must fit it (this kind of machine has 1400, not Docker's default 1500).
mtu() {
  local dev
  dev=$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null || true)
  if [ -n "$dev" ] && [ -r "/sys/class/net/$dev/mtu" ]; then
    cat "/sys/class/net/$dev/mtu"
  else
    echo 1500
  fi
}

start() {
  mkdir -p "$state"
  if answers; then
    # An engine of its own (Docker CE, ...): only the tools, where missing.
    local tools=()
    command -v debootstrap > /dev/null || tools+=(debootstrap)
    command -v docker-compose > /dev/null || "$(client)" compose version > /dev/null 2>&1 || tools+=(docker-compose)
    [ ${#tools[@]} -eq 0 ] || install "${tools[@]}"
  else
    install "${engine_packages[@]}" "${tool_packages[@]}"
  fi
  if answers; then
    say "using the running engine ($("$(client)" version --format '{{.Server.Version}}'))"
    client
    return 0
  fi
  command -v dockerd > /dev/null || { say "no dockerd after installing docker.io"; exit 1; }
  say "starting dockerd (log: $state/dockerd.log)"
  # setsid: the engine must not get the terminal's signals meant for a test.
  setsid dockerd --mtu "$(mtu)" --pidfile "$state/dockerd.pid" > "$state/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$state/started"
  local i
  for i in $(seq 1 120); do
    if answers; then
      say "dockerd $("$(client)" version --format '{{.Server.Version}}') is up"
      client
      return 0
    fi
    if ! kill -0 "$(cat "$state/started")" 2> /dev/null; then
      tail -20 "$state/dockerd.log" >&2
      rm -f "$state/started"
      say "dockerd exited (log: $state/dockerd.log)"
      exit 1
    fi
    [ "$i" -lt 120 ] && sleep 0.5
  done
  say "dockerd did not answer within 60 s (log: $state/dockerd.log)"
  exit 1
}

stop() {
  [ -f "$state/started" ] || return 0
  local pid
  pid=$(cat "$state/started")
  rm -f "$state/started"
  kill -0 "$pid" 2> /dev/null || return 0
  say "stopping the dockerd it started (pid $pid)"
  kill -TERM "$pid"
  local i
  for i in $(seq 1 60); do
    kill -0 "$pid" 2> /dev/null || return 0
    [ "$i" -lt 60 ] && sleep 0.5
  done
  say "dockerd (pid $pid) still running after 30 s; killing it"
  kill -KILL "$pid" 2> /dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  client) client ;;
  *)
    echo "usage: docker/engine.sh start|stop|client" >&2
    exit 2
    ;;
esac
