import test from "ava";
import { mkdir, readFile, stat, writeFile, readdir } from "node:fs/promises";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { createHash } from "node:crypto";
import { writeCpio } from "../src/artifacts/index.js";
import { UkbError } from "../src/errors/index.js";
import { copyTreeDisturbed, makeFixtureTree, run, snapshot, tempDir, withoutSetid } from "./artifacts-helpers.js";

const EPOCH = 1_700_000_000;

/** (mode string, size, name) per line of an `ls -l`-like listing, sizes of dirs ignored. */
function parseListing(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((line) => {
      const f = line.trim().split(/\s+/);
      // mode nlink owner group size month day year|time name...
      const mode = f[0]!;
      const size = mode.startsWith("d") ? "-" : f[4]!;
      const name = f.slice(8).join(" ");
      return `${mode} ${size} ${name}`;
    })
    .sort();
}

test("cpio: bsdtar and GNU cpio list the same entries, and both extract the source tree", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  await makeFixtureTree(src);
  const out = path.join(dir, "initrd.cpio");
  const result = await writeCpio({ root: src, out, mtime: EPOCH });

  const bytes = await readFile(out);
  t.is(result.size, bytes.length);
  t.is(result.sha256, createHash("sha256").update(bytes).digest("hex"));
  t.is(bytes.length % 4, 0);
  t.is(bytes.subarray(0, 6).toString(), "070701");

  const viaBsdtar = parseListing(await run("bsdtar", ["-tvf", out]));
  const viaCpio = parseListing(await run("cpio", ["-itv", "--quiet", "-F", out]));
  t.deepEqual(viaBsdtar, viaCpio);
  t.true(viaCpio.some((l) => l.startsWith("-rwxr-xr-x ") && l.endsWith(" bin/tool")));
  t.true(viaCpio.some((l) => l.startsWith("-rwxr-xr-x ") && l.endsWith(" bin/suid")), "setuid dropped");
  t.true(viaCpio.some((l) => l.startsWith("lrwxrwxrwx ") && l.endsWith("html -> /nginx/html")));
  // Relative names, no "./" and no root entry.
  const names = (await run("cpio", ["-it", "--quiet", "-F", out])).trim().split("\n");
  t.false(names.some((n) => n.startsWith("./") || n === "." || n.startsWith("/")));
  // Parents before children, and byte order.
  const sorted = [...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  t.deepEqual(names, sorted);
  t.true(names.indexOf("bin") < names.indexOf("bin/tool"));

  const expected = withoutSetid(await snapshot(src));
  const viaCpioDir = path.join(dir, "x-cpio");
  await mkdir(viaCpioDir);
  await run("sh", ["-c", `cpio -idm --quiet --no-absolute-filenames < "${out}"`], { cwd: viaCpioDir });
  t.deepEqual(await snapshot(viaCpioDir), expected);

  const viaTarDir = path.join(dir, "x-bsdtar");
  await mkdir(viaTarDir);
  await run("bsdtar", ["-xpf", out, "-C", viaTarDir]);
  t.deepEqual(await snapshot(viaTarDir), expected);

  // Fixed metadata: every entry has the same mtime, owner 0.
  const st = await stat(path.join(viaCpioDir, "nginx/conf/nginx.conf"));
  t.is(st.mtimeMs / 1000, EPOCH);
  t.is(st.uid, 0);
});

test("cpio: two copies of a tree with other times and owners give the same bytes, plain and gzipped", async (t) => {
  const dir = await tempDir(t);
  const a = path.join(dir, "a");
  const b = path.join(dir, "elsewhere/b");
  await makeFixtureTree(a);
  await copyTreeDisturbed(a, b);
  t.deepEqual(await snapshot(a), await snapshot(b));

  const ra = await writeCpio({ root: a, out: path.join(dir, "a.cpio"), mtime: EPOCH });
  const rb = await writeCpio({ root: b, out: path.join(dir, "b.cpio"), mtime: EPOCH });
  t.deepEqual(ra, rb);
  t.deepEqual(await readFile(path.join(dir, "a.cpio")), await readFile(path.join(dir, "b.cpio")));

  const ga = await writeCpio({ root: a, out: path.join(dir, "a.cpio.gz"), mtime: EPOCH, gzip: true });
  const gb = await writeCpio({ root: b, out: path.join(dir, "b.cpio.gz"), mtime: EPOCH, gzip: true });
  t.deepEqual(ga, gb);
  const gz = await readFile(path.join(dir, "a.cpio.gz"));
  t.deepEqual(gz, await readFile(path.join(dir, "b.cpio.gz")));
  await run("gzip", ["-t", path.join(dir, "a.cpio.gz")]);
  // No name, no mtime in the gzip header; OS byte pinned to Unix.
  t.is(gz[3], 0, "FLG: no FNAME");
  t.is(gz.readUInt32LE(4), 0, "MTIME 0");
  t.is(gz[9], 3);
  t.deepEqual(gunzipSync(gz), await readFile(path.join(dir, "a.cpio")));

  // A different SOURCE_DATE_EPOCH is a different archive.
  const rc = await writeCpio({ root: a, out: path.join(dir, "c.cpio"), mtime: EPOCH + 1 });
  t.not(rc.sha256, ra.sha256);
});

test("cpio: bad input is refused before anything is written", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  await mkdir(src);
  await writeFile(path.join(src, "f"), "x");

  const missing = await t.throwsAsync(writeCpio({ root: path.join(dir, "nope"), out: path.join(dir, "o1.cpio"), mtime: 0 }));
  t.true(missing instanceof UkbError);
  t.is((missing as UkbError).exitCode, 2);
  t.regex(missing!.message, /nope does not exist/);

  await t.throwsAsync(writeCpio({ root: path.join(src, "f"), out: path.join(dir, "o2.cpio"), mtime: 0 }), { message: /is not a directory/ });
  await t.throwsAsync(writeCpio({ root: src, out: path.join(dir, "o3.cpio"), mtime: -1 }), { message: /SOURCE_DATE_EPOCH/ });
  await t.throwsAsync(writeCpio({ root: src, out: path.join(dir, "o4.cpio"), mtime: 1.5 }), { message: /SOURCE_DATE_EPOCH/ });

  await run("mkfifo", [path.join(src, "fifo")]);
  await t.throwsAsync(writeCpio({ root: src, out: path.join(dir, "o5.cpio"), mtime: 0 }), { message: /fifo is neither a regular file/ });

  await writeFile(path.join(dir, "exists.cpio"), "");
  await t.throwsAsync(writeCpio({ root: src, out: path.join(dir, "exists.cpio"), mtime: 0 }), { message: /already exists/ });

  // Nothing but the inputs (and the pre-existing file) is left behind: no partial or temp files.
  t.deepEqual((await readdir(dir)).sort(), ["exists.cpio", "src"]);
});

test("cpio: an empty tree is just the trailer", async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, "empty"));
  const r = await writeCpio({ root: path.join(dir, "empty"), out: path.join(dir, "e.cpio"), mtime: 0 });
  const bytes = await readFile(path.join(dir, "e.cpio"));
  t.is(r.size, 124); // 110-byte header + "TRAILER!!!\0" = 121, padded to 124
  t.true(bytes.includes(Buffer.from("TRAILER!!!")));
  t.is((await run("cpio", ["-it", "--quiet", "-F", path.join(dir, "e.cpio")])).trim(), "");
});
