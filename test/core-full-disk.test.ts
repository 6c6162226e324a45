/**
 * A full disk, for real: each test mounts a small tmpfs in a mount namespace of
 * its own (unshare) and runs ukb on a store inside it. A full disk is told in
 * one or two lines, and loses nothing: `ukb store verify` stays clean, and with
 * room again the same command completes.
 */
import test from "ava";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { startNginx } from "./helpers/servers.js";
import { tempDir, UKB, writeRecipe, type RunResult } from "./helpers/ukb.js";

const header = `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh", "head", "cat"]);\n`;
/** A shell derivation; `script` may name the tools as `${t}` (it becomes a template literal of the recipe). */
const sh = (name: string, script: string) => `derivation({ name: "${name}", builder: \`\${t}/bin/sh\`, args: ["-c", \`${script}\`] })`;
const MiB = 1 << 20;

/**
 * Runs shell `steps` one after the other in a new mount namespace where `$M`
 * is a tmpfs of `sizeMiB` and `$S` (UKB_STORE) a store inside it; `$UKB` runs
 * ukb. Returns each step's exit code and output.
 */
async function onSmallDisk(t: import("ava").ExecutionContext, sizeMiB: number, steps: string[]): Promise<RunResult[]> {
  const dir = tempDir("ukb-full-");
  const mnt = path.join(dir, "disk");
  const out = path.join(dir, "out");
  fs.mkdirSync(mnt);
  fs.mkdirSync(out);
  const lines = [
    "set -u",
    `M='${mnt}'; S="$M/store"; export UKB_STORE="$S"; UKB='${process.execPath} ${UKB}'`,
    `mount -t tmpfs -o size=${sizeMiB}M tmpfs "$M" || exit 97`,
    ...steps.map((step, i) => `( ${step} ) > '${out}/${i}.out' 2> '${out}/${i}.err'; echo $? > '${out}/${i}.code'`),
  ];
  const script = path.join(dir, "steps.sh");
  fs.writeFileSync(script, lines.join("\n") + "\n");
  // Root makes a mount namespace; anyone else a user namespace that owns one.
  const unshare = process.getuid?.() === 0 ? ["-m", "--propagation", "private"] : ["-rm", "--propagation", "private"];
  const ran = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile("unshare", [...unshare, "sh", script], (err, _stdout, stderr) => resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stderr })),
  );
  t.not(ran.code, 97, `cannot mount a tmpfs in a new mount namespace: ${ran.stderr}`);
  return steps.map((_, i) => {
    const read = (ext: string) => fs.readFileSync(path.join(out, `${i}.${ext}`), "utf8");
    return { code: Number(read("code")), stdout: read("out"), stderr: read("err") };
  });
}

/** What a full disk must never show: a stack, or SQLite's own words. */
function toldInOneLine(t: import("ava").ExecutionContext, r: RunResult): void {
  t.notRegex(r.stderr, /internal error|SqliteError|\n\s+at /, r.stderr);
}

test("a builder that fills the disk: one line and a hint, nothing registered; with room the same realise completes", async (t) => {
  const dir = tempDir();
  const script = `\${t}/bin/head -c ${80 * MiB} /dev/zero > $out && \${t}/bin/cat \${small} >> $out`;
  const recipe = writeRecipe(dir, "big.ts", `${header}export const small = ${sh("small", "echo hi > $out")};\nexport default ${sh("big", script)};\n`);
  const [failed, verify, listing, again, verifyAgain] = await onSmallDisk(t, 64, [
    `$UKB realise ${recipe} --no-out-link`,
    "$UKB store verify",
    'ls "$S/store"',
    `mount -o remount,size=256M "$M" && $UKB realise ${recipe} --no-out-link`,
    "$UKB store verify",
  ]);
  t.is(failed!.code, 1, failed!.stderr);
  t.regex(failed!.stderr, /build of 'big' failed: exit status 1/);
  t.regex(failed!.stderr, /hint: the store's filesystem has 0 B free: free some space \('ukb store gc'/);
  toldInOneLine(t, failed!);
  t.is(verify!.code, 0, verify!.stdout);
  t.regex(verify!.stdout, /all valid/);
  t.notRegex(listing!.stdout, /-big\n/);
  t.is(again!.code, 0, again!.stderr);
  t.regex(again!.stdout, /-big\n/);
  t.regex(verifyAgain!.stdout, /checked 3 paths: all valid/);
});

test("an output that leaves no room to register it: the error says so, and the store folder is left as it was", async (t) => {
  const dir = tempDir();
  // The builder succeeds: whatever fits is its output, and then the disk is full.
  const recipe = writeRecipe(dir, "fill.ts", `${header}export default ${sh("filler", `\${t}/bin/head -c ${80 * MiB} /dev/zero > $out; exit 0`)};\n`);
  const [failed, verify, listing, again] = await onSmallDisk(t, 64, [
    `$UKB realise ${recipe} --no-out-link`,
    "$UKB store verify",
    'ls "$S/store"',
    `mount -o remount,size=256M "$M" && $UKB realise ${recipe} --no-out-link`,
  ]);
  t.is(failed!.code, 1, failed!.stderr);
  t.regex(failed!.stderr, /no space left on the filesystem of the store \S+ while building 'filler' \(\d[^)]* free now\)/);
  t.regex(failed!.stderr, /hint: free some space/);
  toldInOneLine(t, failed!);
  t.regex(verify!.stdout, /all valid/, verify!.stdout);
  t.notRegex(listing!.stdout, /-filler\n/);
  // The lock of the failed build was released (or is dead): the next realise does not wait, it builds.
  t.is(again!.code, 0, again!.stderr);
  t.regex(again!.stdout, /-filler\n/);
});

test("a disk full before ukb starts: realise says so at once; gc opens the store with its reserve and frees room", async (t) => {
  const dir = tempDir();
  const keep = writeRecipe(dir, "keep.ts", `${header}export default ${sh("keep", `\${t}/bin/head -c ${3 * MiB} /dev/urandom > $out`)};\n`);
  const other = writeRecipe(dir, "other.ts", `${header}export default ${sh("other", "echo other > $out")};\n`);
  const [built, reserve, fill, refused, gc, verify, after, reserveAgain] = await onSmallDisk(t, 64, [
    `$UKB realise ${keep} --no-out-link`,
    'stat -c %s "$S/reserved"',
    'head -c 200000000 /dev/zero > "$M/filler"; df --output=avail -B1 "$M" | tail -1',
    `$UKB realise ${other} --no-out-link`,
    "$UKB store gc",
    "$UKB store verify",
    `rm "$M/filler" && $UKB realise ${other} --no-out-link`,
    'stat -c %s "$S/reserved"',
  ]);
  t.is(built!.code, 0, built!.stderr);
  t.is(Number(reserve!.stdout), MiB, "a new store on a roomy disk keeps a reserve");
  t.is(Number(fill!.stdout), 0, "the disk is full");
  t.is(refused!.code, 1);
  t.regex(refused!.stderr, /no space left on the filesystem of the store \S+ while opening it \(0 B free now\)\n\s+hint: free some space \('ukb store gc'/);
  toldInOneLine(t, refused!);
  t.is(gc!.code, 0, gc!.stderr);
  t.regex(gc!.stdout, /2 deleted/);
  t.regex(verify!.stdout, /checked 0 paths: all valid/);
  t.is(after!.code, 0, after!.stderr);
  t.is(Number(reserveAgain!.stdout), MiB, "the reserve is back once there is room for it");
});

test("store add of more than the disk holds: one line, nothing left in the store or its temp folder", async (t) => {
  const dir = tempDir();
  const blob = path.join(dir, "blob.bin");
  fs.writeFileSync(blob, Buffer.alloc(80 * MiB, 7));
  const [added, verify, listing] = await onSmallDisk(t, 64, [`$UKB store add ${blob}`, "$UKB store verify", 'ls -A "$S/store" "$S/tmp"']);
  t.is(added!.code, 1, added!.stderr);
  t.regex(added!.stderr, /no space left on the filesystem of the store \S+ while adding \S+blob\.bin \([^)]* free now\)/);
  toldInOneLine(t, added!);
  t.regex(verify!.stdout, /all valid/);
  t.notRegex(listing!.stdout, /blob/);
  t.regex(listing!.stdout, /tmp:\n$/);
});

test("a download larger than the disk: one line with the right hint, nothing left behind", async (t) => {
  const dir = tempDir();
  const body = Buffer.alloc(80 * MiB, 3);
  const nginx = await startNginx(path.join(dir, "nginx"));
  t.teardown(() => nginx.stop());
  fs.writeFileSync(path.join(nginx.root, "large.bin"), body);
  const sha256 = createHash("sha256").update(body).digest("hex");
  const recipe = writeRecipe(dir, "fetch.ts", `import { fetchurl } from "ukb";\nexport default fetchurl({ url: "${nginx.url}/large.bin", sha256: "${sha256}" });\n`);
  const [fetched, verify, listing] = await onSmallDisk(t, 64, [`$UKB realise ${recipe} --no-out-link`, "$UKB store verify", 'ls -A "$S/store" "$S/tmp"']);
  t.is(fetched!.code, 1, fetched!.stderr);
  t.regex(fetched!.stderr, /no space left on the filesystem of the store \S+ while building 'large\.bin'/);
  t.notRegex(fetched!.stderr, /store add FILE/, "not the hint for a missing file");
  toldInOneLine(t, fetched!);
  t.regex(verify!.stdout, /all valid/);
  t.notRegex(listing!.stdout, /large/);
});

test("substitution onto a full disk: fails at once with the same line, no local build after it", async (t) => {
  const dir = tempDir();
  const recipe = writeRecipe(dir, "zeros.ts", `${header}export default ${sh("zeros", `\${t}/bin/head -c ${80 * MiB} /dev/zero > $out`)};\n`);
  const storeA = path.join(dir, "A");
  const cache = `file://${path.join(dir, "bincache")}`;
  const built = await new Promise<number>((resolve) => execFile(process.execPath, [UKB, "realise", recipe, "--no-out-link", "--store", storeA], (err) => resolve(err ? 1 : 0)));
  t.is(built, 0);
  const pushed = await new Promise<number>((resolve) => execFile(process.execPath, [UKB, "copy", "--to", cache, recipe, "--store", storeA], (err) => resolve(err ? 1 : 0)));
  t.is(pushed, 0);
  const [realised, copied, verify] = await onSmallDisk(t, 64, [
    `$UKB realise ${recipe} --no-out-link --substituters ${cache} --no-verify`,
    `$UKB copy --from ${cache} --no-verify ${recipe}`,
    "$UKB store verify",
  ]);
  t.is(realised!.code, 1, realised!.stderr);
  t.regex(realised!.stderr, /no space left on the filesystem of the store \S+ while fetching 'zeros' from file:\/\//);
  t.notRegex(realised!.stderr, /locally|^building zeros/m, "no local build after a full disk");
  toldInOneLine(t, realised!);
  t.is(copied!.code, 1);
  t.regex(copied!.stderr, /no space left on the filesystem of the store \S+ while fetching from file:\/\//);
  toldInOneLine(t, copied!);
  t.regex(verify!.stdout, /all valid/);
});

test("ukb check with too little room for the rebuild: says so, never 'differs'", async (t) => {
  const dir = tempDir();
  const recipe = writeRecipe(dir, "twenty.ts", `${header}export default ${sh("twenty", `\${t}/bin/head -c ${20 * MiB} /dev/zero > $out; exit 0`)};\n`);
  const [built, , checked] = await onSmallDisk(t, 64, [
    `$UKB realise ${recipe} --no-out-link`,
    // Leave 8 MiB: the rebuild's output is cut short at that.
    `head -c 300000000 /dev/zero > "$M/fill"; truncate -s -${8 * 1024}K "$M/fill"`,
    `$UKB check ${recipe}`,
  ]);
  t.is(built!.code, 0, built!.stderr);
  t.is(checked!.code, 1, checked!.stdout + checked!.stderr);
  t.regex(checked!.stderr, /no space left on the filesystem of the store \S+ while checking 'twenty'/);
  t.notRegex(checked!.stdout + checked!.stderr, /differ/);
  toldInOneLine(t, checked!);
});
