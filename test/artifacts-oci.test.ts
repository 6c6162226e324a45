import test from "ava";
import { copyFile, mkdir, readFile, readdir, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { writeCpio, writeOciArchive, writeOciLayout, type WriteOciLayoutOptions } from "../src/artifacts/index.js";
import { UkbError } from "../src/errors/index.js";
import { allFiles, makeFixtureTree, run, tempDir } from "./artifacts-helpers.js";

const EPOCH = 1_700_000_000;
const TAG = "1.0";

/** A small x86-64 ELF kernel stand-in, and an initrd built from the fixture tree. */
async function inputs(dir: string): Promise<{ kernel: string; initrd: string }> {
  await mkdir(dir, { recursive: true });
  const kernel = path.join(dir, "kernel");
  await copyFile("/bin/true", kernel);
  await makeFixtureTree(path.join(dir, "tree"));
  const initrd = path.join(dir, "initrd.cpio");
  await writeCpio({ root: path.join(dir, "tree"), out: initrd, mtime: EPOCH });
  return { kernel, initrd };
}

function options(kernel: string, initrd: string | undefined, out: string): WriteOciLayoutOptions {
  const o: WriteOciLayoutOptions = {
    out,
    kernel,
    cmd: ["nginx", "-c", "/nginx/conf/nginx.conf"],
    env: { GREETING: "hello", MODE: "test=1" },
    unikernelType: "unikraft",
    unikernelVersion: "0.20.0",
    hypervisor: "qemu",
    architecture: "amd64",
    labels: { "org.opencontainers.image.title": "nginx" },
    tag: TAG,
    created: EPOCH,
  };
  if (initrd !== undefined) o.initrd = initrd;
  return o;
}

const EXPECTED_URUNC = {
  "com.urunc.unikernel.binary": "/.boot/kernel",
  "com.urunc.unikernel.cmdline": "-c /nginx/conf/nginx.conf",
  "com.urunc.unikernel.hypervisor": "qemu",
  "com.urunc.unikernel.initrd": "/.boot/rootfs",
  "com.urunc.unikernel.mountRootfs": "false",
  "com.urunc.unikernel.unikernelType": "unikraft",
  "com.urunc.unikernel.unikernelVersion": "0.20.0",
};

test("oci: the layout validates, unpacks with umoci to the bunny shape, and skopeo reads labels and Cmd", async (t) => {
  const dir = await tempDir(t);
  const { kernel, initrd } = await inputs(dir);
  const out = path.join(dir, "image");
  const result = await writeOciLayout(options(kernel, initrd, out));
  t.regex(result.manifestDigest, /^sha256:[0-9a-f]{64}$/);

  await run("oci-image-tool", ["validate", "--type", "image", "--ref", `name=${TAG}`, out]);

  const bundle = path.join(dir, "bundle");
  await run("umoci", ["unpack", "--rootless", "--image", `${out}:${TAG}`, bundle]);
  const rootfs = path.join(bundle, "rootfs");
  t.deepEqual(await readFile(path.join(rootfs, ".boot/kernel")), await readFile(kernel));
  t.deepEqual(await readFile(path.join(rootfs, ".boot/rootfs")), await readFile(initrd));
  t.deepEqual((await readdir(rootfs)).sort(), [".boot", "urunc.json"]);
  const uruncJson = JSON.parse(await readFile(path.join(rootfs, "urunc.json"), "utf8")) as Record<string, string>;
  const decoded = Object.fromEntries(Object.entries(uruncJson).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]));
  t.deepEqual(decoded, EXPECTED_URUNC);
  for (const v of Object.values(uruncJson)) t.is(Buffer.from(v, "base64").toString("base64"), v, "standard base64");

  const config = JSON.parse(await run("skopeo", ["inspect", "--config", `oci:${out}:${TAG}`])) as {
    created: string;
    architecture: string;
    os: string;
    config: { Cmd: string[]; Env: string[]; Labels: Record<string, string> };
    history: Array<{ created: string }>;
  };
  t.is(config.created, "2023-11-14T22:13:20Z");
  t.is(config.architecture, "amd64");
  t.is(config.os, "linux");
  t.deepEqual(config.config.Cmd, ["nginx", "-c", "/nginx/conf/nginx.conf"]);
  t.deepEqual(config.config.Env, ["GREETING=hello", "MODE=test=1"]);
  t.deepEqual(config.config.Labels, { ...EXPECTED_URUNC, "org.opencontainers.image.title": "nginx" });
  t.is(config.history[0]!.created, config.created);

  const manifest = JSON.parse(await run("skopeo", ["inspect", "--raw", `oci:${out}:${TAG}`])) as { annotations: Record<string, string> };
  t.like(manifest.annotations, { ...EXPECTED_URUNC, "org.opencontainers.image.created": "2023-11-14T22:13:20Z" });
  const inspect = JSON.parse(await run("skopeo", ["inspect", `oci:${out}:${TAG}`])) as { Digest: string };
  t.is(inspect.Digest, result.manifestDigest);

  const stat = await run("umoci", ["stat", "--image", `${out}:${TAG}`]);
  t.regex(stat, /ukb ociImage/);

  const index = JSON.parse(await readFile(path.join(out, "index.json"), "utf8")) as { manifests: Array<{ digest: string; annotations: Record<string, string>; platform: unknown }> };
  t.is(index.manifests[0]!.digest, result.manifestDigest);
  t.deepEqual(index.manifests[0]!.annotations, { "org.opencontainers.image.ref.name": TAG });
  t.deepEqual(index.manifests[0]!.platform, { architecture: "amd64", os: "linux" });
});

test("oci: two builds from copies of the inputs in other places are byte-identical, and so are their archives", async (t) => {
  const dir = await tempDir(t);
  const a = await inputs(path.join(dir, "a"));
  await mkdir(path.join(dir, "b/deeper"), { recursive: true });
  const b = { kernel: path.join(dir, "b/deeper/k"), initrd: path.join(dir, "b/deeper/i") };
  await copyFile(a.kernel, b.kernel);
  await copyFile(a.initrd, b.initrd);
  await utimes(b.kernel, 12345, 12345);

  const ra = await writeOciLayout(options(a.kernel, a.initrd, path.join(dir, "out-a")));
  const rb = await writeOciLayout(options(b.kernel, b.initrd, path.join(dir, "elsewhere-b")));
  t.deepEqual(ra, rb);
  t.deepEqual(await allFiles(path.join(dir, "out-a")), await allFiles(path.join(dir, "elsewhere-b")));

  // A different SOURCE_DATE_EPOCH is a different image.
  const rc = await writeOciLayout({ ...options(a.kernel, a.initrd, path.join(dir, "out-c")), created: EPOCH + 1 });
  t.not(rc.manifestDigest, ra.manifestDigest);

  const xa = await writeOciArchive(path.join(dir, "out-a"), path.join(dir, "a.tar"));
  const xb = await writeOciArchive(path.join(dir, "elsewhere-b"), path.join(dir, "b.tar"));
  t.deepEqual(xa, xb);
  t.deepEqual(await readFile(path.join(dir, "a.tar")), await readFile(path.join(dir, "b.tar")));
  const inspect = JSON.parse(await run("skopeo", ["inspect", `oci-archive:${path.join(dir, "a.tar")}:${TAG}`])) as { Digest: string };
  t.is(inspect.Digest, ra.manifestDigest);
  const listing = (await run("bsdtar", ["-tf", path.join(dir, "a.tar")])).trim().split("\n");
  t.deepEqual(listing.slice(0, 2), ["blobs/", "blobs/sha256/"]);
  t.deepEqual(listing.slice(-2), ["index.json", "oci-layout"]);
  // skopeo's own copy out of the archive finds every blob intact.
  await run("skopeo", ["copy", `oci-archive:${path.join(dir, "a.tar")}:${TAG}`, `oci:${path.join(dir, "copied")}:${TAG}`]);
  await run("umoci", ["unpack", "--rootless", "--image", `${path.join(dir, "copied")}:${TAG}`, path.join(dir, "copied-bundle")]);
});

test("oci: kraftkit shape, no initrd, uncompressed layer", async (t) => {
  const dir = await tempDir(t);
  const { kernel, initrd } = await inputs(dir);
  const out = path.join(dir, "kraft");
  await writeOciLayout({
    ...options(kernel, initrd, out),
    kraftkit: { kconfig: ["CONFIG_LIBVFSCORE=y", "# CONFIG_FOO is not set", "", "CONFIG_UK_APP=/home/me/app", "CONFIG_HAVE_BOOTENTRY=y"] },
  });
  await run("oci-image-tool", ["validate", "--type", "image", "--ref", `name=${TAG}`, out]);
  await run("umoci", ["unpack", "--rootless", "--image", `${out}:${TAG}`, path.join(dir, "kb")]);
  t.deepEqual(await readFile(path.join(dir, "kb/rootfs/unikraft/bin/kernel")), await readFile(kernel));
  t.deepEqual(await readFile(path.join(dir, "kb/rootfs/unikraft/bin/initrd")), await readFile(initrd));
  t.deepEqual(await readFile(path.join(dir, "kb/rootfs/.boot/kernel")), await readFile(kernel));
  const config = JSON.parse(await run("skopeo", ["inspect", "--config", `oci:${out}:${TAG}`])) as Record<string, unknown>;
  t.deepEqual(config["os.features"], ["CONFIG_HAVE_BOOTENTRY=y", "CONFIG_LIBVFSCORE=y"]);
  const manifest = JSON.parse(await run("skopeo", ["inspect", "--raw", `oci:${out}:${TAG}`])) as { annotations: Record<string, string> };
  t.like(manifest.annotations, {
    "org.unikraft.kernel.image": "/unikraft/bin/kernel",
    "org.unikraft.kernel.initrd": "/unikraft/bin/initrd",
    "org.unikraft.kernel.version": "0.20.0",
    "org.unikraft.kernel.plat": "qemu",
    "org.unikraft.kernel.arch": "x86_64",
  });

  const bare = path.join(dir, "bare");
  const { env: _env, ...noEnv } = options(kernel, undefined, bare);
  await writeOciLayout({ ...noEnv, compression: "none", mountRootfs: true, cmd: ["hello"] });
  await run("oci-image-tool", ["validate", "--type", "image", "--ref", `name=${TAG}`, bare]);
  await run("umoci", ["unpack", "--rootless", "--image", `${bare}:${TAG}`, path.join(dir, "bb")]);
  t.deepEqual((await readdir(path.join(dir, "bb/rootfs/.boot"))).sort(), ["kernel"]);
  const json = JSON.parse(await readFile(path.join(dir, "bb/rootfs/urunc.json"), "utf8")) as Record<string, string>;
  t.false("com.urunc.unikernel.initrd" in json);
  t.is(Buffer.from(json["com.urunc.unikernel.mountRootfs"]!, "base64").toString(), "true");
  t.is(json["com.urunc.unikernel.cmdline"], "");
  const raw = JSON.parse(await run("skopeo", ["inspect", "--raw", `oci:${bare}:${TAG}`])) as { layers: Array<{ mediaType: string }> };
  t.is(raw.layers[0]!.mediaType, "application/vnd.oci.image.layer.v1.tar");
  const cfg = JSON.parse(await run("skopeo", ["inspect", "--config", `oci:${bare}:${TAG}`])) as { config: Record<string, unknown> };
  t.false("Env" in cfg.config);
});

test("oci: bad input throws a clear error and leaves no output", async (t) => {
  const dir = await tempDir(t);
  const { kernel, initrd } = await inputs(dir);
  const notElf = path.join(dir, "not-elf");
  await writeFile(notElf, "#!/bin/sh\n");
  const armElf = path.join(dir, "arm-elf");
  const header = Buffer.alloc(64);
  header.write("\x7fELF", 0, "latin1");
  header[4] = 2; // 64-bit
  header[5] = 1; // little-endian
  header.writeUInt16LE(183, 18); // EM_AARCH64
  await writeFile(armElf, header);
  const minimalElf = path.join(dir, "minimal-elf");
  await writeFile(minimalElf, Buffer.from("\x7fELF fake kernel", "latin1"));

  const out = path.join(dir, "out");
  const base = options(kernel, initrd, out);
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["kernel not ELF", { kernel: notElf }, /not-elf is not an ELF file/],
    ["kernel missing", { kernel: path.join(dir, "nope") }, /kernel .*nope does not exist/],
    ["kernel for another architecture", { kernel: armElf }, /ELF for aarch64, but the image architecture is amd64/],
    ["initrd missing", { initrd: path.join(dir, "no-initrd") }, /initrd .*no-initrd does not exist/],
    ["argument with a space", { cmd: ["nginx", "-g", "daemon off;"] }, /cmd\[2\] "daemon off;" cannot reach the unikernel intact/],
    ["argument with a quote", { cmd: ["nginx", "-g", '"x"'] }, /cmd\[2\].*without spaces or quotes/],
    ["argument with a newline", { cmd: ["nginx", "a\nb"] }, /cmd\[1\] "a\\nb"/],
    ["non-ASCII argument", { cmd: ["nginx", "café"] }, /cmd\[1\]/],
    ["empty argument", { cmd: ["nginx", ""] }, /cmd\[1\] is empty/],
    ["no program name", { cmd: [] }, /program name first/],
    ["env value with a space", { env: ["A=b c"] }, /env A="b c" cannot reach/],
    ["env name invalid", { env: { "1X": "y" } }, /env name "1X"/],
    ["env set twice", { env: ["A=1", "A=2"] }, /env A is set twice/],
    ["boot line too long", { cmd: ["x", "y".repeat(2000)] }, /at most 1536 fit/],
    ["bad tag", { tag: "v1:latest" }, /tag "v1:latest" is not a valid OCI tag/],
    ["tag starting with a dot", { tag: ".hidden" }, /not a valid OCI tag/],
    ["tag too long", { tag: "a".repeat(129) }, /not a valid OCI tag/],
    ["unknown unikernel type", { unikernelType: "unikraf" }, /unikernelType "unikraf" is not one urunc runs/],
    ["unsupported pair", { hypervisor: "hvt" }, /urunc does not run unikraft on hypervisor "hvt"; use one of qemu, firecracker/],
    ["bad version", { unikernelVersion: "latest" }, /unikernelVersion "latest"/],
    ["label that ukb owns", { labels: { "com.urunc.unikernel.binary": "/x" } }, /label com.urunc.unikernel.binary is written by ukb/],
    ["bad created", { created: -5 }, /created must be SOURCE_DATE_EPOCH/],
    ["bad architecture", { architecture: "riscv64" }, /architecture "riscv64" is not supported/],
    ["bad kconfig line", { kraftkit: { kconfig: ["LIBVFSCORE=y"] } }, /kraftkit.kconfig\[0\]/],
  ];
  for (const [name, change, message] of cases) {
    const err = await t.throwsAsync(writeOciLayout({ ...base, ...change } as WriteOciLayoutOptions), undefined, name);
    t.true(err instanceof UkbError, name);
    t.is((err as UkbError).exitCode, 2, name);
    t.is((err as UkbError).kind, "artifact", name);
    t.regex(err!.message, message, name);
    t.false(err!.message.includes("\n") && err!.message.split("\n").length > 2, `${name}: one or two lines`);
  }
  // A minimal fake ELF (magic only) is accepted: nothing says it is the wrong architecture.
  await writeOciLayout({ ...base, kernel: minimalElf, out: path.join(dir, "minimal") });

  await mkdir(path.join(dir, "exists"));
  await t.throwsAsync(writeOciLayout({ ...base, out: path.join(dir, "exists") }), { message: /already exists/ });

  // Nothing named out, and no temporary directory beside it.
  const left = (await readdir(dir)).sort();
  t.deepEqual(left, ["arm-elf", "exists", "initrd.cpio", "kernel", "minimal", "minimal-elf", "not-elf", "tree"]);
});

test("oci: a failure while writing removes the temporary directory", async (t) => {
  const dir = await tempDir(t);
  const { kernel } = await inputs(dir);
  // /proc files are regular files that stat as 0 bytes but read as more: the
  // layer writer notices the size change mid-stream, deterministically.
  const err = await t.throwsAsync(writeOciLayout(options(kernel, "/proc/version", path.join(dir, "out"))));
  t.true(err instanceof UkbError);
  t.regex(err!.message, /\/proc\/version changed size while being archived/);
  t.is((err as UkbError).exitCode, 1);
  t.deepEqual((await readdir(dir)).sort(), ["initrd.cpio", "kernel", "tree"]);
});
