/**
 * The pieces of the binary caches, in-process: restoring canonical archives
 * (and refusing what dumpTree could not have written), manifests with
 * external files, zstd with bounds, keys and signatures, path infos.
 */
import fs from "node:fs";
import path from "node:path";
import test from "ava";
import { copyTreeDisturbed, makeFixtureTree, snapshot, tempDir, withoutSetid } from "./artifacts-helpers.js";
import { dumpTree, hashTree } from "../src/store/index.js";
import { restoreTree, MANIFEST_MAGIC } from "../src/store/archive.js";
import { packTree } from "../src/cache/pack.js";
import { compressToFile, decompress } from "../src/cache/compress.js";
import { checkEntry, decodeEntry, encodeEntry, signEntry, type CacheEntry } from "../src/cache/info.js";
import { fingerprint, generateKey, parsePublicKey, parseSecretKey } from "../src/cache/keys.js";
import { blake3Hex } from "../src/graph/index.js";

async function* chunks(buf: Buffer, size = 7): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function archiveOf(root: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of dumpTree(root)) parts.push(c);
  return Buffer.concat(parts);
}

/** Type, exec bit, bytes and link targets: what the canonical archive keeps. */
function kept(s: Awaited<ReturnType<typeof snapshot>>) {
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, { type: v.type, exec: v.type === "file" ? (v.perm & 0o100) !== 0 : undefined, data: v.data }]));
}

test("restoreTree is the inverse of dumpTree (streamed in odd-sized chunks)", async (t) => {
  const dir = await tempDir(t, "ukb-cache-unit-");
  const src = path.join(dir, "src");
  await makeFixtureTree(src);
  const archive = await archiveOf(src);
  const dest = path.join(dir, "dest");
  const { size } = await restoreTree(chunks(archive), dest);
  t.is(size, archive.length);
  t.deepEqual(kept(await snapshot(dest)), kept(withoutSetid(await snapshot(src))));
  t.deepEqual(await hashTree(dest), await hashTree(src));
  // A single file and a symlink as the root.
  for (const root of ["big.bin", "html"]) {
    const d = path.join(dir, `single-${root}`);
    await restoreTree(chunks(await archiveOf(path.join(src, root)), 4096), d);
    t.deepEqual(await hashTree(d), await hashTree(path.join(src, root)));
  }
});

/** A canonical archive by hand: a directory with these raw entry names, each an empty file. */
function dirArchive(names: Buffer[], tail: Buffer = Buffer.alloc(0)): Buffer {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const parts: Buffer[] = [Buffer.from("ukb-archive-1\0"), Buffer.from("d"), u32(names.length)];
  for (const n of names) parts.push(u32(n.length), n, Buffer.from("f"), Buffer.alloc(8));
  return Buffer.concat([...parts, tail]);
}

test("restoreTree refuses what dumpTree never writes, and writes nothing outside its folder", async (t) => {
  const dir = await tempDir(t, "ukb-cache-unit-");
  const cases: [string, Buffer, RegExp][] = [
    ["slash", dirArchive([Buffer.from("a/b")]), /entry named "a\/b"/],
    ["dotdot", dirArchive([Buffer.from("..")]), /entry named "\.\."/],
    ["dot", dirArchive([Buffer.from(".")]), /entry named "\."/],
    ["nul", dirArchive([Buffer.from("a\0b")]), /entry named/],
    ["empty", dirArchive([Buffer.from("")]), /entry name of 0 bytes/],
    ["not-utf8", dirArchive([Buffer.from([0xff, 0xfe])]), /entry named/],
    ["duplicate", dirArchive([Buffer.from("a"), Buffer.from("a")]), /a duplicate entry "a"/],
    ["unsorted", dirArchive([Buffer.from("b"), Buffer.from("a")]), /an unsorted entry "a"/],
    ["trailing", dirArchive([Buffer.from("a")], Buffer.from("x")), /trailing bytes/],
    ["truncated", dirArchive([Buffer.from("a")]).subarray(0, 30), /truncated/],
    ["magic", Buffer.from("ukb-archive-2\0d\0\0\0\0"), /expected magic/],
    ["type", Buffer.concat([Buffer.from("ukb-archive-1\0"), Buffer.from("q")]), /unknown node type/],
    ["external-in-plain", Buffer.concat([Buffer.from("ukb-archive-1\0"), Buffer.from("F"), Buffer.alloc(40)]), /node type 'F' in a plain archive/],
  ];
  for (const [name, bytes, message] of cases) {
    const dest = path.join(dir, name, "out");
    fs.mkdirSync(path.dirname(dest));
    const err = await t.throwsAsync(restoreTree(chunks(bytes), dest), undefined, name);
    t.regex(err!.message, message, name);
    t.deepEqual(fs.readdirSync(dir).filter((n) => !cases.some(([c]) => c === n)), [], `${name}: nothing outside`);
  }
  // A size bound: more than announced is refused before it is written.
  const big = dirArchive([Buffer.from("a")]);
  await t.throwsAsync(restoreTree(chunks(big), path.join(dir, "bounded"), { maxSize: 10 }), { message: /larger than the 10 bytes announced/ });
});

test("packTree: a manifest with large files outside, hashing like the canonical archive; unpacking rebuilds the tree", async (t) => {
  const dir = await tempDir(t, "ukb-cache-unit-");
  const src = path.join(dir, "src");
  await makeFixtureTree(src);
  fs.writeFileSync(path.join(src, "big-twin.bin"), fs.readFileSync(path.join(src, "big.bin")));
  const packed = await packTree(src, 1000);
  t.deepEqual({ blake3: packed.contentHash, size: packed.size }, await hashTree(src));
  t.is(packed.externals.size, 1, "two identical large files: one blob");
  t.true(packed.manifest.subarray(0, MANIFEST_MAGIC.length).equals(MANIFEST_MAGIC));
  t.true(packed.manifest.length < 2000);
  const dest = path.join(dir, "dest");
  const externals: string[] = [];
  await restoreTree(chunks(packed.manifest, 100), dest, {
    magic: MANIFEST_MAGIC,
    external: async (ref, file) => {
      externals.push(ref.blake3);
      const source = packed.externals.get(ref.blake3)!;
      fs.copyFileSync(source.file, file);
      if (ref.executable) fs.chmodSync(file, 0o755);
    },
  });
  t.is(externals.length, 2);
  t.deepEqual(await hashTree(dest), await hashTree(src));
});

test("zstd: round trip over several frames; truncation, garbage and bombs are refused", async (t) => {
  const dir = await tempDir(t, "ukb-cache-unit-");
  const data = Buffer.alloc(9 << 20);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
  const file = path.join(dir, "d.zst");
  const c = await compressToFile(data, file);
  t.is(c.size, data.length);
  t.is(c.blake3, blake3Hex(data));
  const z = fs.readFileSync(file);
  const collect = async (bytes: Buffer, expected: { size: number; blake3?: string }) => {
    const out: Buffer[] = [];
    for await (const part of decompress(chunks(bytes, 1 << 16), expected, "blob")) out.push(part);
    return Buffer.concat(out);
  };
  t.true((await collect(z, { size: data.length, blake3: c.blake3 })).equals(data));
  await t.throwsAsync(collect(z.subarray(0, z.length - 100), { size: data.length }), { message: /blob: (truncated|not a valid zstd stream)/ });
  await t.throwsAsync(collect(Buffer.from("this is not zstd at all"), { size: 10 }), { message: /not a valid zstd stream/ });
  await t.throwsAsync(collect(z, { size: 1000 }), { message: /more than the 1000 bytes announced/ });
  await t.throwsAsync(collect(z, { size: data.length, blake3: "0".repeat(64) }), { message: /does not match its hash/ });
  // An empty file compresses to a non-empty blob and back.
  const e = await compressToFile(Buffer.alloc(0), path.join(dir, "e.zst"));
  t.true(e.compressedSize > 0);
  t.is((await collect(fs.readFileSync(path.join(dir, "e.zst")), { size: 0 })).length, 0);
  // A frame that announces 10 bytes, then pads itself without end (empty, non-final raw blocks):
  // refused once it is longer than 10 bytes can need, not buffered until the stream ends.
  const padded = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 10]), Buffer.alloc(3 * 4_000_000)]);
  await t.throwsAsync(collect(padded, { size: 10 }), { message: /blob: not a valid zstd stream \(a frame longer than \d+ bytes, more than 10 bytes of content can need\)/ });
});

test("keys, signatures and path infos", (t) => {
  const k = generateKey("unit-1");
  const secret = parseSecretKey(k.secretText);
  t.is(secret.publicKey, k.publicKey);
  const trusted = { verify: true, keys: [parsePublicKey(k.publicKey)] };
  const base = "0123456789abcdfghijklmnpqrsvwxyz-thing";
  const entry: CacheEntry = {
    base,
    contentHash: "a".repeat(64),
    size: 123,
    references: ["0123456789abcdfghijklmnpqrsvwxy0-dep"],
    signatures: [],
    manifest: { blake3: "b".repeat(64), size: 10, compressedSize: 20 },
    blobs: [],
  };
  t.is(fingerprint(base, entry.contentHash, 123, entry.references), `1;/ukb/store/${base};blake3:${"a".repeat(64)};123;/ukb/store/0123456789abcdfghijklmnpqrsvwxy0-dep`);
  t.throws(() => checkEntry(entry, base, trusted, "c"), { message: /is not signed: refused/ });
  const signed = signEntry(entry, secret);
  const round = decodeEntry(encodeEntry(signed), "test");
  t.notThrows(() => checkEntry(round, base, trusted, "c"));
  t.notThrows(() => checkEntry(entry, base, { verify: false, keys: [] }, "c"));
  t.throws(() => checkEntry({ ...round, size: 124 }, base, trusted, "c"), { message: /does not match its content: refused/ });
  t.throws(() => checkEntry(round, "0123456789abcdfghijklmnpqrsvwxy1-other", trusted, "c"), { message: /replayed/ });
  t.throws(() => checkEntry(round, base, { verify: true, keys: [parsePublicKey(generateKey("unit-2").publicKey)] }, "c"), { message: /signed by unit-1, not by a trusted key/ });
  // A key with the trusted name but other bytes is an invalid signature, not a trusted one.
  const impostor = generateKey("unit-1");
  t.throws(() => checkEntry(signEntry(entry, parseSecretKey(impostor.secretText)), base, trusted, "c"), { message: /does not match its content/ });
  for (const bad of ["{}", "[]", "null", "{\"ukb\":\"path-info-1\"}", "garbage"]) t.throws(() => decodeEntry(bad, "x"), { message: /x: not a valid path info/ });
  t.throws(() => parsePublicKey("no-colon"), { message: /not NAME:base64/ });
  t.throws(() => parseSecretKey("name:AAAA"), { message: /32 or 64 bytes/ });
});

test("copyTreeDisturbed trees restore to the same hash (times and owners do not matter)", async (t) => {
  const dir = await tempDir(t, "ukb-cache-unit-");
  await makeFixtureTree(path.join(dir, "a"));
  await copyTreeDisturbed(path.join(dir, "a"), path.join(dir, "b"));
  const packed = await packTree(path.join(dir, "b"));
  t.is(packed.contentHash, (await hashTree(path.join(dir, "a"))).blake3);
});
