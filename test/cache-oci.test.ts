/**
 * An OCI registry as the binary cache: Debian's docker-registry (distribution
 * 2.8) on 127.0.0.1, through the CLI. Paths are image manifests with their
 * own artifactType, tagged by hash part; blobs are shared across paths.
 */
import test from "ava";
import { startRegistry, type Registry } from "./artifacts-helpers.js";
import { fixture, ok, realiseA, recipe, substituteIntoB, tempDir, ukb, writeRecipe } from "./cache-fixtures.js";

let registry: Registry;

test.before(async () => {
  registry = await startRegistry(tempDir("ukb-oci-cache-"));
});

test.after.always(async () => {
  await registry?.stop();
});

test("oci:// round trip through docker-registry, artifact manifests by tag, blobs deduplicated", async (t) => {
  const f = await fixture(t, "oci-round-trip");
  const top = await realiseA(t, f);
  const cache = `oci://${registry.host}/team/ukb-cache`;
  const up = await ukb(["copy", "--to", cache, "--sign-key", f.keyFile, f.recipe, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t, up, "copy --to");
  t.regex(up.stdout, /^3 paths uploaded to .* \(5 blobs, .*; 0 blobs already there\)/m);

  // What the registry holds for top: an OCI image manifest with ukb's artifactType, found by its tag.
  const tag = top.split("/").pop()!.slice(0, 32);
  const res = await fetch(`http://${registry.host}/v2/team/ukb-cache/manifests/${tag}`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
  t.is(res.status, 200);
  const manifest = (await res.json()) as { artifactType: string; config: { mediaType: string }; layers: { annotations: Record<string, string> }[] };
  t.is(manifest.artifactType, "application/vnd.ukb.path-info.v1+json");
  t.is(manifest.config.mediaType, "application/vnd.ukb.path-info.v1+json");
  t.true(manifest.layers.every((l) => /^[0-9a-f]{64}$/.test(l.annotations["org.ukb.blake3"] ?? "")));

  await substituteIntoB(t, f, cache);

  const changed = writeRecipe(f.dir, "graph2.ts", recipe("oci-round-trip-2"));
  ok(t, await ukb(["realise", changed, "--store", f.storeA, "--no-out-link"], { cwd: f.dir, env: f.env }), "realise changed");
  const again = await ukb(["copy", "--to", cache, "--sign-key", f.keyFile, changed, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t, again, "copy --to (changed)");
  t.regex(again.stderr, /uploaded .*-lib \(1 blobs, .*; 2 blobs already there\)/);
});
