/**
 * Fetchers as derivations, end to end through the CLI: real upstream tarballs
 * from Debian's source archive (no route to the upstream hosts here), the
 * store as an offline source, fetchzip's tree hash, local files.
 */
import test from "ava";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const MUSL_SHA256 = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4";
const NGINX_SHA256 = "9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31";

const UPSTREAM = `import { fetchurl, debianSource } from "ukb";
export const musl = fetchurl({
  urls: ["https://www.musl-libc.org/releases/musl-1.2.3.tar.gz", debianSource({ package: "musl", file: "musl_1.2.3.orig.tar.gz" })],
  sha256: "${MUSL_SHA256}",
});
export const nginx = fetchurl({
  urls: ["https://nginx.org/download/nginx-1.22.1.tar.gz", debianSource({ package: "nginx", file: "nginx_1.22.1.orig.tar.gz" })],
  sha256: "${NGINX_SHA256}",
});
export const muslUpstreamOnly = fetchurl({ url: "https://www.musl-libc.org/releases/musl-1.2.3.tar.gz", sha256: "${MUSL_SHA256}" });
export const nginxUpstreamOnly = fetchurl({ url: "https://nginx.org/download/nginx-1.22.1.tar.gz", sha256: "${NGINX_SHA256}" });
`;

/** The upstream tarballs as Debian ships them, fetched once with apt. */
function debianOrigs(): { musl: string; nginx: string } {
  const dir = tempDir("ukb-apt-");
  // apt may fail on a companion file (a security update's .dsc can 404) after the .orig tarball arrived.
  spawnSync("apt-get", ["source", "--download-only", "-qq", "musl", "nginx"], { cwd: dir, stdio: "ignore" });
  const find = (prefix: string) => path.join(dir, fs.readdirSync(dir).find((n) => n.startsWith(prefix) && n.includes(".orig.tar"))!);
  return { musl: find("musl_"), nginx: find("nginx_") };
}

test("musl and nginx through `store add` and through debianSource give the same store paths", async (t) => {
  const origs = debianOrigs();
  const a = tempDir();
  const b = tempDir();
  writeRecipe(a, "upstream.ts", UPSTREAM);
  writeRecipe(b, "upstream.ts", UPSTREAM);

  // Route 1: content added by hand, then the upstream-only recipes, offline.
  const added = await ukb(["store", "add", origs.musl, origs.nginx], { cwd: a });
  t.is(added.code, 0, added.stderr);
  t.regex(added.stdout, new RegExp(`sha256 ${MUSL_SHA256}`));
  t.regex(added.stdout, new RegExp(`sha256 ${NGINX_SHA256}`));
  const viaAdd = await ukb(["realise", "upstream.ts", "-A", "muslUpstreamOnly", "--offline", "--no-out-link"], { cwd: a });
  t.is(viaAdd.code, 0, viaAdd.stderr);
  const viaAddNginx = await ukb(["realise", "upstream.ts", "-A", "nginxUpstreamOnly", "--offline", "--no-out-link"], { cwd: a });
  t.is(viaAddNginx.code, 0, viaAddNginx.stderr);

  // Route 2: the upstream host is unreachable, Debian's archive serves the same bytes.
  const viaDebian = await ukb(["realise", "upstream.ts", "-A", "musl", "--no-out-link"], { cwd: b });
  t.is(viaDebian.code, 0, viaDebian.stderr);
  const viaDebianNginx = await ukb(["realise", "upstream.ts", "-A", "nginx", "--no-out-link"], { cwd: b });
  t.is(viaDebianNginx.code, 0, viaDebianNginx.stderr);

  t.is(path.basename(viaAdd.stdout.trim()), path.basename(viaDebian.stdout.trim()));
  t.is(path.basename(viaAddNginx.stdout.trim()), path.basename(viaDebianNginx.stdout.trim()));
  t.true(fs.readFileSync(viaAdd.stdout.trim()).equals(fs.readFileSync(viaDebian.stdout.trim())));
  t.regex(path.basename(viaAdd.stdout.trim()), /^[0-9a-df-np-sv-z]{32}-musl-1\.2\.3\.tar\.gz$/);

  // Fetches already in the store are never fetched again: the plan says so.
  const dry = await ukb(["realise", "upstream.ts", "-A", "musl", "--dry-run"], { cwd: b });
  t.regex(dry.stdout, /nothing to build/);
  t.is((await ukb(["store", "verify"], { cwd: b })).code, 0);
});

test("--offline names the fetch it would have needed", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "upstream.ts", UPSTREAM);
  const r = await ukb(["realise", "upstream.ts", "-A", "muslUpstreamOnly", "--offline"], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /musl-1\.2\.3\.tar\.gz/);
  t.regex(r.stderr, /offline/i);
  t.regex(r.stderr, /ukb store add/);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
});

test("a wrong hash: expected and actual, nothing registered, no temp file left", async (t) => {
  const dir = tempDir();
  const file = path.join(dir, "data.txt");
  fs.writeFileSync(file, "some bytes\n");
  writeRecipe(dir, "wrong.ts", `import { fetchurl } from "ukb";\nexport default fetchurl({ url: "file://${file}", sha256: "${"0".repeat(64)}" });\n`);
  const r = await ukb(["realise", "wrong.ts"], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /expected: (sha256:)?0{64}/);
  t.regex(r.stderr, /actual: +(sha256:)?[0-9a-f]{64}/);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/tmp")), []);
});

test("fetchzip: a tar.gz and a tar.xz of the same tree give the same path; a wrong tree hash is refused", async (t) => {
  const dir = tempDir();
  const tree = path.join(dir, "proj-1.0");
  fs.mkdirSync(path.join(tree, "src"), { recursive: true });
  fs.writeFileSync(path.join(tree, "src/main.c"), "int main(void) { return 0; }\n");
  fs.writeFileSync(path.join(tree, "configure"), "#!/bin/sh\necho ok\n", { mode: 0o755 });
  fs.symlinkSync("src/main.c", path.join(tree, "main.c"));
  execFileSync("tar", ["-czf", "proj.tar.gz", "proj-1.0"], { cwd: dir });
  execFileSync("tar", ["-cJf", "proj.tar.xz", "--owner=42", "--mtime=2001-01-01", "proj-1.0"], { cwd: dir });

  const pre = await ukb(["prefetch", `file://${dir}/proj.tar.gz`, "--unpack", "--json"], { cwd: dir });
  t.is(pre.code, 0, pre.stderr);
  const { hash } = JSON.parse(pre.stdout) as { hash: string };
  t.regex(hash, /^blake3:[0-9a-f]{64}$/);
  const preXz = JSON.parse((await ukb(["prefetch", `file://${dir}/proj.tar.xz`, "--unpack", "--json"], { cwd: dir })).stdout) as { hash: string };
  t.is(preXz.hash, hash, "re-compressed, re-owned, re-dated: same tree hash");

  writeRecipe(
    dir,
    "zips.ts",
    `import { fetchzip } from "ukb";
export const gz = fetchzip({ url: "file://${dir}/proj.tar.gz", hash: "${hash}", name: "proj" });
export const xz = fetchzip({ url: "file://${dir}/proj.tar.xz", hash: "${hash}", name: "proj" });
export const bad = fetchzip({ url: "file://${dir}/proj.tar.xz", hash: "blake3:${"1".repeat(64)}", name: "proj-bad" });
`,
  );
  const fresh = tempDir();
  const gz = await ukb(["realise", path.join(dir, "zips.ts"), "-A", "gz", "--no-out-link"], { cwd: fresh });
  t.is(gz.code, 0, gz.stderr);
  const fresh2 = tempDir();
  const xz = await ukb(["realise", path.join(dir, "zips.ts"), "-A", "xz", "--no-out-link"], { cwd: fresh2 });
  t.is(xz.code, 0, xz.stderr);
  t.is(path.basename(gz.stdout.trim()), path.basename(xz.stdout.trim()));
  t.is(fs.readFileSync(path.join(gz.stdout.trim(), "src/main.c"), "utf8"), "int main(void) { return 0; }\n");
  t.is(fs.readlinkSync(path.join(gz.stdout.trim(), "main.c")), "src/main.c");
  t.true((fs.statSync(path.join(gz.stdout.trim(), "configure")).mode & 0o100) !== 0);
  const bad = await ukb(["realise", path.join(dir, "zips.ts"), "-A", "bad"], { cwd: fresh });
  t.is(bad.code, 1);
  t.regex(bad.stderr, /hash mismatch/);
  t.regex(bad.stderr, new RegExp(hash.slice("blake3:".length)));
});

test("local() puts files next to the recipe in the store, by content", async (t) => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "files/conf"), { recursive: true });
  fs.writeFileSync(path.join(dir, "files/conf/app.conf"), "listen 80;\n");
  writeRecipe(
    dir,
    "loc.ts",
    `import { derivation, hostTools, local } from "ukb";
const t = hostTools(["sh", "cat"]);
const files = local("./files");
export default derivation({ name: "uses-local", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${files}/conf/app.conf > $out\`] });
`,
  );
  const r = await ukb(["realise", "loc.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "listen 80;\n");
  // Editing the file changes the identity: the eval cache notices and rebuilds.
  fs.writeFileSync(path.join(dir, "files/conf/app.conf"), "listen 8080;\n");
  const again = await ukb(["realise", "loc.ts"], { cwd: dir });
  t.is(again.code, 0, again.stderr);
  t.not(again.stdout, r.stdout);
  t.is(fs.readFileSync(again.stdout.trim(), "utf8"), "listen 8080;\n");
});
