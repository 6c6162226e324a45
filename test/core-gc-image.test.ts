/**
 * `ukb push` / `ukb run` given an image by path (`./result`, a store path)
 * keep it from gc while they run, as they do an image they realise.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import test from "ava";
import { IMAGE, outcome, tempDir, ukb, ukbSpawn, writeRecipe } from "./helpers/ukb.js";

test("an image pushed by path stays through a gc while the push runs, and goes once it has exited", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "image.ts", IMAGE);
  const store = path.join(dir, "store");
  const built = await ukb(["realise", "image.ts", "--store", store, "--no-out-link"], { cwd: dir });
  t.is(built.code, 0, built.stderr);
  const image = built.stdout.trim().split("\n")[0]!;
  t.true(fs.existsSync(path.join(image, "oci-layout")));

  // A registry that takes the connection and never answers: the push waits, with the image open.
  let connected!: () => void;
  const reached = new Promise<void>((r) => (connected = r));
  const sockets: net.Socket[] = [];
  const stall = net.createServer((s) => {
    sockets.push(s);
    connected();
  });
  await new Promise<void>((r) => stall.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    stall.close();
  });
  const port = (stall.address() as net.AddressInfo).port;
  const push = ukbSpawn(["push", image, `127.0.0.1:${port}/ukb/image:1`, "--insecure", "--store", store], { cwd: dir });
  t.teardown(() => void (push.exitCode === null && push.kill("SIGKILL")));
  const pushed = outcome(push);
  const first = await Promise.race([reached.then(() => undefined), pushed]);
  t.is(first, undefined, `push ended before reaching the registry: ${first?.stderr}`);

  // Nothing roots the image (--no-out-link) but the running push.
  const during = await ukb(["store", "gc", "--store", store]);
  t.is(during.code, 0, during.stderr);
  t.false(during.stdout.includes(path.basename(image)), during.stdout);
  t.true(fs.existsSync(path.join(image, "oci-layout")));
  t.is((await ukb(["store", "info", image, "--store", store])).code, 0);

  push.kill("SIGKILL");
  await pushed;
  const after = await ukb(["store", "gc", "--store", store]);
  t.is(after.code, 0, after.stderr);
  t.true(after.stdout.includes(`deleted ${image}\n`), after.stdout);
  t.false(fs.existsSync(image));
});
