#!/bin/sh
# ukb builder: nginx 1.22.1 as one static, stripped binary linked against musl.
#
# Inputs (environment):
#   src        the upstream tarball nginx-1.22.1.tar.gz (a file, gzip'd tar with
#              one top-level folder); an already unpacked tree (a directory
#              holding ./configure) is accepted too
#   musl       the output of build-musl.sh (has bin/musl-gcc, lib/musl-gcc.specs)
#   out        output path: $out/bin/nginx (static, stripped), $out/conf/mime.types
#   UKB_CORES  parallel make jobs (default 1)
#   PATH       tools dir; needs exactly: sh make gcc as ld strip sed grep tr
#              cat mkdir cp chmod rm dirname uname tar gzip (gcc runs as and ld
#              from PATH; musl-gcc is run by its path and is itself a
#              "#!/bin/sh" script that runs "gcc" from PATH; configure runs
#              uname -s/-r/-m to pick the platform)
#   SOURCE_DATE_EPOCH, TZ=UTC, LC_ALL=C   set by the builder
# Runs in the current directory (a fresh build dir).
#
# The binary expects this layout at run time (it has no other paths built in):
#   /nginx/conf/nginx.conf   configuration (-c overrides)
#   /nginx/html/             default document root (prefix /nginx)
#   /run/, /tmp/             pid file and client body temp dir
#   /etc/passwd, /etc/group  with "nobody" and "nogroup" (nginx looks them up
#                            when run as root, even with master_process off)
# Error log defaults to stderr, access log to /dev/stdout.
set -eu
: "${out:?out not set}" "${src:?src not set}" "${musl:?musl not set}"
jobs=${UKB_CORES:-1}

if [ -d "$src" ]; then
  cp -R "$src" nginx
  chmod -R u+w nginx
else
  mkdir nginx
  tar --no-same-owner -xzf "$src" -C nginx --strip-components=1
fi
cd nginx
bdir=$(pwd)

# The compiler: musl's musl-gcc wrapper (gcc + musl's specs file), always
# linking statically. configure compiles *and runs* test programs, the first
# one ("checking for C compiler") before --with-ld-opt is in effect, so -static
# has to be part of CC itself: a two-line wrapper in the build dir. (-static is
# ignored when only compiling.) Neither its path nor $musl ends up in the
# binary.
cat > ../musl-static-cc <<WRAP
#!/bin/sh
exec "$musl/bin/musl-gcc" -static "\$@"
WRAP
chmod 755 ../musl-static-cc
CC="$(cd .. && pwd)/musl-static-cc"
# Setting CFLAGS replaces nginx's defaults (-pipe -O -W -Wall -Wpointer-arith
# -Wno-unused-parameter -Werror -g) and skips its compiler probe, so the
# binary no longer records "built by gcc <host gcc version>". We keep the
# warnings, use -O2 and drop -g (the binary is stripped anyway) and -Werror.
# No build path reaches the stripped binary even with -g: the link has no
# GNU build-id (musl's specs replace gcc's link spec, which is where Debian's
# gcc adds --build-id), and strip removes the debug info. The prefix map is
# a guard for the unstripped objs/. It must go in CFLAGS, not --with-cc-opt:
# the configure arguments are compiled into the binary (nginx -V) and must
# hold no build path.
CFLAGS="-pipe -O2 -W -Wall -Wpointer-arith -Wno-unused-parameter -ffile-prefix-map=$bdir=/build/nginx"
export CC CFLAGS

# --user/--group explicit: otherwise configure greps the build machine's
# /etc/group to choose between "nobody" and "nogroup".
./configure \
  --prefix=/nginx \
  --pid-path=/run/nginx.pid \
  --lock-path=/run/nginx.lock \
  --error-log-path=stderr \
  --http-log-path=/dev/stdout \
  --http-client-body-temp-path=/tmp/client_body_temp \
  --user=nobody --group=nogroup \
  --with-ld-opt=-static \
  --without-pcre \
  --without-select_module --without-poll_module \
  --without-http_charset_module --without-http_gzip_module \
  --without-http_ssi_module --without-http_userid_module \
  --without-http_access_module --without-http_auth_basic_module \
  --without-http_mirror_module --without-http_autoindex_module \
  --without-http_geo_module --without-http_map_module \
  --without-http_split_clients_module --without-http_referer_module \
  --without-http_rewrite_module --without-http_proxy_module \
  --without-http_fastcgi_module --without-http_uwsgi_module \
  --without-http_scgi_module --without-http_grpc_module \
  --without-http_memcached_module --without-http_limit_conn_module \
  --without-http_limit_req_module --without-http_empty_gif_module \
  --without-http_browser_module \
  --without-http_upstream_hash_module --without-http_upstream_ip_hash_module \
  --without-http_upstream_least_conn_module \
  --without-http_upstream_random_module \
  --without-http_upstream_keepalive_module \
  --without-http_upstream_zone_module
make -j"$jobs"

mkdir -p "$out/bin" "$out/conf"
strip -o "$out/bin/nginx" objs/nginx
chmod 555 "$out/bin/nginx"
cp conf/mime.types "$out/conf/mime.types"
