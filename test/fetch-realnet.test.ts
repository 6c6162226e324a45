/**
 * download() over real sockets, no msw: a real nginx (Debian's package)
 * serving a file on 127.0.0.1, and a raw TCP server that misbehaves the ways
 * msw cannot fake for Node's own fetch (a socket closed mid-body, a TCP
 * reset, a silent peer).
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import test from "ava";
import { isUkbError } from "../src/errors/index.js";
import { download } from "../src/fetch/index.js";
import { entriesOf, tempDir } from "./fetch-fixtures.js";
import { freePort, startNginx, type Server } from "./helpers/servers.js";

const BODY = Buffer.alloc(2_500_000);
for (let i = 0; i < BODY.length; i++) BODY[i] = (i * 31 + (i >> 11)) & 0xff;
const SHA = createHash("sha256").update(BODY).digest("hex");
const FAST = { retries: 1, backoffMs: 1, maxBackoffMs: 5, connectTimeoutMs: 5_000, idleTimeoutMs: 5_000 };
// Only the stall tests shorten the idle timeout: on a loaded CI machine a healthy transfer can
// pause for a few hundred ms, which a short timeout would report as a stall.
const STALL = 300;

let nginx: Server | undefined;
let nginxPort = 0;
let prefix = "";

test.before(async (t) => {
  prefix = await mkdtemp(path.join(os.tmpdir(), "ukb-nginx-"));
  await mkdir(path.join(prefix, "www"), { recursive: true });
  await writeFile(path.join(prefix, "www", "musl-1.2.3.tar.gz"), BODY);
  await writeFile(path.join(prefix, "www", "encoded.tar.gz"), gzipSync(BODY));
  // As Apache's AddEncoding does for .gz files: the file's own bytes, labelled as encoded in transit.
  nginx = await startNginx(prefix, "location = /moved { return 302 /musl-1.2.3.tar.gz; }\nlocation = /encoded.tar.gz { add_header Content-Encoding gzip; }", "types { application/gzip gz; }");
  nginxPort = nginx.port;
  t.log(`nginx pid ${nginx.pid} on 127.0.0.1:${nginxPort}`);
});

test.after.always(async () => {
  await nginx?.stop();
  if (prefix) await rm(prefix, { recursive: true, force: true });
});

test("a real nginx: download, sha256 verified, Content-Length matched", async (t) => {
  const dir = await tempDir(t);
  const dest = path.join(dir, "musl.tar.gz");
  const r = await download({ ...FAST, urls: [`http://127.0.0.1:${nginxPort}/musl-1.2.3.tar.gz`], dest, expect: { sha256: SHA } });
  t.is(r.sha256, SHA);
  t.is(r.size, BODY.length);
  t.true((await readFile(dest)).equals(BODY));
  t.deepEqual(await entriesOf(dir), ["musl.tar.gz"]);
});

test("a real nginx: a 404 then a redirect to the file", async (t) => {
  const dir = await tempDir(t);
  const dest = path.join(dir, "musl.tar.gz");
  const base = `http://127.0.0.1:${nginxPort}`;
  const r = await download({ ...FAST, urls: [`${base}/nope.tar.gz`, `${base}/moved`], dest, expect: { sha256: SHA } });
  t.is(r.url, `${base}/moved`);
  t.is(r.finalUrl, `${base}/musl-1.2.3.tar.gz`);
});

/** A TCP server answering every request with `respond`; closed at the end of the test. */
async function rawServer(t: import("ava").ExecutionContext, respond: (socket: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    socket.once("data", () => respond(socket));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

test("real socket closed mid-body: 'truncated … N of M bytes', nothing left", async (t) => {
  const base = await rawServer(t, (s) => {
    s.write("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n");
    s.end(Buffer.alloc(1000));
  });
  const dir = await tempDir(t);
  const err = await t.throwsAsync(download({ ...FAST, urls: [`${base}/f`], dest: path.join(dir, "f") }));
  t.true(isUkbError(err));
  t.regex(err!.message, /\/f: truncated: connection closed after \d+ of 2000 bytes \(2 attempts\)/);
  t.deepEqual(await entriesOf(dir), []);
});

test("real TCP reset before any response: 'connection reset', retried", async (t) => {
  let n = 0;
  const base = await rawServer(t, (s) => {
    n++;
    s.resetAndDestroy();
  });
  const dir = await tempDir(t);
  const err = await t.throwsAsync(download({ ...FAST, urls: [`${base}/f`], dest: path.join(dir, "f") }));
  t.regex(err!.message, /\/f: (connection reset|connection closed by the server|network error.*) \(2 attempts\)/);
  t.is(n, 2);
  t.deepEqual(await entriesOf(dir), []);
});

test("real peer that goes silent mid-body: idle timeout", async (t) => {
  const base = await rawServer(t, (s) => {
    s.write("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
    s.write(Buffer.alloc(100)); // then silence, socket kept open
  });
  const dir = await tempDir(t);
  const err = await t.throwsAsync(download({ ...FAST, retries: 0, idleTimeoutMs: STALL, urls: [`${base}/f`], dest: path.join(dir, "f") }));
  t.regex(err!.message, /\/f: stalled: no data for 300 ms after 100 of 5000 bytes/);
  t.deepEqual(await entriesOf(dir), []);
});

test("a real nginx that labels a .tar.gz Content-Encoding: gzip: refused, named, not taken decoded (whose hash someone would pin)", async (t) => {
  const dir = await tempDir(t);
  const gz = gzipSync(BODY);
  const err = await t.throwsAsync(
    download({ ...FAST, urls: [`http://127.0.0.1:${nginxPort}/encoded.tar.gz`], dest: path.join(dir, "f"), expect: { sha256: createHash("sha256").update(gz).digest("hex") } }),
  );
  t.true(isUkbError(err));
  t.regex(err!.message, /Content-Encoding: gzip \(decoded in transit, so not the file's own bytes\)/);
  t.deepEqual(await entriesOf(dir), []);
});

test("connection refused is reported with the URL", async (t) => {
  const port = await freePort();
  const dir = await tempDir(t);
  const err = await t.throwsAsync(download({ ...FAST, retries: 0, urls: [`http://127.0.0.1:${port}/f`], dest: path.join(dir, "f") }));
  t.regex(err!.message, new RegExp(`127\\.0\\.0\\.1:${port}/f: connection refused`));
});
