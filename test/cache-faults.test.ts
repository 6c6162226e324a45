/**
 * Caches that misbehave, staged with msw (which intercepts the global fetch
 * of this process, so substitution runs in-process here): 500s, resets, a
 * truncated blob, garbage, slow answers, a blob that stalls. Each is a
 * warning and a local build — never a corrupt store, never a hang.
 */
import fs from "node:fs";
import path from "node:path";
import test from "ava";
import { http, HttpResponse } from "msw";
import { setupServer } from "msw/node";
import { openSubstituters } from "../src/cache/index.js";
import { loadRecipe, selectExport } from "../src/recipe/load.js";
import { execute } from "../src/schedule/execute.js";
import { makePlan, planSubstitutions } from "../src/schedule/plan.js";
import type { ScheduleEvent } from "../src/schedule/events.js";
import { Store, verifyStore } from "../src/store/index.js";
import { fixture, ok, realiseA, ukb, type Fixture } from "./cache-fixtures.js";

type Fault = "none" | "info-500" | "info-reset" | "info-garbage" | "info-slow" | "blob-500" | "blob-truncated" | "blob-reset" | "blob-stall" | "blob-garbage";

let f: Fixture;
let cacheDir: string;
const faults = new Map<string, Fault>(); // host → what goes wrong there
let slowAnswered = false;

/** Serves the file cache at http://<host>/…, with the host's fault. */
async function serve(host: string, rel: string): Promise<Response> {
  const fault = faults.get(host) ?? "none";
  const file = path.join(cacheDir, rel);
  const isInfo = rel.startsWith("info/");
  if (isInfo && fault === "info-500") return new HttpResponse("boom", { status: 500, statusText: "Internal Server Error" });
  if (isInfo && fault === "info-reset") return HttpResponse.error();
  if (isInfo && fault === "info-garbage") return new HttpResponse("<html>captive portal</html>", { status: 200 });
  if (isInfo && fault === "info-slow") {
    // Answers, eventually (an unref'd timer: it does not keep the test process alive).
    await new Promise((r) => setTimeout(r, 30_000).unref());
    slowAnswered = true;
  }
  if (!fs.existsSync(file)) return new HttpResponse("no", { status: 404, statusText: "Not Found" });
  // A copy with an ArrayBuffer of its own: readFileSync hands small files out of Node's shared
  // Buffer pool, and a web byte stream detaches the ArrayBuffer of what it enqueues, which
  // emptied the bodies of other responses served from the same pool ("manifest: empty").
  const bytes = new Uint8Array(fs.readFileSync(file));
  const big = !isInfo && bytes.length > 100; // the file blobs, not the tiny manifests
  if (big && fault === "blob-500") return new HttpResponse("boom", { status: 500, statusText: "Internal Server Error" });
  if (big && fault === "blob-reset") return HttpResponse.error();
  if (big && fault === "blob-truncated") return new HttpResponse(bytes.subarray(0, bytes.length >> 1), { headers: { "content-length": String(bytes.length >> 1) } });
  if (big && fault === "blob-garbage") return new HttpResponse(new Uint8Array(bytes.length).fill(0x55), { headers: { "content-length": String(bytes.length) } });
  if (big && fault === "blob-stall") {
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(bytes.subarray(0, 10));
        // then nothing, ever
      },
    });
    return new HttpResponse(stream, { headers: { "content-length": String(bytes.length) } });
  }
  return new HttpResponse(bytes, { headers: { "content-length": String(bytes.length) } });
}

const server = setupServer(
  http.all("http://*.cache.test/*", async ({ request }) => {
    const u = new URL(request.url);
    if (request.method === "HEAD") return new HttpResponse(null, { status: fs.existsSync(path.join(cacheDir, u.pathname.slice(1))) ? 200 : 404 });
    return serve(u.hostname, u.pathname.slice(1));
  }),
);

test.before(async (t) => {
  f = await fixture(t as unknown as import("ava").ExecutionContext, "faults");
  await realiseA(t as unknown as import("ava").ExecutionContext, f);
  cacheDir = path.join(f.dir, "cache");
  const up = await ukb(["copy", "--to", `file://${cacheDir}`, "--sign-key", f.keyFile, f.recipe, "--store", f.storeA], { cwd: f.dir, env: f.env });
  ok(t as unknown as import("ava").ExecutionContext, up, "copy --to");
  server.listen({ onUnhandledRequest: "bypass" });
});

test.after.always(() => server.close());

/** Realises the fixture in a fresh store B in this process, from the caches at `hosts`; returns the events. */
async function realiseFrom(name: string, hosts: string[], timeouts = { lookupTimeoutMs: 3000, idleTimeoutMs: 20_000 }): Promise<{ events: ScheduleEvent[]; store: string }> {
  const storeDir = path.join(f.dir, `B-${name}`);
  const store = Store.open(storeDir);
  try {
    const recipe = await loadRecipe(f.recipe);
    const target = selectExport(recipe, undefined);
    const events: ScheduleEvent[] = [];
    const caches = await openSubstituters(
      { substituters: hosts.map((h) => `http://${h}/`), trustedKeys: [f.publicKey], verify: true },
      { ...timeouts, onWarning: (cache, message) => events.push({ type: "cache-warning", cache, message }) },
    );
    const plan = await planSubstitutions(store, makePlan(store, recipe.graph, [target]), caches);
    const result = await execute(store, plan, { jobs: 2, cores: 1, listener: (e) => events.push(e), caches });
    if (result.failed.length > 0) throw result.failed[0]!.error;
    const report = await verifyStore(store);
    if (report.problems.length > 0) throw new Error(`store verify: ${JSON.stringify(report.problems)}`);
    return { events, store: storeDir };
  } finally {
    store.close();
  }
}

const warnings = (events: ScheduleEvent[]) => events.filter((e): e is Extract<ScheduleEvent, { type: "cache-warning" }> => e.type === "cache-warning").map((e) => e.message);
const builtLocally = (events: ScheduleEvent[], name: string) => events.some((e) => e.type === "done" && e.name === name);
const fetched = (events: ScheduleEvent[], name: string) => events.some((e) => e.type === "substituted" && e.name === name);

test("a healthy HTTP cache (through msw): everything substituted, nothing built", async (t) => {
  faults.set("ok.cache.test", "none");
  const { events } = await realiseFrom("healthy", ["ok.cache.test"]);
  t.deepEqual(warnings(events), []);
  t.true(fetched(events, "top"));
  t.false(events.some((e) => e.type === "start"));
});

const lookupFaults: [Fault, RegExp][] = [
  ["info-500", /HTTP 500 Internal Server Error; not using this cache for the rest of the run/],
  ["info-reset", /network error|fetch failed|Failed to fetch/],
  ["info-garbage", /not a valid path info/],
];
for (const [fault, message] of lookupFaults) {
  test(`lookup fault ${fault}: one warning, the cache is dropped, everything is built`, async (t) => {
    const host = `${fault}.cache.test`;
    faults.set(host, fault);
    const { events } = await realiseFrom(fault, [host]);
    const w = warnings(events);
    t.is(w.length, 1, w.join("\n"));
    t.regex(w[0]!, message);
    t.true(builtLocally(events, "top"));
  });
}

test("a cache that does not answer in time is skipped after the lookup timeout", async (t) => {
  const host = "slow.cache.test";
  faults.set(host, "info-slow");
  const { events } = await realiseFrom("slow", [host], { lookupTimeoutMs: 300, idleTimeoutMs: 20_000 });
  const w = warnings(events);
  t.is(w.length, 1);
  t.regex(w[0]!, /no answer within 0\.3 s; not using this cache/);
  t.true(builtLocally(events, "top"));
  t.false(slowAnswered, "the realise did not wait for the slow answer");
});

const fetchFaults: [Fault, RegExp][] = [
  ["blob-500", /HTTP 500/],
  ["blob-reset", /network error|fetch failed|terminated|Failed to fetch/],
  ["blob-truncated", /truncated|unexpected EOF|not a valid zstd stream/],
  ["blob-garbage", /not a valid zstd stream|does not match its hash|bytes announced/],
  ["blob-stall", /no data for 0\.5 s/],
];
for (const [fault, message] of fetchFaults) {
  test(`download fault ${fault}: a warning, then the derivation is built locally`, async (t) => {
    const host = `${fault}.cache.test`;
    faults.set(host, fault);
    // Only the stall needs a short idle timeout; the others get a long one, since a loaded CI
    // machine (every test file at once on 2 cores) can pause this event loop for half a second
    // mid-download, which turned a garbage blob into "no data for 0.5 s".
    const idleTimeoutMs = fault === "blob-stall" ? 500 : 20_000;
    const { events, store } = await realiseFrom(fault, [host], { lookupTimeoutMs: 3000, idleTimeoutMs });
    const w = warnings(events);
    t.true(w.length >= 1, "a warning");
    t.true(w.some((m) => message.test(m)), w.join("\n"));
    t.true(w.some((m) => /building '\w+' locally/.test(m)));
    t.true(builtLocally(events, "top") || builtLocally(events, "lib"));
    t.true(fs.readdirSync(path.join(store, "store")).length > 0);
  });
}

test("a failing cache first in the list does not stop a healthy second one", async (t) => {
  faults.set("down.cache.test", "info-500");
  faults.set("good.cache.test", "none");
  const { events } = await realiseFrom("priority", ["down.cache.test", "good.cache.test"]);
  t.is(warnings(events).length, 1);
  t.true(fetched(events, "top"));
  t.false(events.some((e) => e.type === "start"));
});
