import test from "ava";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pushLayout, writeCpio, writeOciLayout, type PushEvent } from "../src/artifacts/index.js";
import { UkbError } from "../src/errors/index.js";
import { makeFixtureTree, run, startRegistry, tempDir, type Registry } from "./artifacts-helpers.js";

const EPOCH = 1_700_000_000;
let registry: Registry | undefined;
let workDir = "";
let layout = "";
let manifestDigest = "";
/** No credentials from the developer's environment or ~/.docker leak into these tests. */
const noCreds = { env: {}, dockerConfig: "/nonexistent/config.json" };

test.before(async () => {
  workDir = await mkdtemp(path.join(os.tmpdir(), "ukb-push-"));
  registry = await startRegistry(path.join(workDir, "registry"));
  await mkdir(path.join(workDir, "in"));
  await copyFile("/bin/true", path.join(workDir, "in/kernel"));
  await makeFixtureTree(path.join(workDir, "in/tree"));
  await writeCpio({ root: path.join(workDir, "in/tree"), out: path.join(workDir, "in/initrd"), mtime: EPOCH });
  layout = path.join(workDir, "layout");
  const r = await writeOciLayout({
    out: layout,
    kernel: path.join(workDir, "in/kernel"),
    initrd: path.join(workDir, "in/initrd"),
    cmd: ["nginx", "-c", "/nginx/conf/nginx.conf"],
    unikernelType: "unikraft",
    hypervisor: "qemu",
    architecture: "amd64",
    tag: "1.0",
    created: EPOCH,
  });
  manifestDigest = r.manifestDigest;
});

test.after.always(async () => {
  await registry?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

test.serial("push: uploads the blobs and the manifest; skopeo sees the same digest; a second push uploads nothing", async (t) => {
  const events: PushEvent[] = [];
  const first = await pushLayout({ layout, reference: `${registry!.host}/ukb/nginx:1.0`, insecure: true, onEvent: (e) => events.push(e), ...noCreds });
  t.is(first.manifestDigest, manifestDigest);
  t.is(first.manifest, "pushed");
  t.is(first.uploaded.length, 2); // layer + config
  t.deepEqual(first.present, []);
  t.is(first.url, `http://${registry!.host}/v2/ukb/nginx/manifests/1.0`);
  t.deepEqual(events.map((e) => `${e.type}:${e.status}`), ["blob:uploaded", "blob:uploaded", "manifest:pushed"]);

  const inspect = JSON.parse(await run("skopeo", ["inspect", "--tls-verify=false", `docker://${registry!.host}/ukb/nginx:1.0`])) as { Digest: string; Labels: Record<string, string> };
  t.is(inspect.Digest, manifestDigest);
  t.is(inspect.Labels["com.urunc.unikernel.binary"], "/.boot/kernel");

  const second = await pushLayout({ layout, reference: `${registry!.host}/ukb/nginx:1.0`, insecure: true, ...noCreds });
  t.deepEqual(second.uploaded, []);
  t.deepEqual([...second.present].sort(), [...first.uploaded].sort());
  t.is(second.manifest, "present");

  // What the registry serves is the image, byte for byte: copy it back out and unpack it.
  const back = await tempDir(t);
  await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${registry!.host}/ukb/nginx:1.0`, `oci:${path.join(back, "l")}:1.0`]);
  await run("umoci", ["unpack", "--rootless", "--image", `${path.join(back, "l")}:1.0`, path.join(back, "b")]);
  const again = JSON.parse(await run("skopeo", ["inspect", `oci:${path.join(back, "l")}:1.0`])) as { Digest: string };
  t.is(again.Digest, manifestDigest);
});

test.serial("push: a new tag in another repository mounts the blobs from the first one", async (t) => {
  const result = await pushLayout({ layout, reference: `${registry!.host}/ukb/other:v2`, insecure: true, from: "ukb/nginx", ...noCreds });
  t.deepEqual(result.uploaded, []);
  t.is(result.mounted.length, 2);
  t.is(result.manifest, "pushed");
  const inspect = JSON.parse(await run("skopeo", ["inspect", "--tls-verify=false", `docker://${registry!.host}/ukb/other:v2`])) as { Digest: string };
  t.is(inspect.Digest, manifestDigest);
});

test("push: without insecure, a plain-http registry is not spoken to in clear", async (t) => {
  const err = await t.throwsAsync(pushLayout({ layout, reference: `${registry!.host}/ukb/tls:1.0`, ...noCreds }));
  t.true(err instanceof UkbError);
  t.regex(err!.message, /cannot reach registry https:\/\/127\.0\.0\.1:\d+/);
  t.regex((err as UkbError).hint ?? "", /insecure/);
});

test("push: bad references and layouts are refused before any request", async (t) => {
  const cases: Array<[string, RegExp]> = [
    ["ukb/nginx:1.0", /does not start with a registry host/],
    [`${registry!.host}/ukb/nginx`, /has no tag/],
    [`${registry!.host}/UKB/nginx:1.0`, /invalid repository "UKB\/nginx"/],
    [`${registry!.host}/ukb/nginx:bad:tag!`, /not a valid OCI tag/],
    [`${registry!.host}/ukb/nginx@sha256:${"0".repeat(64)}`, /has a digest/],
  ];
  for (const [reference, message] of cases) {
    const err = await t.throwsAsync(pushLayout({ layout, reference, insecure: true, ...noCreds }), undefined, reference);
    t.is((err as UkbError).exitCode, 2, reference);
    t.regex(err!.message, message, reference);
  }
  const missing = await t.throwsAsync(pushLayout({ layout: path.join(workDir, "nope"), reference: `${registry!.host}/ukb/x:1`, insecure: true, ...noCreds }));
  t.regex(missing!.message, /OCI layout marker .*nope\/oci-layout does not exist/);
  const wrongTag = await t.throwsAsync(pushLayout({ layout, tag: "2.0", reference: `${registry!.host}/ukb/x:1`, insecure: true, ...noCreds }));
  t.regex(wrongTag!.message, /has no manifest 2\.0 to push \(it has: 1\.0\)/);
});
