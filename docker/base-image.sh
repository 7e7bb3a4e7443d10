#!/usr/bin/env bash
# Makes the Debian base image the Dockerfiles start FROM, when the engine
# does not have it: debootstrap's minbase of bookworm from the Debian mirror
# apt uses on this machine, imported with `docker import` and tagged under
# every name the Dockerfiles use (debian:bookworm, debian:bookworm-slim).
# Nothing is pulled from a registry. An image already there (pulled from
# Docker Hub, or made by an earlier run) is used as it is.
#
#   docker/base-image.sh [DOCKER]      (as root; DOCKER: the client, default docker)
#
# SAGEFIT_DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
docker=${1:-docker}
suite=bookworm
tags=(debian:bookworm debian:bookworm-slim)

say() { echo "docker/base-image.sh: $*" >&2; }

have() { "$docker" image inspect "$1" > /dev/null 2>&1; }

missing=()
for t in "${tags[@]}"; do
  have "$t" || missing+=("$t")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "${tags[*]} present: $("$docker" image inspect --format '{{.Id}}' "${tags[0]}" | cut -c1-19)"
  exit 0
fi
# One of the names is there: the others are the same image.
for t in "${tags[@]}"; do
  if have "$t"; then
    for m in "${missing[@]}"; do "$docker" tag "$t" "$m"; done
    say "tagged $t as ${missing[*]}"
    exit 0
  fi
done

# mirror is the Debian archive apt uses here (deb822 sources or sources.list).
mirror() {
  if [ -n "${SAGEFIT_DEBIAN_MIRROR:-}" ]; then
    echo "$SAGEFIT_DEBIAN_MIRROR"
    return
  fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2> /dev/null |
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' || true)
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null |
      awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' || true)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

command -v debootstrap > /dev/null || { say "debootstrap is missing (docker/engine.sh start installs it)"; exit 1; }
[ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }
src=$(mirror)
rootfs=$(mktemp -d /tmp/sagefit-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
start=$SECONDS
say "debootstrap --variant=minbase $suite from $src"
if ! debootstrap --variant=minbase "$suite" "$rootfs" "$src" > "$rootfs.log" 2>&1; then
  tail -20 "$rootfs.log" >&2
  say "debootstrap failed (log: $rootfs.log)"
  exit 1
fi
rm -f "$rootfs.log"
# What the official slim image leaves out: package lists, caches, logs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
# apt in the images reaches the same mirror as this machine.
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$src" "$suite" "$src" "$suite" > "$rootfs/etc/apt/sources.list"
security=${src%/debian}/debian-security
printf 'deb %s %s-security main\n' "$security" "$suite" >> "$rootfs/etc/apt/sources.list"
# As in the official images: no recommends' docs, apt cleans after itself.
printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
  > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-minimal"
printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n' \
  > "$rootfs/etc/apt/apt.conf.d/docker-clean"
id=$(tar -C "$rootfs" --numeric-owner -c . |
  "$docker" import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase $suite $src (docker/base-image.sh)" - "${tags[0]}")
for t in "${tags[@]:1}"; do "$docker" tag "${tags[0]}" "$t"; done
say "made ${tags[*]} (${id:7:12}) in $((SECONDS - start)) s"
