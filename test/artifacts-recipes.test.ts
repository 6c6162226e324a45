/**
 * rootfs → cpio → ociImage as derivations, through the CLI: bit-identical in
 * two stores, accepted by umoci, pushed to a real registry.
 */
import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { resolveInStore } from "../src/build/builtins.js";
import { allFiles, startRegistry, type Registry } from "./artifacts-helpers.js";
import { IMAGE, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";


test("the image graph is bit-identical in two stores and passes umoci", async (t) => {
  const a = tempDir();
  const b = tempDir("ukb-elsewhere-");
  writeRecipe(a, "image.ts", IMAGE);
  writeRecipe(b, "sub/image.ts", IMAGE);
  const ra = await ukb(["realise", "image.ts"], { cwd: a });
  const rb = await ukb(["realise", "sub/image.ts", "--store", path.join(b, "other-store")], { cwd: b });
  t.is(ra.code, 0, ra.stderr);
  t.is(rb.code, 0, rb.stderr);
  t.is(path.basename(ra.stdout.trim()), path.basename(rb.stdout.trim()));
  const fa = await allFiles(ra.stdout.trim());
  const fb = await allFiles(rb.stdout.trim());
  t.deepEqual([...fa.keys()], [...fb.keys()]);
  for (const [k, v] of fa) t.true(v.equals(fb.get(k)!), `${k} differs`);
  for (const store of [path.join(a, "cache"), path.join(b, "other-store")]) {
    const initrd = await ukb(["realise", "image.ts", "-A", "initrd", "--no-out-link", "--store", store], { cwd: a });
    t.is(initrd.code, 0, initrd.stderr);
    const listing = execFileSync("bsdtar", ["-tf", initrd.stdout.trim()], { encoding: "utf8" });
    t.regex(listing, /nginx\/html\/index\.html/);
  }

  const bundle = path.join(a, "bundle");
  execFileSync("umoci", ["unpack", "--rootless", "--image", `${ra.stdout.trim()}:latest`, bundle], { stdio: "pipe" });
  const rootfsDir = path.join(bundle, "rootfs");
  t.true(fs.readFileSync(path.join(rootfsDir, ".boot/kernel")).subarray(0, 4).equals(Buffer.from("\x7fELF", "latin1")));
  const urunc = JSON.parse(fs.readFileSync(path.join(rootfsDir, "urunc.json"), "utf8")) as Record<string, string>;
  const decoded = Object.fromEntries(Object.entries(urunc).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
  t.is(decoded["com.urunc.unikernel.unikernelType"], "unikraft");
  t.is(decoded["com.urunc.unikernel.cmdline"], "-c /nginx/conf/nginx.conf");
  t.is(decoded["com.urunc.unikernel.initrd"], "/.boot/rootfs");
  const config = JSON.parse(execFileSync("skopeo", ["inspect", "--config", `oci:${ra.stdout.trim()}:latest`], { encoding: "utf8" })) as { config: { Cmd: string[]; Env: string[] } };
  t.deepEqual(config.config.Cmd, ["nginx", "-c", "/nginx/conf/nginx.conf"]);
  t.true(config.config.Env.includes("LOG=1"));
});

test("editing the site rebuilds only the rootfs, the cpio and the image", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "image.ts", IMAGE);
  const first = await ukb(["realise", "image.ts", "--json"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  writeRecipe(dir, "image.ts", IMAGE.replace("<h1>hello</h1>", "<h1>changed</h1>"));
  const second = await ukb(["realise", "image.ts", "--json"], { cwd: dir });
  t.is(second.code, 0, second.stderr);
  const built = second.stderr.split("\n").filter((l) => l.includes('"type":"start"')).map((l) => (JSON.parse(l) as { name: string }).name).sort();
  t.deepEqual(built, ["nginx-image", "rootfs", "rootfs.cpio", "site"]);
});

test("rootfs and cpio take only what is in the store: a builder's symlink out of it, or a '..', fails the build; one that stays in it is followed", async (t) => {
  const dir = tempDir();
  const secret = path.join(dir, "host-secret");
  fs.mkdirSync(secret);
  fs.writeFileSync(path.join(secret, "secret.txt"), "TOP-SECRET\n");
  writeRecipe(
    dir,
    "escape.ts",
    `import { derivation, hostTools, cpio, rootfs } from "ukb";
const t = hostTools(["sh", "ln", "mkdir"]);
// The builders cannot read the secret: they only make symlinks to it, for ukb's builtins to follow.
const outDir = derivation({ name: "out-dir", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/ln -s ${secret} $out\`] });
const outFile = derivation({ name: "out-file", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/mkdir $out && \${t}/bin/ln -s ${secret}/secret.txt $out/f\`] });
const plain = derivation({ name: "plain", builder: \`\${t}/bin/sh\`, args: ["-c", "echo hi > $out"] });
const inStore = derivation({ name: "in-store", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/mkdir $out && \${t}/bin/ln -s \${plain} $out/abs && \${t}/bin/ln -s abs $out/rel\`] });
export const viaCpio = cpio({ root: outDir });
export const viaRootfsFile = rootfs({ files: { "/x": { path: \`\${outFile}/f\` } } });
export const viaRootfsDir = rootfs({ files: { "/y": outDir } });
export const followed = rootfs({ files: { "/ok": { path: \`\${inStore}/rel\` } } });
`,
  );
  for (const [attr, why] of [
    ["viaCpio", /out-dir leads out of the store, to .*host-secret: a builtin takes only what is in the store/],
    ["viaRootfsFile", /out-file\/f leads out of the store, to .*secret\.txt/],
    ["viaRootfsDir", /out-dir leads out of the store/],
  ] as const) {
    const r = await ukb(["realise", "escape.ts", "-A", attr, "--no-out-link"], { cwd: dir });
    t.is(r.code, 1, `${attr}: ${r.stderr}`);
    t.regex(r.stderr, why, attr);
  }
  // A ".." in a path given to rootfs: refused as the recipe is evaluated.
  writeRecipe(dir, "dotdot.ts", `import { derivation, hostTools, rootfs } from "ukb";
const t = hostTools(["sh"]);
const plain = derivation({ name: "plain", builder: \`\${t}/bin/sh\`, args: ["-c", "echo hi > $out"] });
export default rootfs({ files: { "/z": { path: \`\${plain}/../../../host-secret/secret.txt\` } } });
`);
  const dotdot = await ukb(["realise", "dotdot.ts", "--no-out-link"], { cwd: dir });
  t.is(dotdot.code, 2, dotdot.stderr);
  t.regex(dotdot.stderr, /dotdot\.ts:4: rootfs .*path must be inside a derivation's output/);
  const ok = await ukb(["realise", "escape.ts", "-A", "followed", "--no-out-link"], { cwd: dir });
  t.is(ok.code, 0, ok.stderr);
  t.is(fs.readFileSync(path.join(ok.stdout.trim(), "ok"), "utf8"), "hi\n");
  const leaked = execFileSync("sh", ["-c", 'grep -rl TOP-SECRET "$0" || true', path.join(dir, "cache/store")], { encoding: "utf8" }).trim();
  t.is(leaked, "");
});

test("bad image input is refused at evaluation, before anything is built", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "bad.ts", IMAGE.replace('cmd: ["nginx", "-c", "/nginx/conf/nginx.conf"]', `cmd: ["nginx", "-g", "daemon off;"]`));
  const r = await ukb(["realise", "bad.ts"], { cwd: dir });
  t.is(r.code, 2);
  t.regex(r.stderr, /bad\.ts:\d+: ociImage 'nginx-image': .*cmd/);
  const badTag = IMAGE.replace('tag: "latest"', 'tag: "not a tag!"');
  writeRecipe(dir, "badtag.ts", badTag);
  const r2 = await ukb(["realise", "badtag.ts"], { cwd: dir });
  t.is(r2.code, 2);
  t.regex(r2.stderr, /badtag\.ts:\d+: ociImage 'nginx-image': .*tag/);
  // What the builtins would refuse only after the builds before them: at evaluation, with the line.
  const cases: [string, string, RegExp][] = [
    ["arch", IMAGE.replace('tag: "latest"', 'tag: "latest", architecture: "riscv" as any'), /ociImage 'nginx-image': architecture "riscv" is not supported/],
    ["compression", IMAGE.replace('tag: "latest"', 'tag: "latest", compression: "zstd" as any'), /ociImage 'nginx-image': compression "zstd" must be "gzip" or "none"/],
    ["label", IMAGE.replace('tag: "latest"', 'tag: "latest", labels: { "com.urunc.unikernel.binary": "x" }'), /ociImage 'nginx-image': label com\.urunc\.unikernel\.binary is written by ukb/],
    ["empty", IMAGE.replace("export const tree = rootfs({ files: {", 'export const tree = rootfs({ files: { "/x//y": "x",'), /rootfs 'rootfs': rootfs path "\/x\/\/y" contains an empty component/],
    ["setuid", IMAGE.replace("export const tree = rootfs({ files: {", 'export const tree = rootfs({ files: { "/s": { text: "x", mode: 0o4755 },'), /rootfs 'rootfs': mode of \/s must be a permission number/],
  ];
  for (const [what, source] of cases) writeRecipe(dir, `${what}.ts`, source);
  for (const [what, , pattern] of cases) {
    const r3 = await ukb(["realise", `${what}.ts`], { cwd: dir });
    t.is(r3.code, 2, `${what}: ${r3.stderr}`);
    t.regex(r3.stderr, new RegExp(`${what}\\.ts:\\d+: ${pattern.source}`), what);
  }
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
});

test("the modes a rootfs() declares (a 0600 secret, a 1777 /tmp) reach the cpio; the rest are a tree's usual ones", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "modes.ts",
    `import { derivation, hostTools, rootfs, cpio } from "ukb";
const t = hostTools(["sh", "chmod"]);
const tool = derivation({ name: "tool", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo '#!/bin/sh' > $out; \${t}/bin/chmod 755 $out\`] });
const tree = rootfs({ files: { "/etc/secret": { text: "pw\\n", mode: 0o600 }, "/tmp": { mkdir: true, mode: 0o1777 }, "/etc/motd": "hi\\n", "/bin/tool": tool } });
export default cpio({ root: tree });
`,
  );
  const r = await ukb(["realise", "modes.ts", "--no-out-link"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const listing = execFileSync("sh", ["-c", 'cpio -itv < "$0" 2>/dev/null', r.stdout.trim()], { encoding: "utf8" });
  const modeOf = (name: string) => listing.split("\n").find((l) => l.endsWith(` ${name}`))?.split(/\s+/)[0];
  t.is(modeOf("etc/secret"), "-rw-------", listing);
  t.is(modeOf("tmp"), "drwxrwxrwt", listing);
  t.is(modeOf("etc/motd"), "-rw-r--r--", listing);
  t.is(modeOf("bin/tool"), "-rwxr-xr-x", listing);
  t.is(modeOf("etc"), "drwxr-xr-x", listing);
});

test("an OCI archive pushed into a folder that is not there: one line, exit 2", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "image.ts", IMAGE);
  t.is((await ukb(["realise", "image.ts"], { cwd: dir })).code, 0);
  const r = await ukb(["push", "result", `oci-archive:${path.join(dir, "nodir/a.tar")}`], { cwd: dir });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /^ukb: error: cannot write .*nodir\/a\.tar: the folder .*nodir does not exist\n$/);
});

test("ukb push: to a real registry (twice: nothing uploaded again) and to an oci-archive", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "image.ts", IMAGE);
  let registry: Registry | undefined;
  t.teardown(async () => registry?.stop());
  registry = await startRegistry(tempDir("ukb-registry-"));
  const ref = `${registry.host}/ukb/nginx:1`;
  const first = await ukb(["push", "image.ts", ref, "--insecure"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  const digest = /(sha256:[0-9a-f]{64})/.exec(first.stdout)![1]!;
  const inspected = JSON.parse(execFileSync("skopeo", ["inspect", "--tls-verify=false", `docker://${ref}`], { encoding: "utf8" })) as { Digest: string };
  t.is(inspected.Digest, digest);
  const again = await ukb(["push", "image.ts", ref, "--insecure"], { cwd: dir });
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /uploaded 0 blobs/);
  const archive = path.join(dir, "image.tar");
  const arch = await ukb(["push", "image.ts", `oci-archive:${archive}`], { cwd: dir });
  t.is(arch.code, 0, arch.stderr);
  const fromArchive = JSON.parse(execFileSync("skopeo", ["inspect", `oci-archive:${archive}`], { encoding: "utf8" })) as { Digest: string };
  t.is(fromArchive.Digest, digest);
});

test("resolveInStore: a store path's file, through symlinks that stay in the store; none that leave it, no '..' given", (t) => {
  const store = fs.mkdtempSync(path.join(os.tmpdir(), "ukb-resolve-"));
  const a = "0123456789abcdfghijklmnpqrsvwxyz-a";
  const b = "1123456789abcdfghijklmnpqrsvwxyz-b";
  fs.mkdirSync(path.join(store, a));
  fs.writeFileSync(path.join(store, a, "f"), "x");
  fs.symlinkSync(`/ukb/store/${a}`, path.join(store, b));
  fs.mkdirSync(path.join(store, `${a}/d`));
  fs.symlinkSync("../f", path.join(store, `${a}/d/up`));
  fs.symlinkSync("../../../etc/passwd", path.join(store, `${a}/d/out`));
  fs.symlinkSync("/etc", path.join(store, `${a}/etc`));
  t.is(resolveInStore(store, `/ukb/store/${b}/f`), path.join(store, a, "f"));
  t.is(resolveInStore(store, `/ukb/store/${a}/d/up`), path.join(store, a, "f"));
  t.throws(() => resolveInStore(store, `/ukb/store/${a}/d/out`), { message: /leads out of the store through a symlink's "\.\."/ });
  t.throws(() => resolveInStore(store, `/ukb/store/${a}/etc/passwd`), { message: /leads out of the store, to \/etc/ });
  t.throws(() => resolveInStore(store, `/ukb/store/${a}/../${b}`), { message: /holds a "\." or "\.\." segment/ });
  t.throws(() => resolveInStore(store, "/etc/passwd"), { message: /is not a store path/ });
});
