/**
 * unikraft.app() end to end, through the CLI and the sandbox, against a tiny
 * stand-in for Unikraft that the test writes itself: a "core" whose Makefile
 * has Unikraft's interface (A= L= O= UK_DEFCONFIG, `defconfig`, the default
 * goal, HOSTUTC/HOSTNAME/HOSTUSER) and records in its "kernel" what the
 * helper's builder handed it: the libraries, the archives where Unikraft
 * looks for them (a file placed as it is, trees packed as .tar.gz and .zip
 * under their top folder), the defconfig with its initrd lines, the embedded
 * initrd. No network, no real Unikraft: seconds, not minutes.
 */
import test from "ava";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { events, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

/** Unikraft's Makefile interface, a few lines of work. */
const FAKE_UNIKRAFT_MAKEFILE = `# stand-in for Unikraft's Makefile
NAME := $(notdir $(A))
KERNEL := $(O)/$(NAME)_qemu-x86_64
LIBS := $(subst :, ,$(L))

.PHONY: all defconfig
all:
\ttest -f $(A)/.config
\ttest -f $(A)/Config.uk
\tmkdir -p $(O)
\tprintf '\\177ELF\\001\\001\\001\\000\\000\\000\\000\\000\\000\\000\\000\\000\\002\\000\\003\\000' > $(KERNEL)
\techo "HOSTUTC=$(HOSTUTC) BY=$(HOSTUSER)@$(HOSTNAME)" >> $(KERNEL)
\t@echo "stand-in make flags: $(filter -j%,$(MAKEFLAGS))"
\tfor l in $(LIBS); do test -f $$l/Makefile.uk && echo "lib $$(basename $$l)"; done >> $(KERNEL)
\tcd $(O) && for f in $$(find . -mindepth 2 -maxdepth 2 -type f -name '*.*' | LC_ALL=C sort); do \\
\t  case $$f in \\
\t    *.zip) echo "zip $$f: $$(unzip -Z1 $$f | LC_ALL=C sort | tr '\\n' ' ')" ;; \\
\t    *.tar.gz) echo "tgz $$f: $$(tar tzf $$f | LC_ALL=C sort | tr '\\n' ' ')" ;; \\
\t  esac; \\
\tdone >> $(KERNEL)
\tsed 's/^/config: /' $(A)/.config >> $(KERNEL)
\tif grep -q '^CONFIG_LIBVFSCORE_AUTOMOUNT_CI_EINITRD=y' $(A)/.config; then \\
\t  test -f $(A)/initrd.cpio && grep -q 'EINITRD_PATH="$(A)/initrd.cpio"' $(A)/.config && \\
\t  echo "embedded initrd $$(wc -c < $(A)/initrd.cpio) bytes" && cat $(A)/initrd.cpio; \\
\tfi >> $(KERNEL)
\tcp $(KERNEL) $(KERNEL).dbg
\techo debug >> $(KERNEL).dbg

defconfig:
\ttest -n "$(UK_DEFCONFIG)"
\tcp $(UK_DEFCONFIG) $(A)/.config
\techo 'CONFIG_UK_NAME="$(NAME)"' >> $(A)/.config
`;

/** What the builder needs from the host, and the stand-in's own needs (no compiler, no flex). */
const TOOLS = [
  "sh", "make", "cp", "mkdir", "chmod", "rm", "find", "touch", "sort", "tar", "gzip", "zip", "unzip", "grep", "sed",
  "printf", "date", "cat", "wc", "ls", "tr", "echo", "basename", "test",
];

const RECIPE = `import { hostTools, local, rootfs, unikraft, type UnikraftReleaseSpec } from "ukb";

const tools = hostTools(${JSON.stringify(TOOLS)}, { name: "fake-unikraft-tools" });

export const RELEASE = {
  version: "0.16.3",
  initrdKconfig: "vfscore",
  core: local("./unikraft"),
  libs: {
    foo: {
      source: local("./libs/foo"),
      archives: [
        { file: "foo-1.0.tar.gz", from: local("./upstream/foo"), prefix: "foo-1.0" },
        { file: "BRANCH-2_1_x.zip", from: local("./upstream/bar"), prefix: "fork-bar-BRANCH-2_1_x" },
      ],
    },
    bar: { source: local("./libs/bar"), libname: "libbar", archives: [{ file: "blob-2.0.tar.gz", from: local("./upstream/blob-2.0.tar.gz") }] },
    unused: { source: local("./libs/unused") },
  },
} satisfies UnikraftReleaseSpec;

export const site = rootfs({ name: "demo-rootfs", files: { "/www/index.html": local("./index.html") } });

const common = {
  name: "demo",
  release: RELEASE,
  libs: ["foo", "bar"],
  app: { "Config.uk": "config APPDEMO\\n\\tbool\\n\\tdefault y\\n", "Makefile.uk": "" },
  config: { PLAT_KVM: true, LIBUKDEBUG_PRINTK_INFO: true, LIBVFSCORE_AUTOMOUNT_CI_EINITRD: true, UK_NAME_HINT: "a \\"quoted\\" value", SIZE: 16 },
  rootfs: site,
  tools,
};

export const embedded = unikraft.app({ ...common, embedInitrd: true });
export const separate = unikraft.app({ ...common, embedInitrd: false });
export const kernel = embedded.kernel;
export const dbg = kernel.output("dbg");
export const initrd = embedded.initrd!;
export const image = embedded.image({ cmd: ["demo", "-v"] });
export const kernelSeparate = separate.kernel;
export const imageSeparate = separate.image({ name: "demo-separate-image", cmd: ["demo", "-v"], tag: "separate" });
export default image;
`;

/** Writes the stand-in tree, the recipe and its files into a fresh folder. */
function fixture(dir: string): string {
  const w = (rel: string, text: string | Buffer) => {
    const f = path.join(dir, rel);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, text);
  };
  w("unikraft/Makefile", FAKE_UNIKRAFT_MAKEFILE);
  w("unikraft/version.mk", "UK_VERSION = 0\nUK_SUBVERSION = 16\n");
  w("libs/foo/Makefile.uk", "$(eval $(call addlib_s,libfoo,$(CONFIG_LIBFOO)))\n");
  w("libs/bar/Makefile.uk", "$(eval $(call addlib_s,libbar,$(CONFIG_LIBBAR)))\n");
  w("libs/unused/Makefile.uk", "# never linked\n");
  w("upstream/foo/src/foo.c", "int foo(void) { return 1; }\n");
  w("upstream/foo/README", "foo 1.0\n");
  w("upstream/bar/src/include/bar.h", "#define BAR 2\n");
  fs.mkdirSync(path.join(dir, "blob-src/blob-2.0"), { recursive: true });
  fs.writeFileSync(path.join(dir, "blob-src/blob-2.0/blob.c"), "int blob;\n");
  fs.mkdirSync(path.join(dir, "upstream"), { recursive: true });
  execFileSync("tar", ["--sort=name", "--mtime=@1", "--owner=0", "--group=0", "-czf", path.join(dir, "upstream/blob-2.0.tar.gz"), "-C", path.join(dir, "blob-src"), "blob-2.0"]);
  w("index.html", "<h1>demo</h1>\n");
  return writeRecipe(dir, "demo.ts", RECIPE);
}

async function realise(dir: string, attr: string, extra: string[] = []) {
  const r = await ukb(["realise", "demo.ts", "-A", attr, "--no-out-link", "--json", ...extra], { cwd: dir });
  return { ...r, path: r.stdout.trim().split("\n")[0] ?? "", built: events(r.stderr).filter((e) => e.type === "start").map((e) => e.name as string).sort() };
}

test("the builder places the archives, writes the defconfig, pins the clock, and embeds the initrd", async (t) => {
  const dir = tempDir("ukb-uk-");
  fixture(dir);
  const k = await realise(dir, "kernel", ["--cores", "2"]);
  t.is(k.code, 0, k.stderr.slice(-4000));
  const kernelBytes = fs.readFileSync(k.path);
  t.true(kernelBytes.subarray(0, 4).equals(Buffer.from("\x7fELF", "latin1")));
  t.is(kernelBytes.readUInt16LE(18), 3, "an i386 ELF, as Unikraft's x86 multiboot kernels are");
  const text = kernelBytes.toString("latin1");
  // Unikraft's date stamp from SOURCE_DATE_EPOCH, user@host constant; make runs with -j$UKB_CORES.
  t.regex(text, /HOSTUTC=1970-01-01T00:00:01\+00:00 BY=ukb@ukb\n/);
  const log = await ukb(["log", "demo.ts", "-A", "kernel"], { cwd: dir });
  t.regex(log.stdout, /stand-in make flags: -j2\b/);
  // L= holds the app's libraries, in order; the release's other library is not copied in.
  t.regex(text, /lib foo\nlib bar\n/);
  t.notRegex(text, /lib unused/);
  // Archives where Unikraft's fetch rule looks first: trees packed under their top folder, files as they are.
  t.regex(text, /tgz \.\/libfoo\/foo-1\.0\.tar\.gz: foo-1\.0\/ foo-1\.0\/README foo-1\.0\/src\/ foo-1\.0\/src\/foo\.c /);
  t.regex(text, /zip \.\/libfoo\/BRANCH-2_1_x\.zip: fork-bar-BRANCH-2_1_x\/ fork-bar-BRANCH-2_1_x\/src\/ fork-bar-BRANCH-2_1_x\/src\/include\/ fork-bar-BRANCH-2_1_x\/src\/include\/bar\.h /);
  t.regex(text, /tgz \.\/libbar\/blob-2\.0\.tar\.gz: blob-2\.0\/ blob-2\.0\/blob\.c /);
  // The defconfig: symbols from the object, strings quoted, the initrd lines the helper's.
  t.regex(text, /config: CONFIG_PLAT_KVM=y\n/);
  t.regex(text, /config: CONFIG_UK_NAME_HINT="a \\"quoted\\" value"\n/);
  t.regex(text, /config: CONFIG_SIZE=16\n/);
  t.regex(text, /config: CONFIG_LIBVFSCORE_AUTOMOUNT_CI=y\nconfig: CONFIG_LIBVFSCORE_AUTOMOUNT_CI_EINITRD=y\nconfig: CONFIG_LIBVFSCORE_AUTOMOUNT_EINITRD_PATH="\/build\/demo\/initrd\.cpio"\n/);
  t.is(text.match(/CI_EINITRD=y/g)?.length, 1, "the defconfig's own initrd line is replaced, not repeated");
  // The initrd, byte for byte, inside the kernel.
  const initrd = await realise(dir, "initrd");
  t.is(initrd.code, 0, initrd.stderr);
  const cpio = fs.readFileSync(initrd.path);
  t.regex(text, new RegExp(`embedded initrd ${cpio.length} bytes`));
  t.true(kernelBytes.includes(cpio));
  // No store path inside the kernel: the build ran at fixed paths.
  t.notRegex(text, /\/ukb\/store\//);
  // The second and third outputs: the unstripped kernel and the .config.
  const shown = JSON.parse((await ukb(["show", "demo.ts", "-A", "kernel"], { cwd: dir })).stdout) as { outputs: Record<string, string> };
  t.deepEqual(Object.keys(shown.outputs).sort(), ["config", "dbg", "out"]);
  const realDir = path.dirname(k.path);
  const dbgPath = path.join(realDir, path.basename(shown.outputs.dbg!));
  t.true(fs.readFileSync(dbgPath).toString("latin1").endsWith("debug\n"));
  t.regex(fs.readFileSync(path.join(realDir, path.basename(shown.outputs.config!)), "utf8"), /^CONFIG_UK_NAME="demo"$/m);
});

test("separate initrd: the kernel carries none, the image does, and an edit of the site rebuilds no kernel", async (t) => {
  const dir = tempDir("ukb-uk-");
  fixture(dir);
  const first = await realise(dir, "imageSeparate");
  t.is(first.code, 0, first.stderr.slice(-4000));
  const ks = await realise(dir, "kernelSeparate");
  const text = fs.readFileSync(ks.path, "latin1");
  t.regex(text, /config: CONFIG_LIBVFSCORE_AUTOMOUNT_CI=y\nconfig: CONFIG_LIBVFSCORE_AUTOMOUNT_CI_INITRD=y\n/);
  t.notRegex(text, /EINITRD/);
  t.notRegex(text, /embedded initrd/);
  // urunc's shape: the initrd beside the kernel, named in the labels; Cmd whole; the release's version.
  const cfg = JSON.parse(execFileSync("skopeo", ["inspect", "--config", `oci:${first.path}:separate`], { encoding: "utf8" })) as { config: { Cmd: string[]; Labels: Record<string, string> } };
  t.deepEqual(cfg.config.Cmd, ["demo", "-v"]);
  t.is(cfg.config.Labels["com.urunc.unikernel.initrd"], "/.boot/rootfs");
  t.is(cfg.config.Labels["com.urunc.unikernel.unikernelType"], "unikraft");
  t.is(cfg.config.Labels["com.urunc.unikernel.unikernelVersion"], "0.16.3");
  t.is(cfg.config.Labels["com.urunc.unikernel.hypervisor"], "qemu");
  const embedded = await realise(dir, "image");
  t.is(embedded.code, 0, embedded.stderr.slice(-4000));
  const cfgE = JSON.parse(execFileSync("skopeo", ["inspect", "--config", `oci:${embedded.path}:demo`], { encoding: "utf8" })) as { config: { Labels: Record<string, string> } };
  t.falsy(cfgE.config.Labels["com.urunc.unikernel.initrd"], "an embedded initrd is not shipped twice");

  fs.writeFileSync(path.join(dir, "index.html"), "<h1>edited</h1>\n");
  const sep = await realise(dir, "imageSeparate");
  t.is(sep.code, 0, sep.stderr.slice(-4000));
  t.deepEqual(sep.built, ["demo-initrd.cpio", "demo-rootfs", "demo-separate-image", "index.html"]);
  const emb = await realise(dir, "image");
  t.is(emb.code, 0, emb.stderr.slice(-4000));
  t.deepEqual(emb.built, ["demo-image", "demo-unikraft-0.16.3-einitrd"]);
});

test("the kernel is a function of its inputs: a second store elsewhere and `ukb check` give the same bytes", async (t) => {
  const a = tempDir("ukb-uk-a-");
  const b = tempDir("ukb-uk-b-");
  fixture(a);
  fixture(path.join(b, "deeper/place"));
  const ra = await realise(a, "image");
  const rb = await ukb(["realise", "demo.ts", "--no-out-link", "--store", path.join(b, "other-store")], { cwd: path.join(b, "deeper/place") });
  t.is(ra.code, 0, ra.stderr.slice(-3000));
  t.is(rb.code, 0, rb.stderr.slice(-3000));
  t.is(path.basename(ra.path), path.basename(rb.stdout.trim()));
  const ka = (await realise(a, "kernel")).path;
  const kb = (await ukb(["realise", "demo.ts", "-A", "kernel", "--no-out-link", "--store", path.join(b, "other-store")], { cwd: path.join(b, "deeper/place") })).stdout.trim().split("\n")[0]!;
  t.is(crypto.createHash("sha256").update(fs.readFileSync(ka)).digest("hex"), crypto.createHash("sha256").update(fs.readFileSync(kb)).digest("hex"));
  const check = await ukb(["check", "demo.ts"], { cwd: a });
  t.is(check.code, 0, check.stdout + check.stderr.slice(-2000));
  t.regex(check.stdout, /identical\s+demo-unikraft-0\.16\.3-einitrd\b/);
  t.regex(check.stdout, /every rebuilt output is bit-identical/);
});

test("bad applications are refused at evaluation, with the recipe's line", async (t) => {
  const dir = tempDir("ukb-uk-");
  fixture(dir);
  const cases: [string, string, RegExp][] = [
    ['libs: ["foo", "bar"]', 'libs: ["foo", "baz"]', /unikraft\.app 'demo': release 0\.16\.3 has no library 'baz' \(it has foo, bar, unused\)/],
    ['name: "demo"', 'name: "de mo"', /unikraft\.app/],
    ['initrdKconfig: "vfscore"', 'initrdKconfig: "vfs"', /initrdKconfig must be "vfscore" \(up to 0\.19\) or "posix-vfs" \(0\.20 on\)/],
    ['file: "foo-1.0.tar.gz"', 'file: "foo-1.0.rar"', /only \.tar\.gz\/\.tgz and \.zip/],
  ];
  for (const [from, to, expected] of cases) {
    writeRecipe(dir, "bad.ts", RECIPE.replace(from, to).replace(/satisfies UnikraftReleaseSpec/, "as UnikraftReleaseSpec"));
    const r = await ukb(["show", "bad.ts"], { cwd: dir });
    t.is(r.code, 2, `${to}: ${r.stderr}`);
    t.regex(r.stderr, expected);
    t.regex(r.stderr, /bad\.ts:\d+/);
  }
});

test("the posix-vfs dialect (Unikraft 0.20 on) writes CONFIG_LIBPOSIX_VFS_FSTAB* and strips the app's own", async (t) => {
  const dir = tempDir("ukb-uk-");
  fixture(dir);
  writeRecipe(dir, "demo.ts", RECIPE.replace('initrdKconfig: "vfscore"', 'initrdKconfig: "posix-vfs"').replace("LIBVFSCORE_AUTOMOUNT_CI_EINITRD: true", "LIBPOSIX_VFS_FSTAB_BUILTIN_EINITRD: true"));
  const shown = JSON.parse((await ukb(["show", "demo.ts", "-A", "kernel"], { cwd: dir })).stdout) as { root: string; derivations: Record<string, { args: string[] }> };
  const script = shown.derivations[shown.root]!.args[1]!;
  t.regex(script, /'CONFIG_LIBPOSIX_VFS_FSTAB=y' 'CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN=y' 'CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN_EINITRD=y' 'CONFIG_LIBPOSIX_VFS_FSTAB_EINITRD_PATH="@APP@\/initrd\.cpio"'/);
  t.regex(script, /grep -v -E '\^\(# \)\?CONFIG_LIBPOSIX_VFS_FSTAB'/);
  const k = await realise(dir, "kernel");
  t.is(k.code, 0, k.stderr.slice(-3000));
  const text = fs.readFileSync(k.path, "latin1");
  t.is(text.match(/CONFIG_LIBPOSIX_VFS_FSTAB_BUILTIN_EINITRD=y/g)?.length, 1);
  t.regex(text, /CONFIG_LIBPOSIX_VFS_FSTAB_EINITRD_PATH="\/build\/demo\/initrd\.cpio"/);
});
