#!/bin/sh
# Installs a Go toolchain into /usr/local/go for a build stage without a
# golang image: the toolchain module that `GOTOOLCHAIN=goX.Y.Z` makes the go
# command fetch (golang.org/toolchain, from the Go module proxy; the same
# files as go.dev/dl), checked against a pinned sha256.
#
#   go-toolchain.sh VERSION SHA256 [GOPROXY]
set -eu
version=$1
sum=$2
proxy=${3:-https://proxy.golang.org}
# The first proxy of a GOPROXY list; "direct" or "off" mean the default one.
proxy=${proxy%%,*}
proxy=${proxy%%|*}
case "$proxy" in
  http://* | https://*) ;;
  *) proxy=https://proxy.golang.org ;;
esac
arch=$(dpkg --print-architecture)
zip=/tmp/go-toolchain.zip
url="$proxy/golang.org/toolchain/@v/v0.0.1-go$version.linux-$arch.zip"
curl -fsSL --retry 3 -o "$zip" "$url"
echo "$sum  $zip" | sha256sum -c --quiet - ||
  { echo "go-toolchain: $url does not have the sha256 $sum pinned for $arch" >&2; exit 1; }
unzip -q "$zip" -d /tmp/go-toolchain
mv "/tmp/go-toolchain/golang.org/toolchain@v0.0.1-go$version.linux-$arch" /usr/local/go
rm -rf "$zip" /tmp/go-toolchain
/usr/local/go/bin/go version
