/**
 * Registry auth without a real auth server: msw plays a registry that wants
 * a Bearer token (from a token service that wants Basic credentials), and one
 * that wants Basic directly. msw intercepts the global fetch of this test
 * process only (ava runs each file in its own process).
 */
import test from "ava";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { http, HttpResponse } from "msw";
import { setupServer } from "msw/node";
import { createHash } from "node:crypto";
import { pushLayout, resolveCredentials, writeOciLayout } from "../src/artifacts/index.js";
import { UkbError } from "../src/errors/index.js";
import { tempDir } from "./artifacts-helpers.js";

const USER = "alice";
const PASSWORD = "s3cret:with:colons";
const BASIC = "Basic " + Buffer.from(`${USER}:${PASSWORD}`).toString("base64");
const TOKEN = "token-for-ukb";

interface FakeRegistry {
  blobs: Map<string, Buffer>;
  manifests: Map<string, Buffer>;
  log: string[];
  tokenScopes: string[][];
}

function fakeRegistry(origin: string, scheme: "bearer" | "basic"): { state: FakeRegistry; handlers: ReturnType<typeof http.all>[] } {
  const state: FakeRegistry = { blobs: new Map(), manifests: new Map(), log: [], tokenScopes: [] };
  const authorized = (request: Request) => request.headers.get("authorization") === (scheme === "bearer" ? `Bearer ${TOKEN}` : BASIC);
  const challenge = () =>
    new HttpResponse(null, {
      status: 401,
      headers: {
        "www-authenticate":
          scheme === "bearer" ? `Bearer realm="https://auth.test/token",service="registry.test",scope="repository:ukb/app:pull"` : `Basic realm="registry"`,
      },
    });
  const handlers = [
    http.get("https://auth.test/token", ({ request }) => {
      const url = new URL(request.url);
      state.tokenScopes.push(url.searchParams.getAll("scope"));
      if (request.headers.get("authorization") !== BASIC || url.searchParams.get("service") !== "registry.test") {
        return HttpResponse.json({ errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] }, { status: 401 });
      }
      return HttpResponse.json({ token: TOKEN });
    }),
    http.all(`${origin}/v2/*`, async ({ request }) => {
      const url = new URL(request.url);
      state.log.push(`${request.method} ${url.pathname}${url.search}`);
      if (!authorized(request)) return challenge();
      const blob = /^\/v2\/ukb\/app\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
      if (request.method === "HEAD" && blob) return new HttpResponse(null, { status: state.blobs.has(blob[1]!) ? 200 : 404 });
      if (request.method === "POST" && url.pathname === "/v2/ukb/app/blobs/uploads/") {
        return new HttpResponse(null, { status: 202, headers: { location: "/v2/ukb/app/blobs/uploads/u1?_state=opaque" } });
      }
      if (request.method === "PUT" && url.pathname === "/v2/ukb/app/blobs/uploads/u1") {
        const bytes = Buffer.from(await request.arrayBuffer());
        const digest = url.searchParams.get("digest")!;
        if (url.searchParams.get("_state") !== "opaque") return HttpResponse.json({ errors: [{ code: "BLOB_UPLOAD_INVALID" }] }, { status: 400 });
        if (`sha256:${createHash("sha256").update(bytes).digest("hex")}` !== digest) return HttpResponse.json({ errors: [{ code: "DIGEST_INVALID" }] }, { status: 400 });
        state.blobs.set(digest, bytes);
        return new HttpResponse(null, { status: 201 });
      }
      const manifest = /^\/v2\/ukb\/app\/manifests\/([^/]+)$/.exec(url.pathname);
      if (manifest && request.method === "HEAD") {
        const m = state.manifests.get(manifest[1]!);
        if (!m) return new HttpResponse(null, { status: 404 });
        return new HttpResponse(null, { status: 200, headers: { "docker-content-digest": `sha256:${createHash("sha256").update(m).digest("hex")}` } });
      }
      if (manifest && request.method === "PUT") {
        if (request.headers.get("content-type") !== "application/vnd.oci.image.manifest.v1+json") return new HttpResponse(null, { status: 415 });
        const bytes = Buffer.from(await request.arrayBuffer());
        state.manifests.set(manifest[1]!, bytes);
        return new HttpResponse(null, { status: 201, headers: { "docker-content-digest": `sha256:${createHash("sha256").update(bytes).digest("hex")}` } });
      }
      return new HttpResponse(null, { status: 404 });
    }),
  ];
  return { state, handlers };
}

const server = setupServer();
test.before(() => server.listen({ onUnhandledRequest: "error" }));
test.afterEach(() => server.resetHandlers());
test.after.always(() => server.close());

async function makeLayout(t: Parameters<typeof tempDir>[0]): Promise<{ dir: string; layout: string; manifestDigest: string }> {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, "in"));
  await copyFile("/bin/true", path.join(dir, "in/kernel"));
  const layout = path.join(dir, "layout");
  const r = await writeOciLayout({
    out: layout,
    kernel: path.join(dir, "in/kernel"),
    cmd: ["app"],
    unikernelType: "unikraft",
    hypervisor: "qemu",
    architecture: "amd64",
    tag: "1",
    created: 0,
  });
  return { dir, layout, manifestDigest: r.manifestDigest };
}

test.serial("auth: Bearer token from the realm, with Basic credentials from the environment", async (t) => {
  const { state, handlers } = fakeRegistry("https://registry.test", "bearer");
  server.use(...handlers);
  const { layout, manifestDigest } = await makeLayout(t);
  const result = await pushLayout({
    layout,
    reference: "registry.test/ukb/app:1",
    env: { UKB_REGISTRY_USER: USER, UKB_REGISTRY_PASSWORD: PASSWORD },
    dockerConfig: "/nonexistent",
    from: "ukb/base",
  });
  t.is(result.manifest, "pushed");
  t.is(state.manifests.size, 1);
  t.is(`sha256:${createHash("sha256").update(state.manifests.get("1")!).digest("hex")}`, manifestDigest);
  t.is(state.blobs.size, 2);
  // One token, asked once, for the challenge's scope and what the push needs.
  t.deepEqual(state.tokenScopes, [["repository:ukb/app:pull", "repository:ukb/app:pull,push", "repository:ukb/base:pull"]]);
  // Only the first request went out without the token.
  t.is(state.log.filter((l) => l.startsWith("HEAD /v2/ukb/app/blobs/")).length, 3);
});

test.serial("auth: Basic, with credentials from a Docker config.json", async (t) => {
  const { state, handlers } = fakeRegistry("https://registry.test", "basic");
  server.use(...handlers);
  const { dir, layout } = await makeLayout(t);
  const dockerConfig = path.join(dir, "config.json");
  await writeFile(dockerConfig, JSON.stringify({ auths: { "https://registry.test": { auth: Buffer.from(`${USER}:${PASSWORD}`).toString("base64") } } }));
  const result = await pushLayout({ layout, reference: "registry.test/ukb/app:1", env: {}, dockerConfig });
  t.is(result.uploaded.length, 2);
  t.is(state.blobs.size, 2);
  const again = await pushLayout({ layout, reference: "registry.test/ukb/app:1", env: {}, dockerConfig });
  t.deepEqual(again.uploaded, []);
  t.is(again.manifest, "present");
});

test.serial("auth: missing or wrong credentials give a clear error", async (t) => {
  const basic = fakeRegistry("https://registry.test", "basic");
  server.use(...basic.handlers);
  const { layout } = await makeLayout(t);
  const none = await t.throwsAsync(pushLayout({ layout, reference: "registry.test/ukb/app:1", env: {}, dockerConfig: "/nonexistent" }));
  t.true(none instanceof UkbError);
  t.regex(none!.message, /registry registry.test asks for a user and password/);

  const wrong = await t.throwsAsync(pushLayout({ layout, reference: "registry.test/ukb/app:1", credentials: { username: USER, password: "nope" } }));
  t.regex(wrong!.message, /registry registry.test refused the credentials for HEAD \/v2\/ukb\/app\/blobs\/sha256:/);

  server.resetHandlers();
  server.use(...fakeRegistry("https://registry.test", "bearer").handlers);
  const badToken = await t.throwsAsync(pushLayout({ layout, reference: "registry.test/ukb/app:1", credentials: { username: USER, password: "nope" } }));
  t.regex(badToken!.message, /token service https:\/\/auth.test refused a token for registry.test: HTTP 401: UNAUTHORIZED bad credentials/);
});

test("credentials: explicit beat the environment, which beats the Docker config", async (t) => {
  const dir = await tempDir(t);
  const dockerConfig = path.join(dir, "config.json");
  await writeFile(dockerConfig, JSON.stringify({ auths: { "registry.test:5000": { auth: Buffer.from("cfg:pw").toString("base64") } } }));
  const env = { UKB_REGISTRY_USER: "env", UKB_REGISTRY_PASSWORD: "pw" };
  t.deepEqual(await resolveCredentials("registry.test:5000", { credentials: { username: "x", password: "y" }, env, dockerConfig }), { username: "x", password: "y" });
  t.deepEqual(await resolveCredentials("registry.test:5000", { env, dockerConfig }), { username: "env", password: "pw" });
  t.deepEqual(await resolveCredentials("registry.test:5000", { env: {}, dockerConfig }), { username: "cfg", password: "pw" });
  t.is(await resolveCredentials("other.test", { env: {}, dockerConfig }), undefined);
  await writeFile(dockerConfig, "{not json");
  await t.throwsAsync(resolveCredentials("registry.test:5000", { env: {}, dockerConfig }), { message: /is not valid JSON/ });
});
