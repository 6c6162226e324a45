#!/bin/sh
# ukb builder: musl libc 1.2.3, static only (--disable-shared).
#
# Inputs (environment):
#   src        the upstream tarball musl-1.2.3.tar.gz (a file, gzip'd tar with
#              one top-level folder); an already unpacked tree (a directory
#              holding ./configure) is accepted too
#   out        output path; becomes the prefix: $out/lib/{libc.a,crt1.o,...,
#              musl-gcc.specs}, $out/include, $out/bin/musl-gcc
#   UKB_CORES  parallel make jobs (default 1)
#   PATH       tools dir; needs exactly: sh make gcc as ld ar ranlib sed grep
#              tr tar gzip cat mkdir cp chmod rm mv (gcc runs as and ld from
#              PATH; configure uses tr and grep to quote its command line;
#              musl's tools/install.sh uses mkdir cp chmod mv rm)
#   SOURCE_DATE_EPOCH, TZ=UTC, LC_ALL=C   set by the builder (nothing here
#              depends on the date; kept for the tools)
# Runs in the current directory (a fresh build dir).
set -eu
: "${out:?out not set}" "${src:?src not set}"
jobs=${UKB_CORES:-1}

if [ -d "$src" ]; then
  cp -R "$src" musl
  chmod -R u+w musl
else
  mkdir musl
  tar --no-same-owner -xzf "$src" -C musl --strip-components=1
fi
cd musl

# Map the build dir away, in case anything records a source path
# (musl builds without -g, so today nothing does). No -O here: musl
# then picks its own optimisation defaults (-O2, -O3 for hot paths).
bdir=$(pwd)
CFLAGS="-ffile-prefix-map=$bdir=/build/musl"

# CC=gcc (not an absolute path): the installed musl-gcc wrapper then runs
# "gcc" from PATH, so it does not depend on where the host keeps gcc.
./configure --prefix="$out" --disable-shared --enable-wrapper=gcc \
  CC=gcc CFLAGS="$CFLAGS" AR=ar RANLIB=ranlib
make -j"$jobs"
make install
