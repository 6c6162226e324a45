#!/usr/bin/env bash
# Installs what ukb and its tests use from Debian (run as root): the build
# sandbox, QEMU, the OCI tools and servers the tests start on 127.0.0.1, and
# deb-src entries so that recipes can take upstream tarballs from Debian's
# source archive (debianSource).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed -i 's/^Types: deb$/Types: deb deb-src/' "$f"
done
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  bubblewrap ca-certificates curl xz-utils zstd bzip2 zip unzip gzip \
  libarchive-tools cpio dpkg-dev make gcc libc6-dev binutils diffutils flex bison python3 unzip patch \
  skopeo umoci oci-image-tool docker-registry \
  nginx qemu-system-x86 chromium \
  nix-bin b3sum hyperfine bsdutils zlib1g-dev perl >/dev/null
