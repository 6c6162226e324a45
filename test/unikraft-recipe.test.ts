/**
 * recipes/nginx.ts as CI can see it, without GitHub: the graph evaluates,
 * every source is a fixed output named by an upstream hash (the store paths
 * below are functions of those hashes alone, the same on every machine), the
 * derivation hashes do not depend on where the recipe or the store live, the
 * two initrd modes are wired as they should be, and the application files
 * and the initrd's tree are right. The real build (GitHub's archives seeded
 * into a store, ~2 minutes of Unikraft's make) is shown outside CI.
 */
import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ROOT, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const RECIPE = path.join(ROOT, "recipes/nginx.ts");
const APP = path.join(ROOT, "recipes/nginx");

interface Shown {
  root: string;
  outputs: Record<string, string>;
  derivations: Record<string, { kind: string; name: string; args: string[]; env: Record<string, string>; inputs: string[]; fixed?: { mode: string; algo: string; hash: string }; params?: Record<string, unknown>; sources?: { kind: string; urls?: string[]; package?: string; file?: string }[]; outputs: string[]; outputPaths: Record<string, string> }>;
}

const SCRATCH = tempDir("ukb-nginx-");
let stores = 0;

async function show(attr: string, recipe = RECIPE, cwd?: string): Promise<Shown> {
  const r = await ukb(["show", recipe, "-A", attr, "--store", path.join(SCRATCH, `store-${++stores}`)], cwd ? { cwd } : {});
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as Shown;
}

const byName = (g: Shown, name: string) => Object.values(g.derivations).find((d) => d.name === name)!;

/** Upstream sources: store paths fixed by their hashes (and names), whatever the machine. */
const SOURCES: Record<string, { path: string; url: RegExp }> = {
  "unikraft-RELEASE-0.16.3-source": { path: "/ukb/store/02f57pdhwp8d6bch0qkhkxir5p7g8n8j-unikraft-RELEASE-0.16.3-source", url: /^https:\/\/github\.com\/unikraft\/unikraft\/archive\/refs\/tags\/RELEASE-0\.16\.3\.tar\.gz$/ },
  "lib-musl-RELEASE-0.16.3-source": { path: "/ukb/store/ws22j9lvk2wjwqjvj18sxk6jvsd0i9is-lib-musl-RELEASE-0.16.3-source", url: /^https:\/\/github\.com\/unikraft\/lib-musl\/archive\/refs\/tags\/RELEASE-0\.16\.3\.tar\.gz$/ },
  "lib-lwip-RELEASE-0.16.2-source": { path: "/ukb/store/dxnw0f8q7z6gsdmphvjijsda3k8v9jxm-lib-lwip-RELEASE-0.16.2-source", url: /^https:\/\/github\.com\/unikraft\/lib-lwip\/archive\/refs\/tags\/RELEASE-0\.16\.2\.tar\.gz$/ },
  "lib-nginx-RELEASE-0.16.0-source": { path: "/ukb/store/17fb4ba6lp75sh2i13kwifqspmgq6y7p-lib-nginx-RELEASE-0.16.0-source", url: /^https:\/\/github\.com\/unikraft\/lib-nginx\/archive\/refs\/tags\/RELEASE-0\.16\.0\.tar\.gz$/ },
  "fork-lwip-UNIKRAFT-2_1_x-source": { path: "/ukb/store/p9qwh60y2w38hhg094lh68kjnvb7d8hf-fork-lwip-UNIKRAFT-2_1_x-source", url: /^https:\/\/github\.com\/unikraft\/fork-lwip\/archive\/bef26c44236a078d4352e76392ef16f019bea501\.tar\.gz$/ },
  "nginx-1.15.6-source": { path: "/ukb/store/md2mifcr16g0wkjxv7v0854ddd4rbbx6-nginx-1.15.6-source", url: /^https:\/\/github\.com\/nginx\/nginx\/archive\/refs\/tags\/release-1\.15\.6\.tar\.gz$/ },
  "musl-1.2.3.tar.gz": { path: "/ukb/store/j6pc1mg4nyjnycp1420yvch8hf4qfwi3-musl-1.2.3.tar.gz", url: /^https:\/\/www\.musl-libc\.org\/releases\/musl-1\.2\.3\.tar\.gz$/ },
};

test("the graph evaluates; every source is a fixed output pinned by its upstream hash", async (t) => {
  const g = await show("image");
  const fixed = Object.values(g.derivations).filter((d) => d.kind === "fixed");
  for (const d of fixed) {
    t.truthy(d.fixed, `${d.name} is fixed`);
    t.regex(d.fixed!.hash, /^[0-9a-f]{64}$/, `${d.name} carries a hash`);
  }
  for (const [name, want] of Object.entries(SOURCES)) {
    const d = byName(g, name);
    t.truthy(d, `${name} is in the graph`);
    t.is(d.outputPaths.out, want.path, `${name}: its store path is a function of its hash`);
    const url = d.sources?.find((s) => s.kind === "url")?.urls?.[0];
    t.regex(url ?? "", want.url, `${name} names its upstream URL`);
  }
  const musl = byName(g, "musl-1.2.3.tar.gz");
  t.deepEqual(musl.fixed, { mode: "flat", algo: "sha256", hash: "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4" });
  t.truthy(musl.sources?.find((s) => s.kind === "debian-source" && s.package === "musl" && s.file === "musl_1.2.3.orig.tar.gz"), "Debian serves musl too");
  for (const d of fixed.filter((x) => x.name.endsWith("-source"))) t.is(d.fixed!.mode, "tree", `${d.name} is named by its tree hash`);
  // Nothing but the fixed outputs, ukb's own writers and the kernel build: no hidden downloads.
  t.deepEqual([...new Set(Object.values(g.derivations).map((d) => d.kind))].sort(), ["builtin", "command", "fixed", "host-tools"]);
  t.deepEqual(Object.values(g.derivations).filter((d) => d.kind === "command").map((d) => d.name), ["nginx-unikraft-0.16.3-einitrd"]);
});

test("derivation hashes are stable: another evaluation, another folder, another store", async (t) => {
  const a = await show("image");
  const b = await show("imageSeparate");
  const dir = path.join(SCRATCH, "copy");
  fs.cpSync(APP, path.join(dir, "sub/nginx"), { recursive: true });
  fs.copyFileSync(RECIPE, path.join(dir, "sub/nginx.ts"));
  const c = await show("image", path.join(dir, "sub/nginx.ts"), dir);
  const d = await show("imageSeparate", "sub/nginx.ts", dir);
  // local() records where its files were found (part of its derivation, not of its
  // output path); everything built from them is named by paths, so it is the same.
  const paths = (g: Shown) => Object.values(g.derivations).flatMap((x) => Object.values(x.outputPaths)).sort();
  const built = (g: Shown) => Object.entries(g.derivations).filter(([, x]) => x.kind !== "fixed").map(([h]) => h).sort();
  t.is(a.root, c.root);
  t.deepEqual(paths(a), paths(c));
  t.deepEqual(built(a), built(c));
  t.is(b.root, d.root);
  t.deepEqual(paths(b), paths(d));
  t.deepEqual(built(b), built(d));
  t.not(a.root, b.root);
});

test("the kernel build: archives placed for Unikraft, clock pinned, the three outputs", async (t) => {
  const g = await show("kernel");
  const k = g.derivations[g.root]!;
  t.is(k.name, "nginx-unikraft-0.16.3-einitrd");
  t.deepEqual([...k.outputs].sort(), ["config", "dbg", "out"]);
  const script = k.args[1]!;
  t.regex(script, /mkdir -p "\$wd\/build\/"'libmusl'\n.*'\/ukb\/store\/j6pc1mg4nyjnycp1420yvch8hf4qfwi3-musl-1\.2\.3\.tar\.gz'.*"\$wd\/build\/"'libmusl'\/'musl-1\.2\.3\.tar\.gz'/);
  t.regex(script, /pack '\/ukb\/store\/md2mifcr16g0wkjxv7v0854ddd4rbbx6-nginx-1\.15\.6-source' 'nginx-1\.15\.6' "\$wd\/build\/"'libnginx'\/'nginx-1\.15\.6\.tar\.gz'/);
  t.regex(script, /pack '\/ukb\/store\/p9qwh60y2w38hhg094lh68kjnvb7d8hf-fork-lwip-UNIKRAFT-2_1_x-source' 'fork-lwip-UNIKRAFT-2_1_x' "\$wd\/build\/"'liblwip'\/'UNIKRAFT-2_1_x\.zip'/);
  t.regex(script, /HOSTUTC="\$hostutc" HOSTNAME=ukb HOSTUSER=ukb/);
  t.regex(script, /date -u -d @"\$SOURCE_DATE_EPOCH"/);
  t.regex(script, /UK_DEFCONFIG="\$app\/\.ukb\.defconfig" make "\$@" defconfig/);
  t.regex(script, /make -j"\$\{UKB_CORES:-1\}" "\$@"/);
  t.regex(script, /libs="\$\{libs:\+\$libs:\}\$wd\/libs\/"'musl'\nlibs="\$\{libs:\+\$libs:\}\$wd\/libs\/"'lwip'\nlibs="\$\{libs:\+\$libs:\}\$wd\/libs\/"'nginx'/);
  t.regex(script, /'CONFIG_LIBVFSCORE_AUTOMOUNT_CI_EINITRD=y'/);
  const tools = byName(g, "unikraft-build-tools") as unknown as { kind: string };
  t.is(tools.kind, "host-tools");
  // The embedded kernel reads the initrd; the separate one does not.
  const initrd = byName(g, "nginx-initrd.cpio");
  t.true(k.inputs.includes(initrd.outputPaths.out!));
  const s = await show("kernelSeparate");
  const ks = s.derivations[s.root]!;
  t.is(ks.name, "nginx-unikraft-0.16.3-initrd");
  t.false(Object.values(s.derivations).some((d) => d.name === "nginx-initrd.cpio" || d.name === "nginx-rootfs" || d.name === "index.html"), "the separate kernel depends on no rootfs file");
  t.regex(ks.args[1]!, /'CONFIG_LIBVFSCORE_AUTOMOUNT_CI_INITRD=y'/);
});

test("the images: urunc's shape, Cmd with the program's name, the initrd only when separate", async (t) => {
  const e = await show("image");
  const pe = e.derivations[e.root]!.params as Record<string, unknown>;
  t.deepEqual(pe.cmd, ["nginx", "-c", "/nginx/conf/nginx.conf"]);
  t.is(pe.unikernelType, "unikraft");
  t.is(pe.unikernelVersion, "0.16.3");
  t.is(pe.hypervisor, "qemu");
  t.is(pe.kernel, byName(e, "nginx-unikraft-0.16.3-einitrd").outputPaths.out);
  t.is(pe.initrd, undefined);
  const s = await show("imageSeparate");
  const ps = s.derivations[s.root]!.params as Record<string, unknown>;
  t.is(ps.kernel, byName(s, "nginx-unikraft-0.16.3-initrd").outputPaths.out);
  t.is(ps.initrd, byName(s, "nginx-initrd.cpio").outputPaths.out);
  const dflt = await show("default");
  t.is(dflt.root, e.root);
});

test("the application files are the tutorial's, for Unikraft 0.16.3", (t) => {
  const defconfig = fs.readFileSync(path.join(APP, "qemu-x86_64.defconfig"), "utf8").split("\n");
  for (const line of ["CONFIG_PLAT_KVM=y", "CONFIG_LIBUKDEBUG_PRINTK_INFO=y", "CONFIG_LIBVFSCORE_AUTOMOUNT_CI=y", "CONFIG_LIBVFSCORE_AUTOMOUNT_CI_EINITRD=y"]) t.true(defconfig.includes(line), line);
  const config = fs.readFileSync(path.join(APP, "Config.uk"), "utf8");
  for (const sym of ["LIBNGINX", "LIBNGINX_MAIN_FUNCTION", "LIBVFSCORE", "LIBRAMFS", "LIBUKCPIO", "LIBDEVFS_AUTOMOUNT", "LIBUKNETDEV_EINFO_LIBPARAM"]) t.regex(config, new RegExp(`^\\s*select ${sym}$`, "m"));
  const makefile = fs.readFileSync(path.join(APP, "Makefile"), "utf8");
  // $(MAKE) spelled out in the rules, or make withholds its jobserver and Unikraft's build runs -j1.
  t.is(makefile.match(/^\t@\$\(MAKE\) -C \$\(UK_ROOT\) A=\$\(CURDIR\) L=\$\(UK_LIBS\) O=\$\(UK_BUILD\)/gm)?.length, 2);
  t.regex(makefile, /^UK_LIBS\s+\?= \$\(LIBS_BASE\)\/musl:\$\(LIBS_BASE\)\/lwip:\$\(LIBS_BASE\)\/nginx$/m);
  t.true(fs.existsSync(path.join(APP, "Makefile.uk")));
  const conf = fs.readFileSync(path.join(APP, "rootfs/nginx/conf/nginx.conf"), "utf8");
  t.regex(conf, /daemon off;/);
  t.regex(conf, /master_process off;/);
  t.regex(conf, /listen\s+80;/);
  t.regex(conf, /root\s+\/nginx\/html;/);
  t.regex(conf, /include\s+mime\.types;/);
  t.is(fs.readFileSync(path.join(APP, "rootfs/nginx/logs/error.log"), "utf8"), "");
  t.regex(fs.readFileSync(path.join(APP, "rootfs/nginx/html/index.html"), "utf8"), /<h1>/);
});

test("the initrd holds nginx's tree: our files, mime.types from the nginx source", async (t) => {
  const g = await show("initrd");
  const tree = byName(g, "nginx-rootfs");
  const files = (tree.params as { files: Record<string, { input: string }> }).files;
  t.deepEqual(Object.keys(files).sort(), ["/nginx/conf/mime.types", "/nginx/conf/nginx.conf", "/nginx/html/index.html", "/nginx/logs/error.log"]);
  t.is(files["/nginx/conf/mime.types"]!.input, `${SOURCES["nginx-1.15.6-source"]!.path}/conf/mime.types`);
  // Build the same tree with a stand-in for the nginx source (GitHub is out of reach) and read the cpio back.
  const dir = path.join(SCRATCH, "cpio");
  fs.cpSync(path.join(APP, "rootfs"), path.join(dir, "nginx/rootfs"), { recursive: true });
  writeRecipe(dir, "nginx-src/conf/mime.types", "types {\n    text/html  html;\n}\n");
  const recipe = fs.readFileSync(RECIPE, "utf8");
  const rootfsCall = /export const tree = rootfs\(\{[\s\S]*?\n\}\);\n/.exec(recipe)![0];
  writeRecipe(dir, "initrd.ts", `import { cpio, local, rootfs } from "ukb";\nconst nginxSource = local("./nginx-src");\n${rootfsCall}export default cpio({ root: tree });\n`);
  const r = await ukb(["realise", "initrd.ts", "--no-out-link"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const listing = execFileSync("bsdcpio", ["-itv", "-F", r.stdout.trim()], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const names = listing.trim().split("\n").map((l) => l.trim().split(/\s+/).pop()).sort();
  t.deepEqual(names, ["nginx", "nginx/conf", "nginx/conf/mime.types", "nginx/conf/nginx.conf", "nginx/html", "nginx/html/index.html", "nginx/logs", "nginx/logs/error.log"]);
  const out = path.join(dir, "x");
  fs.mkdirSync(out);
  execFileSync("bsdcpio", ["-id", "-F", r.stdout.trim()], { cwd: out, stdio: "ignore" });
  t.is(fs.readFileSync(path.join(out, "nginx/html/index.html"), "utf8"), fs.readFileSync(path.join(APP, "rootfs/nginx/html/index.html"), "utf8"));
  t.is(fs.readFileSync(path.join(out, "nginx/conf/nginx.conf"), "utf8"), fs.readFileSync(path.join(APP, "rootfs/nginx/conf/nginx.conf"), "utf8"));
  t.regex(fs.readFileSync(path.join(out, "nginx/conf/mime.types"), "utf8"), /text\/html/);
});
