#!/bin/sh
# Runs a build step that downloads (pip, go, curl) with the machine's extra CA
# certificates trusted, for networks whose proxy intercepts TLS. The
# certificates come in as a BuildKit secret (docker/build-images.sh hands the
# ones in Debian's local CA folder over as the secret "extra-ca"): a secret is
# mounted for one RUN only and never lands in a layer. The bundle (system CAs
# plus the extra ones) is written to a tmpfs the same RUN mounts at /run/ca.
# Without the secret, the system bundle is used as it is.
#
#   RUN --mount=type=secret,id=extra-ca --mount=type=tmpfs,target=/run/ca with-extra-ca CMD ARGS...
set -eu
extra=/run/secrets/extra-ca
system=/etc/ssl/certs/ca-certificates.crt
if [ -s "$extra" ]; then
  [ -d /run/ca ] || { echo "with-extra-ca: /run/ca is not mounted (add --mount=type=tmpfs,target=/run/ca to the RUN)" >&2; exit 1; }
  cat "$system" "$extra" > /run/ca/bundle.pem
  bundle=/run/ca/bundle.pem
else
  bundle=$system
fi
SSL_CERT_FILE=$bundle PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle CURL_CA_BUNDLE=$bundle GIT_SSL_CAINFO=$bundle
export SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO
exec "$@"
