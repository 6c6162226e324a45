/**
 * The HTTP backend against Debian's nginx with WebDAV PUT, through the CLI:
 * the round trip, file-level deduplication, and an upload that stops half
 * way (blobs first, info last: nothing points at a missing blob).
 */
import fs from "node:fs";
import path from "node:path";
import test from "ava";
import { fixture, ok, realiseA, recipe, startNginxDav, storePaths, substituteIntoB, tempDir, ukb, writeRecipe, type Server } from "./cache-fixtures.js";

let nginx: Server;

test.before(async () => {
  nginx = await startNginxDav(tempDir("ukb-nginx-dav-"));
});

test.after.always(async () => {
  await nginx?.stop();
});

test("http:// round trip through nginx (WebDAV PUT), and only changed files are uploaded again", async (t) => {
  const f = await fixture(t, "http-round-trip");
  await realiseA(t, f);
  const cache = `${nginx.url}/team/cache`;
  const up = await ukb(["copy", "--to", cache, "--sign-key", f.keyFile, f.recipe, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t, up, "copy --to");
  t.regex(up.stdout, /^3 paths uploaded to .* \(5 blobs, .*; 0 blobs already there\)/m);
  t.true(fs.existsSync(path.join(nginx.root, "team/cache/info")));
  await substituteIntoB(t, f, cache);

  // Another build of lib that differs in one small file: only its manifest is new, the big files are there.
  const changed = writeRecipe(f.dir, "graph2.ts", recipe("http-round-trip-2"));
  ok(t, await ukb(["realise", changed, "--store", f.storeA, "--no-out-link"], { cwd: f.dir, env: f.env }), "realise changed");
  const again = await ukb(["copy", "--to", cache, "--sign-key", f.keyFile, changed, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t, again, "copy --to (changed)");
  t.regex(again.stderr, /uploaded .*-lib \(1 blobs, .*; 2 blobs already there\)/);
});

test("an upload cut off after its blobs leaves no info behind", async (t) => {
  const f = await fixture(t, "http-interrupted");
  const top = await realiseA(t, f);
  // A prefix whose info/ cannot be written (a file stands where the folder would be): every PUT of an info fails.
  const prefix = path.join(nginx.root, "broken");
  fs.mkdirSync(prefix, { recursive: true });
  fs.writeFileSync(path.join(prefix, "info"), "not a folder");
  const cache = `${nginx.url}/broken`;
  const up = await ukb(["copy", "--to", cache, "--sign-key", f.keyFile, f.recipe, "--store", f.storeA], { cwd: f.dir, env: f.env });
  t.is(up.code, 1);
  t.regex(up.stderr, /PUT info\/\w+\.json: HTTP \d+/);
  t.true(fs.readdirSync(path.join(prefix, "blob")).length > 0, "blobs went first");
  // A consumer finds no path there and builds.
  const r = await ukb(["realise", f.recipe, "--store", f.storeB, "--no-out-link", "--substituters", cache, "--trusted-keys", f.publicKey], { cwd: f.dir, env: f.env });
  ok(t, r, "realise in B");
  t.is(r.stdout.trim(), top.replace(f.storeA, f.storeB));
  t.true(storePaths(f.storeB).length > 0);
  ok(t, await ukb(["store", "verify", "--store", f.storeB], { cwd: f.dir, env: f.env }), "verify");
});
