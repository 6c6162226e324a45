/**
 * The fetch engine's small parts: mirror configuration, URL expansion,
 * digest formats, the limiter, format sniffing, source descriptors.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import test from "ava";
import { isUkbError } from "../src/errors/index.js";
import { parsePrintUris } from "../src/fetch/debian.js";
import {
  describeSource,
  expandUrl,
  hashFile,
  Limiter,
  loadMirrors,
  mirrorsConfigPath,
  normaliseDigest,
  parseMirrorsEnv,
  parseSource,
  resolveUrls,
  sniffFormat,
} from "../src/fetch/index.js";
import { makeTar, makeZip, tempDir } from "./fetch-fixtures.js";

const SHA_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

test("UKB_MIRRORS: name=url1,url2;name2=url", (t) => {
  t.deepEqual(parseMirrorsEnv(" gnu = https://a.example/gnu , https://b.example/gnu ; local=file:///srv/m ;"), {
    gnu: ["https://a.example/gnu", "https://b.example/gnu"],
    local: ["file:///srv/m"],
  });
  for (const bad of ["gnu", "=https://x", "gnu=", "gnu=ftp://x", "g/nu=https://x", "gnu=not a url"]) {
    const e = t.throws(() => parseMirrorsEnv(bad));
    t.true(isUkbError(e));
    t.regex(e!.message, /^UKB_MIRRORS: /, bad);
  }
});

test("loadMirrors: the XDG config file, with UKB_MIRRORS replacing entries of the same name", async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, "ukb"));
  await writeFile(path.join(dir, "ukb", "mirrors.json"), JSON.stringify({ gnu: ["https://file.example/gnu"], kernel: "https://file.example/kernel" }));
  const env = { XDG_CONFIG_HOME: dir, UKB_MIRRORS: "gnu=https://env.example/gnu" };
  t.is(mirrorsConfigPath(env), path.join(dir, "ukb", "mirrors.json"));
  t.deepEqual(loadMirrors({ env }), { gnu: ["https://env.example/gnu"], kernel: ["https://file.example/kernel"] });
  t.is(mirrorsConfigPath({ HOME: "/home/u" }), "/home/u/.config/ukb/mirrors.json");
  t.deepEqual(loadMirrors({ env: { HOME: path.join(dir, "nobody") } }), {}, "a missing file is no error");
});

test("loadMirrors: a malformed config file names itself", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "mirrors.json");
  await writeFile(file, "{ nope");
  t.throws(() => loadMirrors({ env: {}, configFile: file }), { message: new RegExp(`^${file}: invalid JSON`) });
  await writeFile(file, JSON.stringify({ gnu: [] }));
  t.throws(() => loadMirrors({ env: {}, configFile: file }), { message: /mirror 'gnu' must be a URL or a non-empty list/ });
});

test("expandUrl and resolveUrls: mirrors in order, hashed mirrors first, duplicates dropped", (t) => {
  const mirrors = { gnu: ["https://a.example/gnu/", "https://b.example"], hashed: ["file:///srv/by-hash"] };
  t.deepEqual(expandUrl("mirror://gnu/hello/hello-2.12.tar.gz", mirrors), ["https://a.example/gnu/hello/hello-2.12.tar.gz", "https://b.example/hello/hello-2.12.tar.gz"]);
  t.deepEqual(expandUrl("https://x.example/f", mirrors), ["https://x.example/f"]);
  t.deepEqual(resolveUrls(["mirror://gnu/f", "https://a.example/gnu/f"], mirrors, "ab".repeat(32)), [
    `file:///srv/by-hash/sha256/${"ab".repeat(32)}`,
    "https://a.example/gnu/f",
    "https://b.example/f",
  ]);
  t.deepEqual(resolveUrls(["https://x.example/f"], mirrors), ["https://x.example/f"], "no hash, no hashed mirror");
  t.throws(() => expandUrl("mirror:/gnu", mirrors), { message: /malformed mirror URL/ });
});

test("digests: hex, sha256:HEX and SRI normalise to lowercase hex; anything else is refused", (t) => {
  const sri = `sha256-${Buffer.from(SHA_EMPTY, "hex").toString("base64")}`;
  t.is(normaliseDigest("sha256", SHA_EMPTY.toUpperCase()), SHA_EMPTY);
  t.is(normaliseDigest("sha256", `sha256:${SHA_EMPTY}`), SHA_EMPTY);
  t.is(normaliseDigest("sha256", sri), SHA_EMPTY);
  for (const bad of ["abc", `md5:${SHA_EMPTY}`, "sha256-AAAA", SHA_EMPTY.slice(1) + "g"]) {
    t.throws(() => normaliseDigest("sha256", bad), { message: /malformed sha256 digest/ }, bad);
  }
});

test("hashFile: sha256, BLAKE3 and size, across the 1 MiB chunk boundary", async (t) => {
  const dir = await tempDir(t);
  const empty = path.join(dir, "empty");
  await writeFile(empty, "");
  t.deepEqual(await hashFile(empty), { sha256: SHA_EMPTY, blake3: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", size: 0 });
  const big = path.join(dir, "big");
  await writeFile(big, Buffer.alloc((1 << 20) + 3, 0x61));
  const { createHash } = await import("node:crypto");
  const r = await hashFile(big);
  t.is(r.size, (1 << 20) + 3);
  t.is(r.sha256, createHash("sha256").update(Buffer.alloc((1 << 20) + 3, 0x61)).digest("hex"));
});

test("Limiter: at most N hold a slot; waiters can be aborted; raising the limit wakes them", async (t) => {
  const l = new Limiter(1);
  const r1 = await l.acquire();
  const ctrl = new AbortController();
  const aborted = l.acquire(ctrl.signal);
  const waiting = l.acquire();
  t.is(l.waiting, 2);
  ctrl.abort(new Error("stop"));
  await t.throwsAsync(aborted, { message: "stop" });
  t.is(l.waiting, 1);
  l.setLimit(2);
  const r2 = await waiting;
  t.is(l.active, 2);
  r1();
  r1(); // idempotent
  r2();
  t.is(l.active, 0);
  t.throws(() => new Limiter(0));
});

test("sniffFormat goes by magic bytes", (t) => {
  t.is(sniffFormat(Buffer.from([0x1f, 0x8b, 8, 0])), "tar.gz");
  t.is(sniffFormat(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), "tar.xz");
  t.is(sniffFormat(Buffer.from("BZh91AY&SY")), "tar.bz2");
  t.is(sniffFormat(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), "tar.zst");
  t.is(sniffFormat(makeZip([{ name: "a", data: "b" }])), "zip");
  t.is(sniffFormat(makeTar([{ path: "a", data: "b" }])), "tar");
  t.is(sniffFormat(Buffer.from("<!doctype html>")), undefined);
});

test("source descriptors: parse, describe, refuse malformed ones", (t) => {
  t.deepEqual(parseSource({ kind: "url", urls: ["https://x/f"] }), { kind: "url", urls: ["https://x/f"] });
  t.deepEqual(parseSource({ kind: "debian-source", package: "musl", file: "musl_1.2.3.orig.tar.gz" }), { kind: "debian-source", package: "musl", file: "musl_1.2.3.orig.tar.gz" });
  t.is(describeSource({ kind: "debian-source", package: "musl", version: "1.2.3-1", file: "musl_1.2.3.orig.tar.gz" }), "debian-source:musl=1.2.3-1/musl_1.2.3.orig.tar.gz");
  t.is(describeSource({ kind: "debian-package", package: "hello", version: "2.10-3", arch: "amd64" }), "debian-package:hello:amd64=2.10-3");
  t.throws(() => parseSource({ kind: "url", urls: [] }), { message: /'urls' must be a non-empty list/ });
  t.throws(() => parseSource({ kind: "git" }), { message: /'kind' must be/ });
  t.throws(() => parseSource({ kind: "debian-package", package: "x" }), { message: /'version' must be/ });
});

test("apt-get --print-uris lines parse into URI, name, size and sha256", (t) => {
  const out = [
    "NOTICE: 'musl' packaging is maintained in the 'Git' version control system at:",
    `'http://deb.debian.org/debian/pool/main/m/musl/musl_1.2.3.orig.tar.gz' musl_1.2.3.orig.tar.gz 1058642 SHA256:${"7D".repeat(32)}`,
    "'http://deb.debian.org/debian/pool/main/m/musl/musl_1.2.3-1.dsc' musl_1.2.3-1.dsc 3511 MD5Sum:0123",
  ].join("\n");
  t.deepEqual(parsePrintUris(out), [
    { uri: "http://deb.debian.org/debian/pool/main/m/musl/musl_1.2.3.orig.tar.gz", name: "musl_1.2.3.orig.tar.gz", size: 1058642, sha256: "7d".repeat(32) },
    { uri: "http://deb.debian.org/debian/pool/main/m/musl/musl_1.2.3-1.dsc", name: "musl_1.2.3-1.dsc", size: 3511 },
  ]);
});
