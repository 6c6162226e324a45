/**
 * Safe unpacking: every format gives the same tree, and every way an archive
 * can reach outside its tree, or blow up, is refused with the archive and the
 * entry named, leaving neither dest nor a temp dir behind.
 */
import { chmod, lstat, mkdir, readFile, readlink, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { gzipSync } from "node:zlib";
import test, { type ExecutionContext } from "ava";
import { isUkbError, type UkbError } from "../src/errors/index.js";
import { unpackArchive, type UnpackOptions } from "../src/fetch/index.js";
import { entriesOf, listTree, makeTar, makeZip, paxRecord, run, tempDir, type TarSpec, type ZipSpec } from "./fetch-fixtures.js";

async function place(t: ExecutionContext, bytes: Buffer, name = "archive.bin"): Promise<{ dir: string; archive: string; dest: string }> {
  const dir = await tempDir(t);
  const archive = path.join(dir, name);
  await writeFile(archive, bytes);
  return { dir, archive, dest: path.join(dir, "out") };
}

/** Unpacks and expects a refusal naming the archive and `entry`; checks nothing is left behind. */
async function refused(t: ExecutionContext, bytes: Buffer, entry: string | undefined, why: RegExp, opts: Partial<UnpackOptions> = {}): Promise<UkbError> {
  const { dir, archive, dest } = await place(t, bytes);
  const err = await t.throwsAsync(unpackArchive({ archive, dest, stripRoot: false, ...opts }));
  t.true(isUkbError(err), `not a UkbError: ${err}`);
  const e = err as UkbError;
  t.is(e.kind, "unpack");
  t.true(e.message.includes(archive), `message does not name the archive: ${e.message}`);
  if (entry !== undefined) t.true(e.message.includes(`'${entry}'`), `message does not name entry '${entry}': ${e.message}`);
  t.regex(e.message, why);
  t.deepEqual(await entriesOf(dir), ["archive.bin"], "dest or a temp dir was left behind");
  return e;
}

const tar = (entries: TarSpec[]): Buffer => makeTar(entries);
const zip = (entries: ZipSpec[]): Buffer => makeZip(entries);

// ---- the same tree from every format ---------------------------------------

test("tar, tar.gz, tar.xz, tar.bz2, tar.zst and zip unpack to identical trees (format from magic bytes)", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  const proj = path.join(src, "proj-1.0");
  await mkdir(path.join(proj, "sub", "deeper"), { recursive: true });
  await mkdir(path.join(proj, "emptydir"));
  await writeFile(path.join(proj, "README"), "hello\n");
  await writeFile(path.join(proj, "configure"), "#!/bin/sh\necho ok\n");
  await chmod(path.join(proj, "configure"), 0o755);
  await writeFile(path.join(proj, "empty"), "");
  const big = Buffer.alloc(1_200_000);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  await writeFile(path.join(proj, "sub", "big.bin"), big); // > 1 MiB: the streaming path
  await writeFile(path.join(proj, "sub", "deeper", "x.c"), "int x;\n");
  await symlink("sub/big.bin", path.join(proj, "link"));
  await symlink("../README", path.join(proj, "sub", "up"));
  const want = await listTree(proj);

  const archives: Record<string, string[]> = {
    tar: ["tar", "-C", src, "-cf"],
    "tar.gz": ["tar", "-C", src, "-czf"],
    "tar.xz": ["tar", "-C", src, "-cJf"],
    "tar.bz2": ["tar", "-C", src, "-cjf"],
    "tar.zst": ["tar", "-C", src, "--zstd", "-cf"],
  };
  const out = path.join(dir, "out");
  await mkdir(out);
  for (const [format, cmd] of Object.entries(archives)) {
    // A misleading name: detection must go by content.
    const file = path.join(dir, `${format}.download`);
    await run(cmd[0]!, [...cmd.slice(1), file, "proj-1.0"]);
    const dest = path.join(out, format);
    const r = await unpackArchive({ archive: file, dest });
    t.is(r.format, format as never);
    t.is(r.root, "proj-1.0");
    t.deepEqual(await listTree(dest), want, format);
  }
  const zipFile = path.join(dir, "zip.download");
  await run("zip", ["-qry", zipFile, "proj-1.0"], { cwd: src });
  const r = await unpackArchive({ archive: zipFile, dest: path.join(out, "zip") });
  t.is(r.format, "zip");
  t.deepEqual(await listTree(path.join(out, "zip")), want, "zip");
  t.deepEqual(await entriesOf(out), ["tar", "tar.bz2", "tar.gz", "tar.xz", "tar.zst", "zip"]);
});

test("stripRoot: false keeps the top-level directory; a pax global header (GitHub archives) is not an entry", async (t) => {
  const bytes = tar([
    { path: "pax_global_header", type: "GlobalExtendedHeader", data: paxRecord("comment", "0123456789abcdef") },
    { path: "repo-abc/", type: "Directory" },
    { path: "repo-abc/a.txt", data: "a" },
  ]);
  const { archive, dest, dir } = await place(t, gzipSync(bytes));
  const r = await unpackArchive({ archive, dest });
  t.deepEqual(await listTree(dest), [`a.txt file - ${"ca978112ca1bbdca"}`]);
  t.is(r.root, "repo-abc");
  const dest2 = path.join(dir, "kept");
  await unpackArchive({ archive, dest: dest2, stripRoot: false });
  t.deepEqual((await listTree(dest2)).map((l) => l.split(" ")[0]), ["repo-abc", "repo-abc/a.txt"]);
});

test("benign links stay: relative symlinks inside the tree, dangling ones, hard links to earlier files", async (t) => {
  const { archive, dest } = await place(
    t,
    tar([
      { path: "p/", type: "Directory" },
      { path: "p/lib/", type: "Directory" },
      { path: "p/lib/libx.so.1", data: "elf" },
      { path: "p/lib/libx.so", type: "SymbolicLink", linkpath: "libx.so.1" },
      { path: "p/include", type: "SymbolicLink", linkpath: "lib/../lib" },
      { path: "p/dangling", type: "SymbolicLink", linkpath: "not/yet/there" },
      { path: "p/hard", type: "Link", linkpath: "p/lib/libx.so.1" },
    ]),
  );
  await unpackArchive({ archive, dest });
  t.is(await readlink(path.join(dest, "lib/libx.so")), "libx.so.1");
  t.is(await readFile(path.join(dest, "hard"), "utf8"), "elf");
  t.is((await stat(path.join(dest, "hard"))).nlink, 2);
  t.is(await readlink(path.join(dest, "dangling")), "not/yet/there");
});

test("a later entry replaces an earlier file or symlink of the same name, never writing through the link", async (t) => {
  const { archive, dest } = await place(
    t,
    tar([
      { path: "sub/", type: "Directory" },
      { path: "sub/keep", data: "original" },
      { path: "l", type: "SymbolicLink", linkpath: "sub/keep" },
      { path: "l", data: "replaced" },
      { path: "f", data: "one" },
      { path: "f", data: "two" },
    ]),
  );
  await unpackArchive({ archive, dest, stripRoot: false });
  t.false((await lstat(path.join(dest, "l"))).isSymbolicLink());
  t.is(await readFile(path.join(dest, "l"), "utf8"), "replaced");
  t.is(await readFile(path.join(dest, "sub/keep"), "utf8"), "original");
  t.is(await readFile(path.join(dest, "f"), "utf8"), "two");
});

test("setuid, setgid and sticky bits are dropped; exec bits kept (tar and zip)", async (t) => {
  const { archive, dest, dir } = await place(
    t,
    tar([
      { path: "suid", data: "x", mode: 0o4755 },
      { path: "sgid/", type: "Directory", mode: 0o2755 },
      { path: "tmp/", type: "Directory", mode: 0o1777 },
      { path: "plain", data: "y", mode: 0o644 },
    ]),
  );
  await unpackArchive({ archive, dest, stripRoot: false });
  t.is((await stat(path.join(dest, "suid"))).mode & 0o7777, 0o755);
  t.is((await stat(path.join(dest, "sgid"))).mode & 0o7777, 0o755);
  t.is((await stat(path.join(dest, "tmp"))).mode & 0o7777, 0o777);
  t.is((await stat(path.join(dest, "plain"))).mode & 0o7777, 0o644);

  const zipPath = path.join(dir, "z.zip");
  await writeFile(zipPath, zip([{ name: "suid", data: "x", mode: 0o104755 }]));
  const zdest = path.join(dir, "zout");
  await unpackArchive({ archive: zipPath, dest: zdest, stripRoot: false });
  t.is((await stat(path.join(zdest, "suid"))).mode & 0o7777, 0o755);
});

// ---- refusals: tar -----------------------------------------------------------

test("tar: '../x' is refused", async (t) => {
  await refused(t, tar([{ path: "../x", data: "evil" }]), "../x", /'\.\.'/);
});

test("tar: '..' in the middle of a name is refused", async (t) => {
  await refused(t, tar([{ path: "a/../../x", data: "evil" }]), "a/../../x", /'\.\.'/);
});

test("tar: an absolute name is refused", async (t) => {
  await refused(t, tar([{ path: "/tmp/ukb-abs-evil", data: "evil" }]), "/tmp/ukb-abs-evil", /absolute path/);
});

test("tar: a symlink to /etc is refused before a file can be written through it", async (t) => {
  await refused(
    t,
    tar([
      { path: "etc", type: "SymbolicLink", linkpath: "/etc" },
      { path: "etc/ukb-evil", data: "evil" },
    ]),
    "etc",
    /symlink to an absolute path/,
  );
});

test("tar: a symlink a -> ../../x is refused", async (t) => {
  await refused(t, tar([{ path: "a", type: "SymbolicLink", linkpath: "../../x" }]), "a", /outside the tree/);
});

test("tar: with stripRoot, a symlink leaving the stripped root is refused", async (t) => {
  await refused(
    t,
    tar([
      { path: "root/", type: "Directory" },
      { path: "root/a", type: "SymbolicLink", linkpath: "../sibling" },
    ]),
    "root/a",
    /outside the tree/,
    { stripRoot: true },
  );
});

test("tar: a file written through an earlier (inside) symlink is refused", async (t) => {
  await refused(
    t,
    tar([
      { path: "sub/", type: "Directory" },
      { path: "s", type: "SymbolicLink", linkpath: "sub" },
      { path: "s/f", data: "through the link" },
    ]),
    "s/f",
    /parent 's' is a symlink/,
  );
});

test("tar: a chain of symlinks that only escapes when followed (r -> ., t -> r/..) is refused", async (t) => {
  await refused(
    t,
    tar([
      { path: "r", type: "SymbolicLink", linkpath: "." },
      { path: "t", type: "SymbolicLink", linkpath: "r/.." },
    ]),
    "t",
    /through other symlinks leads outside/,
  );
});

test("tar: a chain of more symlinks than the kernel follows (41 hops) that leads outside is refused, not let through", async (t) => {
  await refused(
    t,
    tar([
      { path: "a", type: "SymbolicLink", linkpath: "." },
      { path: "x", type: "SymbolicLink", linkpath: `${"a/".repeat(41)}../../../etc/passwd` },
    ]),
    "x",
    /leads outside/,
  );
});

test("tar: a hard link to /etc/passwd is refused", async (t) => {
  await refused(t, tar([{ path: "passwd", type: "Link", linkpath: "/etc/passwd" }]), "passwd", /hard link target is an absolute path/);
});

test("tar: a hard link to ../../etc/passwd is refused", async (t) => {
  await refused(t, tar([{ path: "passwd", type: "Link", linkpath: "../../etc/passwd" }]), "passwd", /hard link target contains '\.\.'/);
});

test("tar: a hard link to a name that is not an earlier file is refused", async (t) => {
  await refused(
    t,
    tar([
      { path: "l", type: "SymbolicLink", linkpath: "nowhere" },
      { path: "h", type: "Link", linkpath: "l" },
    ]),
    "h",
    /which is a symlink/,
  );
});

test("tar: a character device is refused", async (t) => {
  await refused(t, tar([{ path: "dev/null", type: "CharacterDevice" }]), "dev/null", /character device/);
});

test("tar: a block device is refused", async (t) => {
  await refused(t, tar([{ path: "sda", type: "BlockDevice" }]), "sda", /block device/);
});

test("tar: a fifo is refused", async (t) => {
  await refused(t, tar([{ path: "pipe", type: "FIFO" }]), "pipe", /fifo/);
});

test("tar: an entry type the parser would skip (GNU sparse) is refused, not silently dropped", async (t) => {
  await refused(t, tar([{ path: "sparse", type: "SparseFile", data: "abc" }]), "sparse", /does not unpack \(SparseFile\)/);
});

test("tar: more bytes than maxBytes is refused (one file, declared size)", async (t) => {
  await refused(t, tar([{ path: "big", data: Buffer.alloc(5000) }]), "big", /more than 4096 bytes.*bomb/, { maxBytes: 4096 });
});

test("tar.gz: many files adding up past maxBytes are refused at the one that crosses", async (t) => {
  const entries = Array.from({ length: 10 }, (_, i) => ({ path: `f${i}`, data: Buffer.alloc(1000, 1) }));
  await refused(t, gzipSync(tar(entries)), "f4", /more than 4500 bytes/, { maxBytes: 4500 });
});

test("tar: more entries than maxEntries is refused", async (t) => {
  const entries = Array.from({ length: 20 }, (_, i) => ({ path: `f${i}`, data: "" }));
  await refused(t, tar(entries), "f10", /more than 10 entries.*bomb/, { maxEntries: 10 });
});

test("tar.gz: a stream of zeros far beyond the limits (a bomb with no entries) is stopped", async (t) => {
  const zeros = gzipSync(Buffer.alloc(40 << 20), { level: 9 });
  await refused(t, zeros, undefined, /decompresses to more than .* bytes \(decompression bomb\?\)/, { maxBytes: 1024, maxEntries: 1 });
});

// ---- refusals: zip -------------------------------------------------------------

test("zip: '../x' is refused", async (t) => {
  await refused(t, zip([{ name: "../x", data: "evil" }]), "../x", /'\.\.'/);
});

test("zip: a backslash path '..\\x' is refused like '../x'", async (t) => {
  await refused(t, zip([{ name: "..\\x", data: "evil" }]), "../x", /'\.\.'/);
});

test("zip: an absolute name is refused", async (t) => {
  await refused(t, zip([{ name: "/tmp/ukb-abs-evil", data: "evil" }]), "/tmp/ukb-abs-evil", /absolute path/);
});

test("zip: a symlink to /etc is refused", async (t) => {
  await refused(
    t,
    zip([
      { name: "etc", data: "/etc", mode: 0o120777 },
      { name: "etc/ukb-evil", data: "evil" },
    ]),
    "etc",
    /symlink to an absolute path/,
  );
});

test("zip: a symlink a -> ../../x is refused", async (t) => {
  await refused(t, zip([{ name: "a", data: "../../x", mode: 0o120777 }]), "a", /outside the tree/);
});

test("zip: a device node is refused", async (t) => {
  await refused(t, zip([{ name: "null", mode: 0o020666 }]), "null", /character device/);
});

test("zip: more bytes than maxBytes is refused", async (t) => {
  await refused(t, zip([{ name: "big", data: Buffer.alloc(5000) }]), "big", /more than 4096 bytes/, { maxBytes: 4096 });
});

test("zip: more entries than maxEntries is refused", async (t) => {
  await refused(t, zip(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, data: "" }))), "f3", /more than 3 entries/, { maxEntries: 3 });
});

// ---- stripRoot and damaged input -------------------------------------------------

test("stripRoot: several top-level entries is a clear error", async (t) => {
  const e = await refused(t, tar([{ path: "a/x", data: "" }, { path: "b/y", data: "" }]), undefined, /more than one top-level entry \('a', 'b'\)/, { stripRoot: true });
  t.regex(e.hint ?? "", /stripRoot: false/);
});

test("stripRoot: a lone top-level file is a clear error", async (t) => {
  await refused(t, tar([{ path: "README", data: "hi" }]), undefined, /top-level entry 'README' is not a directory/, { stripRoot: true });
});

test("stripRoot: an empty archive is a clear error; without stripRoot it unpacks to an empty dir", async (t) => {
  await refused(t, tar([]), undefined, /archive is empty/, { stripRoot: true });
  const { archive, dest } = await place(t, tar([]));
  await unpackArchive({ archive, dest, stripRoot: false });
  t.deepEqual(await entriesOf(dest), []);
});

test("a file that is no archive is refused by its bytes", async (t) => {
  await refused(t, Buffer.from("<html>not found</html>\n"), undefined, /not an archive ukb can unpack/);
});

test("gzip data that is not a tar is refused", async (t) => {
  await refused(t, gzipSync(Buffer.alloc(2048, 0x41)), undefined, /gzip data is not a tar archive/);
});

test("a truncated tar.gz is refused as damaged", async (t) => {
  const whole = gzipSync(tar([{ path: "p/", type: "Directory" }, { path: "p/f", data: Buffer.alloc(100_000, 7) }]), { level: 0 });
  await refused(t, whole.subarray(0, whole.length >> 1), undefined, /damaged/, { stripRoot: true });
});

test("truncated tar.gz, tar.xz, tar.bz2 and tar.zst cut inside a large file are refused as damaged, nothing left", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  await mkdir(path.join(src, "p"), { recursive: true });
  const big = Buffer.alloc(1_500_000);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(Math.imul(i, 2654435761) >>> 0, i);
  await writeFile(path.join(src, "p", "a-small"), "hi\n");
  await writeFile(path.join(src, "p", "big"), big); // incompressible-ish, > 1 MiB: the streaming path
  for (const [name, flag] of [["gz", "-z"], ["xz", "-J"], ["bz2", "-j"], ["zst", "--zstd"]] as const) {
    const whole = path.join(dir, `whole.${name}`);
    await run("tar", ["-C", src, flag, "-cf", whole, "p"]);
    const bytes = await readFile(whole);
    await refused(t, bytes.subarray(0, Math.floor((bytes.length * 2) / 3)), undefined, new RegExp(`damaged (${name === "gz" ? "gzip" : name === "bz2" ? "bzip2" : name === "zst" ? "zstd" : "xz"} data|tar archive)`), { stripRoot: true });
  }
});

test("a truncated tar (entry shorter than its header says) is refused as damaged", async (t) => {
  await refused(t, makeTar([{ path: "f", data: "short", size: 5000 }], { end: false }), undefined, /damaged tar archive/);
});

test("a damaged zip is refused", async (t) => {
  const good = zip([{ name: "a", data: "x" }]);
  await refused(t, good.subarray(0, good.length - 10), undefined, /damaged zip archive/);
});

test("dest that already exists is refused without touching it", async (t) => {
  const { archive, dest } = await place(t, tar([{ path: "f", data: "x" }]));
  await mkdir(dest);
  await writeFile(path.join(dest, "mine"), "keep");
  const err = await t.throwsAsync(unpackArchive({ archive, dest, stripRoot: false }));
  t.regex(err!.message, /already exists/);
  t.deepEqual(await entriesOf(dest), ["mine"]);
});
