/**
 * The store's server and the native launcher (bin/ukb → dist/bin/ukb): a
 * no-op realise is answered by the server, the same as Node's CLI would;
 * anything else falls back to the CLI, which then does it. Every test checks
 * the server's own count of answers, so a launcher that silently always fell
 * back (or a server that answered what it should not) fails.
 */
import test, { type ExecutionContext } from "ava";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { HELLO, ROOT, UKB_COMMAND, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const LAUNCHER = path.join(ROOT, "dist/bin/ukb");

interface Status {
  pid: number;
  requests: number;
  answered: number;
}

/** Runs the command as users do (bin/ukb). */
const launch = (args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) => ukb(args, { cwd, env, command: UKB_COMMAND });

/** Starts a server for `store` (stopped when the test ends) and returns a reader of its status. */
async function startServer(t: ExecutionContext, store: string): Promise<() => Promise<Status | undefined>> {
  const started = await ukb(["server", "start", "--store", store, "--idle-timeout", "300"]);
  t.is(started.code, 0, started.stderr);
  t.teardown(() => ukb(["server", "stop", "--store", store]).then(() => undefined));
  return async () => {
    const r = await ukb(["server", "status", "--json", "--store", store]);
    return JSON.parse(r.stdout) as Status | undefined;
  };
}

/** A project folder with hello.ts realised by Node's CLI into its ./cache. */
async function realisedHello(t: ExecutionContext): Promise<{ dir: string; store: string; out: string }> {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const first = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  return { dir, store: path.join(dir, "cache"), out: first.stdout.trim() };
}

test("the native launcher was compiled (a C compiler is part of the test machine)", (t) => {
  t.true(fs.existsSync(LAUNCHER), "npm run build did not compile dist/bin/ukb");
});

test("a no-op realise through bin/ukb is answered by the store's server, as Node's CLI answers it", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const before = (await status())!;

  fs.rmSync(path.join(dir, "result"));
  const again = await launch(["realise", "hello.ts"], dir);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, `${out}\n`);
  t.is(again.stderr, "");
  t.is(fs.readlinkSync(path.join(dir, "result")), out);
  t.is((await status())!.answered, before.answered + 1);

  const greeting = await launch(["realise", "hello.ts", "-A", "greeting", "--out-link", "g"], dir);
  t.is(greeting.code, 0, greeting.stderr);
  t.is(fs.readFileSync(greeting.stdout.trim(), "utf8"), "hello\n");
  t.is(fs.readlinkSync(path.join(dir, "g")), greeting.stdout.trim());
  t.is((await status())!.answered, before.answered + 2);
  // The out-links it made are roots: gc keeps what they point at.
  const gc = await ukb(["store", "gc"], { cwd: dir });
  t.is(gc.code, 0, gc.stderr);
  t.true(fs.existsSync(greeting.stdout.trim()));

  // UKB_NO_SERVER: the launcher goes straight to Node; same answer.
  const direct = await launch(["realise", "hello.ts"], dir, { UKB_NO_SERVER: "1" });
  t.is(direct.stdout, `${out}\n`);
  t.is((await status())!.answered, before.answered + 2);
});

test("anything but a no-op falls back to Node's CLI, which does it", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const answered = async () => (await status())!.answered;
  const base = await answered();

  // A changed recipe: the server does not evaluate; the CLI does and builds.
  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo howdy"));
  const changed = await launch(["realise", "hello.ts"], dir);
  t.is(changed.code, 0, changed.stderr);
  t.not(changed.stdout.trim(), out);
  t.is(fs.readFileSync(changed.stdout.trim(), "utf8"), "HOWDY\n");
  t.regex(changed.stderr, /built shout/);
  t.is(await answered(), base);
  // ... and once evaluated and built, it is the server's again.
  t.is((await launch(["realise", "hello.ts"], dir)).stdout, changed.stdout);
  t.is(await answered(), base + 1);

  // Errors are the CLI's, word for word.
  writeRecipe(dir, "broken.ts", `import { derivation } from "ukb";\nexport default derivation({ name: "x", builder: "/bin/sh" ;\n`);
  const broken = await launch(["realise", "broken.ts"], dir);
  const brokenByNode = await ukb(["realise", "broken.ts"], { cwd: dir });
  t.is(broken.code, 2);
  t.is(broken.stderr, brokenByNode.stderr);
  const missing = await launch(["realise", "hello.ts", "-A", "nope"], dir);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /hello\.ts: has no derivation export 'nope'/);
  const usage = await launch(["realise", "hello.ts", "--jobs", "zero"], dir);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /--jobs needs a positive whole number/);

  // Another PATH is another evaluation (hostTools looks programs up in it): the CLI's.
  const otherPath = await launch(["realise", "hello.ts", "--no-out-link"], dir, { PATH: "/bin:/usr/bin" });
  t.is(otherPath.code, 0, otherPath.stderr);
  t.is(await answered(), base + 1);
  // Other options and commands are the CLI's.
  const dry = await launch(["realise", "hello.ts", "--dry-run"], dir);
  t.regex(dry.stdout, /nothing to build/);
  const show = await launch(["show", "hello.ts"], dir);
  t.is(show.code, 0, show.stderr);
  t.truthy(JSON.parse(show.stdout));
  // Another store is not this server's.
  const elsewhere = await launch(["realise", "hello.ts", "--no-out-link", "--store", path.join(dir, "other")], dir);
  t.is(elsewhere.code, 0, elsewhere.stderr);
  t.true(elsewhere.stdout.startsWith(path.join(dir, "other")));
  t.is(await answered(), base + 1);
});

// Serial (ava runs serial tests before the others): every server of this ukb sees its code change.
test.serial("the server stops when its store is deleted or ukb's code changes; ukb works on without it", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const { pid } = (await status())!;
  const again = await ukb(["server", "start", "--store", store]);
  t.regex(again.stdout, new RegExp(`already runs .*pid ${pid}`));

  fs.rmSync(store, { recursive: true, force: true });
  t.true(await exits(pid, 8000), "the server outlived its store");
  const rebuilt = await launch(["realise", "hello.ts"], dir);
  t.is(rebuilt.code, 0, rebuilt.stderr);
  t.is(rebuilt.stdout, `${out}\n`);
  const none = await ukb(["server", "status", "--store", store]);
  t.is(none.code, 1);
  t.regex(none.stdout, /no server runs/);

  // An upgrade of ukb under a running server: it stops rather than answer with old code.
  const status2 = await startServer(t, store);
  const second = (await status2())!;
  const bundle = path.join(ROOT, "dist/bundle/api.cjs");
  const { atime, mtime } = fs.statSync(bundle);
  fs.utimesSync(bundle, atime, new Date(mtime.getTime() + 1000));
  try {
    t.true(await exits(second.pid, 8000), "the server outlived a change of ukb's code");
  } finally {
    fs.utimesSync(bundle, atime, mtime);
  }
  t.is((await launch(["realise", "hello.ts"], dir)).stdout, `${out}\n`);

  const stopped = await ukb(["server", "stop", "--store", store]);
  t.regex(stopped.stdout, /no server runs/);
});

test("a store whose path is too long for a socket address has a server too", async (t) => {
  const dir = tempDir();
  const deep = path.join(dir, "a".repeat(60), "b".repeat(60));
  fs.mkdirSync(deep, { recursive: true });
  writeRecipe(deep, "hello.ts", HELLO);
  const first = await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: deep });
  t.is(first.code, 0, first.stderr);
  const status = await startServer(t, path.join(deep, "cache"));
  const again = await launch(["realise", "hello.ts", "--no-out-link"], deep);
  t.is(again.stdout, first.stdout);
  t.is((await status())!.answered, 1);
});

test("the server answers a malformed request or one from another ukb or user with 'fallback', and goes on", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const socket = path.join(store, "server.sock");
  t.is((fs.statSync(socket).mode & 0o777).toString(8), "600");

  const request = (packageRoot: string, uid = process.getuid!()) =>
    ["ukb-server-1", "launch", String(uid), packageRoot, dir, "1", `PATH=${process.env.PATH}`, "3", "realise", "hello.ts", "--no-out-link"].map((f) => `${f}\0`).join("");
  t.is(await ask(socket, request(ROOT)), `ok\n${out}\n`);
  t.is(await ask(socket, request(tempDir())), "fallback\n");
  t.is(await ask(socket, request(ROOT, process.getuid!() + 1)), "fallback\n");
  t.is(await ask(socket, "garbage"), "fallback\n");
  t.is(await ask(socket, ["ukb-server-1", "launch", "0", ROOT, dir, "999", ""].join("\0")), "fallback\n");
  t.is((await status())!.answered, 1);
});

/** Sends raw bytes to a socket and returns what comes back. */
function ask(socket: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socket, () => conn.end(bytes));
    let answer = "";
    conn.on("data", (d: Buffer) => (answer += d));
    conn.on("error", reject);
    conn.on("close", () => resolve(answer));
  });
}

async function exits(pid: number, withinMs: number): Promise<boolean> {
  for (let waited = 0; waited < withinMs; waited += 100) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}
