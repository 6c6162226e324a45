/**
 * download() against HTTP faults staged with msw (which intercepts global
 * fetch in this process): redirects, 404 then a mirror, 5xx and resets
 * retried, truncated and stalled bodies, wrong content, offline mode. Each
 * test has its own paths so the tests can run concurrently.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import test, { type ExecutionContext } from "ava";
import { delay, http, HttpResponse } from "msw";
import { setupServer } from "msw/node";
import { HashMismatchError, isUkbError, type UkbError } from "../src/errors/index.js";
import { download, hashFile, Limiter, type DownloadOptions, type DownloadProgress } from "../src/fetch/index.js";
import { entriesOf, tempDir } from "./fetch-fixtures.js";

const BASE = "http://files.test";
const BODY = Buffer.alloc(300_000);
for (let i = 0; i < BODY.length; i++) BODY[i] = (i * 7919) % 251;
const SHA = createHash("sha256").update(BODY).digest("hex");

/** Short timeouts and backoffs: the suite runs in seconds. */
const FAST = { retries: 2, backoffMs: 1, maxBackoffMs: 5, connectTimeoutMs: 5_000, idleTimeoutMs: 5_000 } satisfies Partial<DownloadOptions>;
// Only the stall tests shorten the idle timeout: on a loaded CI machine a healthy transfer can
// pause for a few hundred ms, which a short timeout would report as a stall.
const STALL = 200;

const hits = new Map<string, number>();
const hit = (p: string): number => {
  const n = (hits.get(p) ?? 0) + 1;
  hits.set(p, n);
  return n;
};
const ok = (): HttpResponse<ArrayBuffer> =>
  new HttpResponse(BODY.buffer.slice(BODY.byteOffset, BODY.byteOffset + BODY.length) as ArrayBuffer, {
    headers: { "content-type": "application/gzip", "content-length": String(BODY.length) },
  });

let inFlight = 0;
let maxInFlight = 0;

const server = setupServer(
  http.get(`${BASE}/ok.tar.gz`, () => ok()),
  http.get(`${BASE}/base/ok.tar.gz`, () => ok()),
  http.get(`${BASE}/r1`, () => HttpResponse.redirect(`${BASE}/r2`, 302)),
  http.get(`${BASE}/r2`, () => HttpResponse.redirect(`${BASE}/r3`, 301)),
  http.get(`${BASE}/r3`, () => HttpResponse.redirect(`${BASE}/ok.tar.gz`, 307)),
  http.get(`${BASE}/missing`, () => new HttpResponse("no", { status: 404, statusText: "Not Found" })),
  http.get(`http://down.test/*`, () => new HttpResponse("no", { status: 404, statusText: "Not Found" })),
  http.get(`${BASE}/flaky`, () => (hit("flaky") === 1 ? new HttpResponse("oops", { status: 500, statusText: "Internal Server Error" }) : ok())),
  http.get(`${BASE}/always-503`, () => {
    hit("always-503");
    return new HttpResponse("busy", { status: 503, statusText: "Service Unavailable" });
  }),
  http.get(`${BASE}/reset-once`, () => (hit("reset-once") === 1 ? HttpResponse.error() : ok())),
  http.get(`${BASE}/truncated-once`, () =>
    hit("truncated-once") === 1 ? new HttpResponse(BODY.subarray(0, 1000), { headers: { "content-length": String(BODY.length) } }) : ok(),
  ),
  http.get(`${BASE}/truncated`, () => new HttpResponse(BODY.subarray(0, 1000), { headers: { "content-length": "2000" } })),
  http.get(`${BASE}/stall`, () => {
    hit("stall");
    // 100 bytes, then nothing, ever.
    const stream = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new Uint8Array(100)) });
    return new HttpResponse(stream, { headers: { "content-length": "1000" } });
  }),
  http.get(`${BASE}/no-headers`, async () => {
    await delay("infinite");
    return ok();
  }),
  http.get(`${BASE}/wrong`, () => new HttpResponse("not the tarball you pinned", { headers: { "content-length": "26" } })),
  http.get(`${BASE}/offline-must-not-be-asked`, () => {
    hit("offline");
    return ok();
  }),
  http.get(`${BASE}/slow/:n`, async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await delay(40);
    inFlight--;
    return ok();
  }),
);

test.before(() => server.listen({ onUnhandledRequest: "error" }));
test.after.always(() => server.close());

async function setup(t: ExecutionContext): Promise<{ dir: string; dest: string }> {
  const dir = await tempDir(t);
  return { dir, dest: path.join(dir, "src.tar.gz") };
}

/** Expects a fetch error mentioning each pattern, and nothing left in dir. */
async function fails(t: ExecutionContext, dir: string, options: DownloadOptions, ...patterns: RegExp[]): Promise<UkbError> {
  const err = await t.throwsAsync(download(options));
  t.true(isUkbError(err), `not a UkbError: ${err}`);
  for (const p of patterns) t.regex(err!.message, p);
  t.deepEqual(await entriesOf(dir), [], "dest or a temp file was left behind");
  return err as UkbError;
}

test("200: the file lands at dest with its digests", async (t) => {
  const { dir, dest } = await setup(t);
  const events: DownloadProgress[] = [];
  const r = await download({ ...FAST, urls: [`${BASE}/ok.tar.gz`], dest, expect: { sha256: SHA }, onProgress: (e) => events.push(e) });
  t.is(r.sha256, SHA);
  t.is(r.size, BODY.length);
  t.is(r.url, `${BASE}/ok.tar.gz`);
  t.true((await readFile(dest)).equals(BODY));
  t.deepEqual(await hashFile(dest), { sha256: r.sha256, blake3: r.blake3, size: r.size });
  t.deepEqual(await entriesOf(dir), ["src.tar.gz"]);
  const last = events.at(-1)!;
  t.is(last.bytes, BODY.length);
  t.is(last.total, BODY.length);
});

test("the expected hash may be given as SRI or sha256:HEX", async (t) => {
  const { dest } = await setup(t);
  const sri = `sha256-${Buffer.from(SHA, "hex").toString("base64")}`;
  t.is((await download({ ...FAST, urls: [`${BASE}/ok.tar.gz`], dest, expect: { sha256: sri } })).sha256, SHA);
  t.is((await download({ ...FAST, urls: [`${BASE}/ok.tar.gz`], dest, expect: { sha256: `sha256:${SHA.toUpperCase()}` } })).sha256, SHA);
});

test("a redirect chain (302, 301, 307) is followed", async (t) => {
  const { dest } = await setup(t);
  const r = await download({ ...FAST, urls: [`${BASE}/r1`], dest, expect: { sha256: SHA } });
  t.is(r.url, `${BASE}/r1`);
  t.is(r.finalUrl, `${BASE}/ok.tar.gz`);
  t.true((await readFile(dest)).equals(BODY));
});

test("a 404 on the first URL moves on to the second", async (t) => {
  const { dest } = await setup(t);
  const r = await download({ ...FAST, urls: [`${BASE}/missing`, `${BASE}/ok.tar.gz`], dest, expect: { sha256: SHA } });
  t.is(r.url, `${BASE}/ok.tar.gz`);
});

test("mirror://NAME/path expands through the mirror map, in order", async (t) => {
  const { dest } = await setup(t);
  const r = await download({ ...FAST, urls: ["mirror://m/ok.tar.gz"], mirrors: { m: ["http://down.test/x/", `${BASE}/base`] }, dest, expect: { sha256: SHA } });
  t.is(r.url, `${BASE}/base/ok.tar.gz`);
});

test("an unknown mirror is a clear error", async (t) => {
  const { dir, dest } = await setup(t);
  const e = await fails(t, dir, { ...FAST, urls: ["mirror://gnu/hello.tar.gz"], mirrors: { m: [BASE] }, dest }, /mirror:\/\/gnu\/hello\.tar\.gz: unknown mirror 'gnu' \(known: m\)/);
  t.regex(e.hint ?? "", /UKB_MIRRORS/);
});

test("a 500 is retried and the retry succeeds", async (t) => {
  const { dest } = await setup(t);
  await download({ ...FAST, urls: [`${BASE}/flaky`], dest, expect: { sha256: SHA } });
  t.is(hits.get("flaky"), 2);
});

test("a persistent 503 gives up after the retries, naming URL and status", async (t) => {
  const { dir, dest } = await setup(t);
  await fails(t, dir, { ...FAST, urls: [`${BASE}/always-503`], dest, expect: { sha256: SHA } }, /always-503: HTTP 503 Service Unavailable \(3 attempts\)/);
  t.is(hits.get("always-503"), 3);
});

test("a connection reset is retried and the retry succeeds", async (t) => {
  const { dest } = await setup(t);
  await download({ ...FAST, urls: [`${BASE}/reset-once`], dest, expect: { sha256: SHA } });
  t.is(hits.get("reset-once"), 2);
  t.true((await readFile(dest)).equals(BODY));
});

test("a truncated body (Content-Length larger than sent) is retried; a second full body succeeds", async (t) => {
  const { dest } = await setup(t);
  await download({ ...FAST, urls: [`${BASE}/truncated-once`], dest, expect: { sha256: SHA } });
  t.is(hits.get("truncated-once"), 2);
});

test("a body that is always truncated fails with 'received N of M bytes'", async (t) => {
  const { dir, dest } = await setup(t);
  await fails(t, dir, { ...FAST, urls: [`${BASE}/truncated`], dest }, /\/truncated: truncated: received 1000 of 2000 bytes/);
});

test("a body that stalls hits the idle timeout, is retried, then reported", async (t) => {
  const { dir, dest } = await setup(t);
  await fails(t, dir, { ...FAST, retries: 1, idleTimeoutMs: STALL, urls: [`${BASE}/stall`], dest }, /\/stall: stalled: no data for 200 ms after 100 of 1000 bytes \(2 attempts\)/);
  t.is(hits.get("stall"), 2);
});

test("no response headers within connectTimeoutMs is a timeout", async (t) => {
  const { dir, dest } = await setup(t);
  await fails(t, dir, { ...FAST, retries: 0, connectTimeoutMs: 100, urls: [`${BASE}/no-headers`], dest }, /no-headers: no response within 100 ms/);
});

test("wrong content: HashMismatchError with expected and actual; nothing at dest, no temp file", async (t) => {
  const { dir, dest } = await setup(t);
  const err = await t.throwsAsync(download({ ...FAST, urls: [`${BASE}/wrong`], dest, expect: { sha256: SHA } }));
  t.true(err instanceof HashMismatchError);
  const e = err as HashMismatchError;
  const actual = createHash("sha256").update("not the tarball you pinned").digest("hex");
  t.is(e.expected, `sha256:${SHA}`);
  t.is(e.actual, `sha256:${actual}`);
  t.regex(e.message, new RegExp(`${BASE}/wrong[^]*expected: sha256:${SHA}[^]*actual: +sha256:${actual}`));
  t.regex(e.hint ?? "", /ukb prefetch/);
  t.deepEqual(await entriesOf(dir), []);
});

test("a wrong mirror followed by a right one succeeds", async (t) => {
  const { dest } = await setup(t);
  const r = await download({ ...FAST, urls: [`${BASE}/wrong`, `${BASE}/ok.tar.gz`], dest, expect: { sha256: SHA } });
  t.is(r.url, `${BASE}/ok.tar.gz`);
});

test("every URL failing lists each URL with what happened", async (t) => {
  const { dir, dest } = await setup(t);
  const e = await fails(
    t,
    dir,
    { ...FAST, urls: [`${BASE}/missing`, `${BASE}/truncated`], dest },
    /cannot download src\.tar\.gz from any of 2 URLs:\n {2}http:\/\/files\.test\/missing: HTTP 404 Not Found\n {2}http:\/\/files\.test\/truncated: truncated/,
  );
  t.regex(e.hint ?? "", /ukb store add FILE/);
});

test("offline: no request is made; the error names the URL and the hash it would have needed", async (t) => {
  const { dir, dest } = await setup(t);
  const e = await fails(
    t,
    dir,
    { ...FAST, offline: true, urls: [`${BASE}/offline-must-not-be-asked`], dest, expect: { sha256: SHA } },
    /^offline: /,
    /offline-must-not-be-asked/,
    new RegExp(`sha256:${SHA}`),
  );
  t.regex(e.hint ?? "", /ukb store add FILE/);
  t.is(hits.get("offline"), undefined);
});

test("offline: a file:// hashed mirror still serves content by its sha256", async (t) => {
  const { dir, dest } = await setup(t);
  const mirror = path.join(dir, "..", `${path.basename(dir)}-mirror`);
  t.teardown(() => import("node:fs/promises").then((fs) => fs.rm(mirror, { recursive: true, force: true })));
  await mkdir(path.join(mirror, "sha256"), { recursive: true });
  await writeFile(path.join(mirror, "sha256", SHA), BODY);
  const r = await download({
    ...FAST,
    offline: true,
    urls: [`${BASE}/offline-must-not-be-asked`],
    mirrors: { hashed: [pathToFileURL(mirror).href] },
    dest,
    expect: { sha256: SHA },
  });
  t.is(r.url, `${pathToFileURL(mirror).href}/sha256/${SHA}`);
  t.true((await readFile(dest)).equals(BODY));
  t.is(hits.get("offline"), undefined);
});

test("offline: a file:// mirror without the file still gives the offline error", async (t) => {
  const { dir, dest } = await setup(t);
  await fails(
    t,
    dir,
    { ...FAST, offline: true, urls: [`${BASE}/offline-must-not-be-asked`], mirrors: { hashed: [pathToFileURL(path.join(dir, "empty-mirror")).href] }, dest, expect: { sha256: SHA } },
    /^offline: src\.tar\.gz is not available without the network\n {2}would download http:\/\/files\.test\/offline-must-not-be-asked, sha256:/,
  );
  t.is(hits.get("offline"), undefined);
});

test("a limiter bounds concurrent downloads", async (t) => {
  const dir = await tempDir(t);
  const limiter = new Limiter(2);
  await Promise.all(
    Array.from({ length: 6 }, (_, i) => download({ ...FAST, limiter, urls: [`${BASE}/slow/${i}`], dest: path.join(dir, `f${i}`), expect: { sha256: SHA } })),
  );
  t.true(maxInFlight <= 2, `max in flight ${maxInFlight}`);
  t.true(maxInFlight >= 1);
  t.is(limiter.active, 0);
  t.is((await entriesOf(dir)).length, 6);
});

test("an abort during a stalled body rejects with the signal's reason and leaves nothing", async (t) => {
  const { dir, dest } = await setup(t);
  const ctrl = new AbortController();
  const pending = download({ ...FAST, idleTimeoutMs: 60_000, urls: [`${BASE}/stall`], dest, signal: ctrl.signal });
  setTimeout(() => ctrl.abort(new Error("user pressed ^C")), 50);
  const err = await t.throwsAsync(pending);
  t.is(err!.message, "user pressed ^C");
  t.deepEqual(await entriesOf(dir), []);
});
