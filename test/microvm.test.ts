/**
 * Issue 6 end to end, for real: from an empty store and with no route to the
 * internet, build nginx, musl, the initramfs and the image from upstream
 * tarballs and Debian's archive, boot the image under QEMU (plain emulation
 * here), get an HTTP 200 with the recipe's index page; build it again in a
 * second empty store elsewhere and compare every output bit for bit.
 */
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { allFiles } from "./artifacts-helpers.js";
import { ROOT, tempDir, ukb, ukbSpawn } from "./helpers/ukb.js";

const RECIPE = path.join(ROOT, "recipes/nginx-microvm.ts");
const INDEX = fs.readFileSync(path.join(ROOT, "recipes/nginx-microvm/index.html"), "utf8");

test.serial("the nginx micro-VM builds from Debian's archive alone, boots, serves its page, and rebuilds bit-identically", async (t) => {
  t.timeout(25 * 60_000);
  const dir = tempDir("ukb-microvm-");
  const storeA = path.join(dir, "store-a");
  const storeB = path.join(dir, "elsewhere/store-b");

  const a = await ukb(["realise", RECIPE, "--store", storeA, "--no-out-link", "--cores", "2"], { cwd: dir });
  t.is(a.code, 0, a.stderr.slice(-3000));
  const image = a.stdout.trim();
  t.true(fs.existsSync(path.join(image, "oci-layout")));

  // Boot what the image holds, as urunc would; the VM is killed by PID whatever happens.
  const vm = ukbSpawn(["run", RECIPE, "--store", storeA, "--until-ready", "--quiet", "--timeout", "180"], { cwd: dir });
  t.teardown(() => {
    if (vm.exitCode === null) vm.kill("SIGKILL");
  });
  let out = "";
  let err = "";
  vm.stdout!.on("data", (d) => (out += d));
  vm.stderr!.on("data", (d) => (err += d));
  const code = await new Promise<number | null>((resolve) => vm.on("close", resolve));
  t.is(code, 0, err.slice(-3000));
  const m = /http:\/\/127\.0\.0\.1:(\d+)\/ answered 200 ([\d.]+) s/.exec(out);
  t.truthy(m, out);
  t.log(`micro-VM: first HTTP 200 ${m?.[2]} s after QEMU started (no KVM)`);

  // The page itself, from a fresh boot we talk to (run without --until-ready, then stop it).
  const port = 20000 + Math.floor(Math.random() * 20000);
  const live = ukbSpawn(["run", image, "--port", String(port), "--quiet", "--timeout", "180"], { cwd: dir });
  t.teardown(() => {
    if (live.exitCode === null) live.kill("SIGTERM");
  });
  let liveOut = "";
  live.stdout!.on("data", (d) => (liveOut += d));
  const deadline = Date.now() + 180_000;
  while (!/answered 200/.test(liveOut) && Date.now() < deadline && live.exitCode === null) await new Promise((r) => setTimeout(r, 100));
  const res = await fetch(`http://127.0.0.1:${port}/`);
  t.is(res.status, 200);
  t.is(await res.text(), INDEX);
  live.kill("SIGTERM");
  await new Promise((r) => live.on("close", r));

  // A second empty store at another path: the same bytes, everywhere.
  const b = await ukb(["realise", RECIPE, "--store", storeB, "--no-out-link", "--cores", "2"], { cwd: dir });
  t.is(b.code, 0, b.stderr.slice(-3000));
  t.is(path.basename(b.stdout.trim()), path.basename(image));
  const fa = await allFiles(image);
  const fb = await allFiles(b.stdout.trim());
  t.deepEqual([...fa.keys()], [...fb.keys()]);
  for (const [k, v] of fa) t.true(v.equals(fb.get(k)!), `${k} differs between the two stores`);
  for (const attr of ["nginx", "musl", "initrd", "kernel"]) {
    // The first line is the main output (the kernel also has its modules as a second output).
    const pa = (await ukb(["realise", RECIPE, "-A", attr, "--store", storeA, "--no-out-link"], { cwd: dir })).stdout.split("\n")[0]!;
    const pb = (await ukb(["realise", RECIPE, "-A", attr, "--store", storeB, "--no-out-link"], { cwd: dir })).stdout.split("\n")[0]!;
    const ia = JSON.parse((await ukb(["store", "info", pa, "--json", "--store", storeA])).stdout) as { contentHash: string };
    const ib = JSON.parse((await ukb(["store", "info", pb, "--json", "--store", storeB])).stdout) as { contentHash: string };
    t.is(ia.contentHash, ib.contentHash, `${attr}: same content hash in both stores`);
  }

  const check = await ukb(["check", RECIPE, "--store", storeA], { cwd: dir });
  t.is(check.code, 0, check.stdout + check.stderr.slice(-2000));
  t.regex(check.stdout, /every rebuilt output is bit-identical/);
});
