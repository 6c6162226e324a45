/**
 * Sources from Debian's archive through apt: the upstream tarballs of musl
 * and nginx (byte-identical to upstream, so the upstream sha256 holds), a
 * binary .deb, and the errors a user meets (no deb-src, wrong file, wrong
 * hash, offline). Needs deb-src enabled, as .ci/run does:
 *   sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources && apt-get update
 */
import { access } from "node:fs/promises";
import path from "node:path";
import test from "ava";
import { HashMismatchError, isUkbError, type UkbError } from "../src/errors/index.js";
import { ENABLE_DEB_SRC, fetchDebianPackage, fetchDebianSource, fetchSource, unpackArchive } from "../src/fetch/index.js";
import { entriesOf, tempDir } from "./fetch-fixtures.js";

const MUSL_SHA = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4";
const NGINX_SHA = "9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31";
/** hello 2.10-3 for amd64 from bookworm (the machines' snapshot of Debian's archive). */
const HELLO_DEB_SHA = "2e6e2f1a0007dc43bc91c273fd36e91e40a4f1c2765a03eca68b70a42103878a";

test("musl_1.2.3.orig.tar.gz from Debian's musl source package has upstream's sha256, and unpacks", async (t) => {
  const dir = await tempDir(t);
  const dest = path.join(dir, "musl-1.2.3.tar.gz");
  const r = await fetchDebianSource({ package: "musl", version: "1.2.3-1", file: "musl_1.2.3.orig.tar.gz", dest, expect: { sha256: MUSL_SHA } });
  t.is(r.sha256, MUSL_SHA);
  t.is(r.file, "musl_1.2.3.orig.tar.gz");
  t.deepEqual(await entriesOf(dir), ["musl-1.2.3.tar.gz"], "apt's other files and the scratch dir are gone");
  const tree = path.join(dir, "musl");
  const u = await unpackArchive({ archive: dest, dest: tree });
  t.is(u.root, "musl-1.2.3");
  await t.notThrowsAsync(access(path.join(tree, "include", "stdio.h")));
});

test("nginx_1.22.1.orig.tar.gz through the source descriptor (no version: apt's current one)", async (t) => {
  const dir = await tempDir(t);
  const dest = path.join(dir, "nginx.tar.gz");
  const r = await fetchSource({ kind: "debian-source", package: "nginx", file: "nginx_1.22.1.orig.tar.gz" }, { dest, expect: { sha256: NGINX_SHA } });
  t.is(r.sha256, NGINX_SHA);
  t.is(r.origin, "debian-source:nginx/nginx_1.22.1.orig.tar.gz");
});

test("a .deb through apt-get download", async (t) => {
  const dir = await tempDir(t);
  const dest = path.join(dir, "hello.deb");
  const r = await fetchDebianPackage({ package: "hello", version: "2.10-3", arch: "amd64", dest, expect: { sha256: HELLO_DEB_SHA } });
  t.is(r.file, "hello_2.10-3_amd64.deb");
  t.is(r.sha256, HELLO_DEB_SHA);
  t.deepEqual(await entriesOf(dir), ["hello.deb"]);
});

test("a wrong hash is a HashMismatchError naming the package and file; nothing left", async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(fetchDebianSource({ package: "musl", file: "musl_1.2.3.orig.tar.gz", dest: path.join(dir, "x"), expect: { sha256: "0".repeat(64) } }));
  t.true(err instanceof HashMismatchError);
  t.regex(err!.message, /Debian source musl \(musl_1\.2\.3\.orig\.tar\.gz\)/);
  t.regex(err!.message, new RegExp(`actual: +sha256:${MUSL_SHA}`));
  t.deepEqual(await entriesOf(dir), []);
});

test("a file the source package does not have: the error lists the files it has, nothing is downloaded", async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(fetchDebianSource({ package: "musl", file: "musl_9.9.orig.tar.gz", dest: path.join(dir, "x") }));
  t.regex(err!.message, /has no file musl_9\.9\.orig\.tar\.gz; it has .*musl_1\.2\.3\.orig\.tar\.gz/);
  t.deepEqual(await entriesOf(dir), []);
});

test("no deb-src sources: a clear error whose hint is the sed + apt-get update to run", async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(
    fetchDebianSource({
      package: "musl",
      file: "musl_1.2.3.orig.tar.gz",
      dest: path.join(dir, "x"),
      // An apt that sees no sources at all, as on a machine without deb-src.
      aptArgs: ["-o", "Dir::Etc::SourceList=/dev/null", "-o", `Dir::Etc::SourceParts=${dir}/none`],
    }),
  );
  t.true(isUkbError(err));
  t.is((err as UkbError).kind, "fetch");
  t.regex(err!.message, /Debian source musl: apt has no deb-src sources/);
  t.is((err as UkbError).hint, ENABLE_DEB_SRC);
  t.regex(ENABLE_DEB_SRC, /sed -i 's\/\^Types: deb\$\/Types: deb deb-src\/' \/etc\/apt\/sources\.list\.d\/debian\.sources && apt-get update/);
  t.deepEqual(await entriesOf(dir), []);
});

test("an unknown version names the package and suggests apt-cache showsrc", async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(fetchDebianSource({ package: "musl", version: "9.9-9", file: "musl_9.9.orig.tar.gz", dest: path.join(dir, "x") }));
  t.regex(err!.message, /Debian source musl=9\.9-9: Can not find version '9\.9-9' of package 'musl'/);
  t.regex((err as UkbError).hint ?? "", /apt-cache showsrc musl/);
});

test("offline: apt is not run; the error names what was needed", async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(
    fetchDebianSource({ package: "musl", file: "musl_1.2.3.orig.tar.gz", dest: path.join(dir, "x"), offline: true, expect: { sha256: MUSL_SHA }, aptGet: "/nonexistent/apt-get" }),
  );
  t.regex(err!.message, new RegExp(`^offline: Debian source musl needs apt-get source musl \\(sha256:${MUSL_SHA}\\)`));
  t.regex((err as UkbError).hint ?? "", /ukb store add FILE/);
});

test("malformed package names and file names are refused before apt runs", async (t) => {
  const dir = await tempDir(t);
  await t.throwsAsync(fetchDebianSource({ package: "musl; rm -rf /", file: "x", dest: path.join(dir, "x") }), { message: /invalid Debian package name/ });
  await t.throwsAsync(fetchDebianSource({ package: "musl", file: "../etc/passwd", dest: path.join(dir, "x") }), { message: /invalid file name/ });
});
