/**
 * The store's server and the native launcher (bin/ukb → dist/bin/ukb): a
 * no-op realise is answered by the server, the same as Node's CLI would;
 * anything else falls back to the CLI, which then does it. Every test checks
 * the server's own count of answers (counted once the launcher has read the
 * answer), and the first no-op test also that no Node started, so a launcher
 * that silently always fell back, or a server that answered what it should
 * not, fails.
 *
 * What the server cannot answer itself (a changed recipe, something to
 * build) its started CLI runs in the launcher's place (src/server/warm.ts):
 * with the launcher's arguments, environment, folder and umask, its output
 * streamed to the launcher, its exit code the launcher's, the launcher's
 * signals forwarded to it. Those tests check the server's count of runs, so
 * a launcher that silently started Node instead fails. They live in this
 * file because its serial test changes ukb's code stamp, which stops every
 * server of this ukb: ava runs a file's serial tests before its others, but
 * other files at the same time.
 */
import test, { type ExecutionContext } from "ava";
import fs from "node:fs";
import net from "node:net";
import { execFile, spawn } from "node:child_process";
import path from "node:path";
import { HELLO, ROOT, UKB_COMMAND, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";
import { LAUNCHER, MAGIC, NO_AUTOSTART, ask, exits, launch, nodeRecorder, processContext, readyToRun, realisedHello, startServer, startedServer, statusOf, until } from "./helpers/store-server.js";

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

test("anything but a no-op is the CLI's: the server's started CLI runs it as Node's CLI would, or the launcher starts Node", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const answered = async () => (await status())!.answered;
  const base = await answered();

  // A changed recipe: the server does not evaluate; its started CLI does, and builds.
  const { ran } = await readyToRun(t, status);
  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo howdy"));
  const changed = await launch(["realise", "hello.ts"], dir);
  t.is(changed.code, 0, changed.stderr);
  t.not(changed.stdout.trim(), out);
  t.is(fs.readFileSync(changed.stdout.trim(), "utf8"), "HOWDY\n");
  t.is(fs.readlinkSync(path.join(dir, "result")), changed.stdout.trim());
  t.regex(changed.stderr, /built shout/);
  t.is(await answered(), base);
  // Why, in the server's status (and log): the file that changed.
  t.like(await status(), { ran: ran + 1, lastRun: { why: `hello.ts needs an evaluation: ${path.join(dir, "hello.ts")} changed` } });
  t.regex((await ukb(["server", "status", "--store", store])).stdout, /the last one it ran \(.*\): hello\.ts needs an evaluation: .*hello\.ts changed/);
  // ... and once evaluated and built, it is the server's again.
  t.is((await launch(["realise", "hello.ts"], dir)).stdout, changed.stdout);
  t.is(await answered(), base + 1);

  // Errors are the CLI's, word for word, whoever runs it.
  writeRecipe(dir, "broken.ts", `import { derivation } from "ukb";\nexport default derivation({ name: "x", builder: "/bin/sh" ;\n`);
  for (const [args, code] of [
    [["realise", "broken.ts"], 2],
    [["realise", "hello.ts", "-A", "nope"], 2],
    [["realise", "hello.ts", "--jobs", "zero"], 2],
  ] as const) {
    await readyToRun(t, status);
    const byServer = await launch([...args], dir);
    const byNode = await ukb([...args], { cwd: dir });
    t.is(byServer.code, code, byServer.stderr);
    t.is(byServer.stderr, byNode.stderr);
    t.is(byServer.stdout, byNode.stdout);
  }
  t.regex((await ukb(["realise", "hello.ts", "-A", "nope"], { cwd: dir })).stderr, /hello\.ts: has no derivation export 'nope'/);
  t.is((await status())!.ran, ran + 4);

  // Another PATH is another evaluation (hostTools looks programs up in it): the started CLI's, with that PATH.
  await readyToRun(t, status);
  const otherPath = await launch(["realise", "hello.ts", "--no-out-link"], dir, { PATH: "/bin:/usr/bin" });
  t.is(otherPath.code, 0, otherPath.stderr);
  t.is(await answered(), base + 1);
  t.regex((await status())!.lastRun?.why ?? "", /^hello\.ts needs an evaluation: no evaluation of it is cached/);
  // Other options are run too; other commands are Node's.
  await readyToRun(t, status);
  const dry = await launch(["realise", "hello.ts", "--dry-run"], dir);
  t.regex(dry.stdout, /nothing to build/);
  t.is((await status())!.ran, ran + 6);
  const show = await launch(["show", "hello.ts"], dir);
  t.is(show.code, 0, show.stderr);
  t.truthy(JSON.parse(show.stdout));
  // Another store is not this server's (the launcher asks that store's, which has none): Node's CLI.
  const elsewhere = await launch(["realise", "hello.ts", "--no-out-link", "--store", path.join(dir, "other")], dir);
  t.is(elsewhere.code, 0, elsewhere.stderr);
  t.true(elsewhere.stdout.startsWith(path.join(dir, "other")));
  t.like(await status(), { answered: base + 1, ran: ran + 6 });
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
  // (The launches below start no server of their own, which would hide whether these stopped.)
  const rebuilt = await launch(["realise", "hello.ts"], dir, NO_AUTOSTART);
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
  t.is((await launch(["realise", "hello.ts"], dir, NO_AUTOSTART)).stdout, `${out}\n`);

  // A new server after the old one went: the old one's exit does not take the new one's socket.
  fs.rmSync(store, { recursive: true, force: true });
  t.is((await launch(["realise", "hello.ts"], dir, NO_AUTOSTART)).code, 0);
  const status3 = await startServer(t, store);
  await new Promise((r) => setTimeout(r, 3000));
  const third = await status3();
  t.truthy(third, "the new server was stopped");

  // A client that connects and says nothing does not keep a stopped server alive.
  const silent = net.createConnection(path.join(store, "server.sock"));
  silent.on("error", () => {});
  await new Promise((r) => silent.once("connect", r));
  // A stop with a request behind it: the server still exits.
  const socket = path.join(store, "server.sock");
  const stopRequest = [MAGIC, "control", "stop", ""].join("\0");
  const statusRequest = [MAGIC, "control", "status", ""].join("\0");
  await Promise.all([ask(socket, stopRequest), ask(socket, statusRequest).catch(() => "")]);
  t.true(await exits(third!.pid, 8000), "the server lingered after it was stopped");
  const stopped = await ukb(["server", "stop", "--store", store]);
  t.regex(stopped.stdout, /no server runs/);
  t.false(fs.readdirSync(store).some((f) => f.startsWith("server.sock")), "a socket was left behind");
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

/** A launch request as the launcher writes it for this process, with `change` applied. */
function launchRequest(dir: string, change: Partial<Record<"uid" | "gid" | "groups" | "mountNamespace" | "pidNamespace" | "pid" | "rootIdentity" | "cwdIdentity" | "packageRoot" | "umask" | "terminal" | "processContext", string>> = {}, argv = ["realise", "hello.ts", "--no-out-link"]): string {
  const id = (p: string) => {
    const st = fs.statSync(p, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };
  const fields = {
    uid: String(process.geteuid!()),
    gid: String(process.getegid!()),
    groups: process.getgroups!().join(","),
    mountNamespace: fs.readlinkSync("/proc/self/ns/mnt"),
    pidNamespace: fs.readlinkSync("/proc/self/ns/pid"),
    pid: String(process.pid),
    rootIdentity: id("/"),
    cwdIdentity: id(dir),
    packageRoot: ROOT,
    umask: "22",
    terminal: "0,0,0",
    processContext: processContext(),
    ...change,
  };
  return [MAGIC, "launch", fields.uid, fields.gid, fields.groups, fields.mountNamespace, fields.pidNamespace, fields.pid, fields.rootIdentity, fields.cwdIdentity, fields.packageRoot, dir, fields.umask, fields.terminal, fields.processContext]
    // The environment, whole, as the launcher sends it.
    .concat([String(Object.keys(process.env).length), ...Object.entries(process.env).map(([k, v]) => `${k}=${v}`), String(argv.length), ...argv])
    .map((f) => `${f}\0`)
    .join("");
}

test("the server answers only a launcher that is, and sees, what it is and sees; anything else gets 'fallback'", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const socket = path.join(store, "server.sock");
  t.is((fs.statSync(socket).mode & 0o777).toString(8), "600");

  // The request is right (this is what makes the refusals below mean something) ...
  t.is(await ask(socket, launchRequest(dir)), `ok\n\0${out}\0${out}\n`);
  // ... and each difference is refused: another ukb, user, group, groups, mount namespace, root, folder.
  const other = tempDir();
  for (const change of [
    { packageRoot: other },
    { uid: String(process.getuid!() + 1) },
    { gid: String(process.getgid!() + 1) },
    { groups: [...process.getgroups!(), 4242].join(",") },
    { mountNamespace: "mnt:[1]" },
    { pidNamespace: "pid:[1]" },
    { rootIdentity: "1:2" },
    { cwdIdentity: "1:2" },
  ]) {
    t.is(await ask(socket, launchRequest(dir, change)), "fallback\n", JSON.stringify(change));
  }
  t.is(await ask(socket, "garbage"), "fallback\n");
  t.is(await ask(socket, [MAGIC, "launch", "0", "0", "", "-", "-", "1", "-", "-", ROOT, dir, "999", ""].join("\0")), "fallback\n");
  t.is((await status())!.answered, 1);
});

test("what the server answers with stays out of gc's reach while the launcher lives (it makes the out-link after the answer)", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  fs.rmSync(path.join(dir, "result")); // no root any more: only the launcher's temp root keeps it
  const status = await startServer(t, store);
  const launcher = spawn("sleep", ["60"], { stdio: "ignore" });
  t.teardown(() => void launcher.kill("SIGKILL"));
  const socket = path.join(store, "server.sock");
  t.is(await ask(socket, launchRequest(dir, { pid: String(launcher.pid) })), `ok\n\0${out}\0${out}\n`);
  t.is((await status())!.answered, 1);

  const kept = await ukb(["store", "gc", "--store", store]);
  t.is(kept.code, 0, kept.stderr);
  t.true(fs.existsSync(out), "gc deleted what the server answered with while its launcher lived");
  t.is((await ukb(["store", "info", out, "--store", store])).code, 0);

  launcher.kill("SIGKILL");
  t.true(await exits(launcher.pid!, 5000));
  const collected = await ukb(["store", "gc", "--store", store]);
  t.is(collected.code, 0, collected.stderr);
  t.false(fs.existsSync(out), "once the launcher has exited, its temp root is gone");
  t.is((await ukb(["store", "verify", "--store", store])).code, 0);
});

test("a gc between the server's answer and the launcher's out-link keeps the root: ./result still protects its target after the launcher exits", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  fs.rmSync(path.join(dir, "result"));
  await startServer(t, store);
  const launcher = spawn("sleep", ["60"], { stdio: "ignore" });
  t.teardown(() => void launcher.kill("SIGKILL"));
  const socket = path.join(store, "server.sock");
  t.is(await ask(socket, launchRequest(dir, { pid: String(launcher.pid) }, ["realise", "hello.ts"])), `ok\n${path.join(dir, "result")}\0${out}\0${out}\n`);
  t.is((await ukb(["store", "gc", "--store", store])).code, 0); // before the link exists
  t.true(fs.existsSync(out));
  fs.symlinkSync(out, path.join(dir, "result")); // what the launcher does next, then it exits
  launcher.kill("SIGKILL");
  t.true(await exits(launcher.pid!, 5000));
  t.is((await ukb(["store", "gc", "--store", store])).code, 0);
  t.true(fs.existsSync(out), "gc forgot the root while its link was still to come");
});

test("a launch request naming PID 0 is refused (it would name a process that never exits)", async (t) => {
  const { dir, store } = await realisedHello(t);
  await startServer(t, store);
  t.is(await ask(path.join(store, "server.sock"), launchRequest(dir, { pid: "0" })), "fallback\n");
});

test("the launcher asks only a server of its own user: another user's socket hears nothing, not even the environment", async (t) => {
  if (process.getuid!() !== 0) return t.pass("needs root to run a server as another user");
  const { dir, out } = await realisedHello(t);
  const store = path.join(dir, "cache");
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(store, 0o777);
  // Another user's listener on the store's socket: it records what it gets and answers a forgery.
  const heard = path.join(tempDir(), "heard");
  fs.writeFileSync(heard, "");
  fs.chmodSync(path.dirname(heard), 0o777);
  fs.chmodSync(heard, 0o666);
  const fake = spawn("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", `
    const net = require("net"), fs = require("fs");
    net.createServer({ allowHalfOpen: true }, (c) => {
      c.on("data", (d) => fs.appendFileSync(${JSON.stringify(heard)}, d));
      c.on("end", () => c.end("ok\\nforged\\n"));
    }).listen(${JSON.stringify(path.join(store, "server.sock"))}, () => {
      fs.chmodSync(${JSON.stringify(path.join(store, "server.sock"))}, 0o666);
      process.stdout.write("listening\\n");
    });
  `], { stdio: ["ignore", "pipe", "pipe"] });
  t.teardown(() => fake.kill());
  let fakeErrors = "";
  fake.stderr!.on("data", (d: Buffer) => (fakeErrors += d.toString()));
  // The socket file exists from bind(), before listen(): waiting for the file raced (ECONNREFUSED in CI).
  const started = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 60_000);
    fake.stdout!.on("data", (d: Buffer) => d.toString().includes("listening") && (clearTimeout(timer), resolve(true)));
    fake.on("exit", () => (clearTimeout(timer), resolve(false)));
  });
  t.true(started, `the other user's listener did not start: ${fakeErrors}`);
  t.is(await ask(path.join(store, "server.sock"), "hello"), "ok\nforged\n");
  fs.writeFileSync(heard, "");
  const r = await launch(["realise", "hello.ts"], dir, { SECRET_TOKEN: "hunter2" });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `${out}\n`);
  t.false(fs.readFileSync(heard, "utf8").includes("hunter2"));
  t.is(fs.readFileSync(heard, "utf8"), "", "the launcher talked to another user's socket");
});

test("a store named by another path to the same folder is another server's: the CLI answers, and gc keeps its roots", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const alias = path.join(tempDir(), "alias");
  fs.symlinkSync(dir, alias);
  const status = await startServer(t, path.join(alias, "cache"));
  fs.rmSync(path.join(dir, "result"));
  const r = await launch(["realise", "hello.ts"], dir);
  t.is(r.stdout, `${out}\n`);
  t.is((await status())!.answered, 0);
  const gc = await ukb(["store", "gc", "--store", store], { cwd: dir });
  t.is(gc.code, 0, gc.stderr);
  t.true(fs.existsSync(out));
});

test("a client without PATH, with NODE_OPTIONS, in another mount namespace or with stdout closed gets what Node gives it", async (t) => {
  const { dir, store } = await realisedHello(t);
  // The derivation records the PATH the recipe saw: unset must not become the server's.
  writeRecipe(dir, "pathy.ts", `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh"], { path: "/usr/bin:/bin" });
export default derivation({ name: "pathy", builder: \`\${t}/bin/sh\`, args: ["-c", "echo $P > $out"], env: { P: process.env.PATH ?? "no PATH" } });
`);
  const withPath = await ukb(["realise", "pathy.ts", "--no-out-link"], { cwd: dir });
  t.is(withPath.code, 0, withPath.stderr);
  const status = await startServer(t, store);
  const noPath = { ...process.env };
  delete noPath.PATH;
  const launched = await new Promise<{ code: number; stdout: string }>((resolve) =>
    execFile(UKB_COMMAND, ["realise", "pathy.ts", "--no-out-link"], { cwd: dir, env: noPath }, (err, stdout) => resolve({ code: err ? 1 : 0, stdout })),
  );
  t.is(launched.code, 0);
  t.not(launched.stdout, withPath.stdout);
  t.is(fs.readFileSync(launched.stdout.trim(), "utf8"), "no PATH\n");
  const answered = (await status())!.answered;

  const nodeOptions = await launch(["realise", "hello.ts", "--no-out-link"], dir, { NODE_OPTIONS: "--bogus-flag" });
  t.not(nodeOptions.code, 0, "Node refuses the bogus option; the server must not answer instead");
  const nodeDebug = await launch(["realise", "hello.ts", "--no-out-link"], dir, { NODE_DEBUG: "module" });
  t.regex(nodeDebug.stderr, /MODULE/);

  const unshare = process.getuid!() === 0 ? ["-m"] : ["-Urm"];
  const inNamespace = await ukb([...unshare, UKB_COMMAND, "realise", "hello.ts", "--no-out-link"], { cwd: dir, command: "unshare" });
  t.is(inNamespace.code, 0, inNamespace.stderr);
  t.is((await status())!.answered, answered);

  const closed = await new Promise<number>((resolve) =>
    spawn("sh", ["-c", `exec "$0" realise hello.ts --no-out-link >&-`, UKB_COMMAND], { cwd: dir, stdio: "ignore" }).on("close", (code) => resolve(code ?? 1)),
  );
  t.is(closed, 0);
  t.is((await status())!.answered, answered + 1);
});

test("the launcher makes the out-link itself: with its own rights, in its own view, and only while it waits", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const status = await startServer(t, store);
  const greeting = (await ukb(["realise", "hello.ts", "-A", "greeting", "--no-out-link"], { cwd: dir })).stdout.trim();

  // /proc/self is the launcher's, as it is Node's.
  const self = await launch(["realise", "hello.ts", "-o", "/proc/self/cwd/selflink"], dir);
  t.is(self.code, 0, self.stderr);
  t.is(fs.readlinkSync(path.join(dir, "selflink")), out);
  t.is((await status())!.answered, 1);

  if (process.getuid!() === 0) {
    // Root without the capability to write another user's folder: the server (which has it) must not lend it.
    const locked = path.join(tempDir(), "locked");
    fs.mkdirSync(locked);
    fs.chownSync(locked, 65534, 65534);
    fs.chmodSync(path.dirname(locked), 0o755);
    const args = ["--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-dac_override,-dac_read_search,-fowner", UKB_COMMAND, "realise", "hello.ts", "-o", path.join(locked, "r")];
    const byNode = await ukb(args, { cwd: dir, command: "setpriv", env: { UKB_NO_SERVER: "1" } });
    const byLauncher = await ukb(args, { cwd: dir, command: "setpriv" });
    t.is(byNode.code, 2, byNode.stderr);
    t.regex(byNode.stderr, /cannot make the out-link .*locked\/r \(EACCES\)/);
    t.is(byLauncher.code, byNode.code);
    t.is(byLauncher.stderr, byNode.stderr);
    t.false(fs.existsSync(path.join(locked, "r")));
  }

  // A launcher that gave up on a stopped server: what the server does when it wakes must not undo
  // what the CLI did meanwhile.
  const { pid } = (await status())!;
  process.kill(pid, "SIGSTOP");
  let late: Awaited<ReturnType<typeof launch>>;
  try {
    late = await launch(["realise", "hello.ts", "-A", "greeting", "-o", "r"], dir);
    t.is(fs.readlinkSync(path.join(dir, "r")), greeting);
    t.is((await launch(["realise", "hello.ts", "-o", "r"], dir, { UKB_NO_SERVER: "1" })).code, 0);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  t.is(late.code, 0, late.stderr);
  await status(); // the server has worked through its queue
  t.is(fs.readlinkSync(path.join(dir, "r")), out);
});

test("an answered no-op starts no Node; what it must not answer starts Node; a file in the link's place is left alone", async (t) => {
  const { dir, store, out } = await realisedHello(t);
  const node = nodeRecorder();
  // The eval cache is keyed on PATH: evaluate once with this one.
  t.is((await launch(["realise", "hello.ts"], dir, { PATH: node.PATH, UKB_NO_SERVER: "1" })).code, 0);
  t.not(node.starts(), "", "the recorder does not see Node start");
  const status = await startServer(t, store);

  node.clear();
  fs.rmSync(path.join(dir, "result"));
  const r = await launch(["realise", "hello.ts"], dir, { PATH: node.PATH });
  t.is(r.stdout, `${out}\n`);
  t.is(fs.readlinkSync(path.join(dir, "result")), out);
  t.is(node.starts(), "", "Node ran: the launcher did not carry out the answer");
  t.is((await status())!.answered, 1);

  // What the server does not answer its started CLI runs, but only for a launcher whose `node` is
  // the server's: this one's is the recorder, so its own Node CLI runs them.
  for (const flag of ["--no-eval-cache", "--dry-run"]) {
    const { ran } = await readyToRun(t, status);
    node.clear();
    t.is((await launch(["realise", "hello.ts", flag], dir, { PATH: node.PATH })).code, 0);
    t.regex(node.starts(), /realise hello\.ts/, `${flag} did not reach Node`);
    t.like(await status(), { ran });
    t.regex((await status())!.lastFallback?.why ?? "", /the launcher's node \(.*\) is not the server's/);
  }
  for (const make of [(p: string) => fs.writeFileSync(p, "precious\n"), (p: string) => fs.mkdirSync(p)]) {
    const name = path.join(dir, `taken-${fs.readdirSync(dir).length}`);
    make(name);
    const byNode = await launch(["realise", "hello.ts", "-o", name], dir, { PATH: node.PATH, UKB_NO_SERVER: "1" });
    const byServer = await launch(["realise", "hello.ts", "-o", name], dir, { PATH: node.PATH });
    t.is(byServer.code, byNode.code);
    t.is(byServer.stderr, byNode.stderr);
    t.false(fs.lstatSync(name).isSymbolicLink());
  }
  // The server answered those two; the launcher found no link to replace and left them to Node.
  t.is((await status())!.answered, 3);
});

test("the launcher sends its own user's server its environment, every entry, and a request too big for the server goes to the CLI", async (t) => {
  const { dir, out } = await realisedHello(t);
  const socket = path.join(dir, "cache", "server.sock");
  const requests: string[] = [];
  // The store's owner listening in the server's place: it records each request and says "fallback".
  const listener = net.createServer({ allowHalfOpen: true }, (c) => {
    let heard = "";
    c.on("data", (d: Buffer) => (heard += d.toString("latin1")));
    c.on("end", () => {
      requests.push(heard);
      c.end("fallback\n");
    });
  });
  await new Promise<void>((resolve) => listener.listen(socket, resolve));
  t.teardown(() => listener.close());
  const r = await launch(["realise", "hello.ts"], dir, { VERSION: "2", UKB_STORE: "cache" });
  t.is(r.stdout, `${out}\n`);
  t.is(requests.length, 1);
  t.regex(requests[0]!, new RegExp(`^${MAGIC}\0launch\0`));
  const fields = requests[0]!.split("\0");
  for (const entry of ["VERSION=2", "UKB_STORE=cache", `PATH=${process.env.PATH}`]) t.true(fields.includes(entry), entry);
  // Past the server's limit (1 MiB) the launcher does not ask: the CLI answers.
  // (One variable holds at most 128 KiB: ten of 110 KiB.)
  const big = await launch(["realise", "hello.ts"], dir, Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`BIG${i}`, "x".repeat(110 * 1024)])));
  t.is(big.code, 0, big.stderr);
  t.is(big.stdout, `${out}\n`);
  t.is(requests.length, 1, "a request over the limit was sent");
});

test("a recipe that reads an environment variable: the server answers while its value is the one evaluated with, and falls back when it changes or is unset", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "env.ts", `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "ver", builder: \`\${t}/bin/sh\`, args: ["-c", "echo ${"$"}{process.env.VERSION ?? "none"} > $out"] });\n`.replace('"echo ${process.env.VERSION ?? "none"} > $out"', '`echo ${process.env.VERSION ?? "none"} > $out`'));
  const first = await ukb(["realise", "env.ts", "--no-out-link"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  t.is(fs.readFileSync(first.stdout.trim(), "utf8"), "none\n");
  const status = await startServer(t, path.join(dir, "cache"));
  const answered = async () => (await status())!.answered;
  const before = await answered();
  const two = await launch(["realise", "env.ts", "--no-out-link"], dir, { VERSION: "2" });
  t.is(two.code, 0, two.stderr);
  t.is(fs.readFileSync(two.stdout.trim(), "utf8"), "2\n");
  t.is(await answered(), before, "a new value is a new evaluation: the CLI's");
  const again = await launch(["realise", "env.ts", "--no-out-link"], dir, { VERSION: "2" });
  t.is(again.stdout, two.stdout);
  t.is(await answered(), before + 1, "the value evaluated with: the server answers");
  const unset = await launch(["realise", "env.ts", "--no-out-link"], dir);
  t.is(fs.readFileSync(unset.stdout.trim(), "utf8"), "none\n");
  t.is(await answered(), before + 1, "unset is not the value evaluated with");
  const empty = await launch(["realise", "env.ts", "--no-out-link"], dir, { VERSION: "" });
  t.is(fs.readFileSync(empty.stdout.trim(), "utf8"), "\n");
  t.is(await answered(), before + 1, "empty is not unset");
});

test("a recipe that depends on the working folder: the server compares the launcher's", async (t) => {
  const dir = tempDir();
  for (const sub of ["one", "two"]) fs.mkdirSync(path.join(dir, sub));
  writeRecipe(dir, "cwd.ts", `import { derivation, hostTools } from "ukb";\nimport path from "node:path";\nconst here = path.basename(process.cwd());\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "cwd", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${here} > $out\`] });\n`);
  const store = path.join(dir, "cache");
  const args = ["realise", path.join(dir, "cwd.ts"), "--no-out-link", "--store", store];
  t.is((await ukb(args, { cwd: path.join(dir, "one") })).code, 0);
  const status = await startServer(t, store);
  for (const sub of ["one", "one", "two", "two"]) {
    const r = await launch(args, path.join(dir, sub));
    t.is(r.code, 0, r.stderr);
    t.is(fs.readFileSync(r.stdout.trim(), "utf8"), `${sub}\n`);
  }
  // From "two" the first time, the CLI evaluates: its cached evaluation then serves "two".
  t.is((await status())!.answered, 3);
});

test("the first realise through bin/ukb starts the store's server, which answers the next no-op; UKB_NO_SERVER=1 and a recipe evaluated on every run start none", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const store = path.join(dir, "cache");
  const serverLog = path.join(store, "logs", "server.log");
  const status = () => statusOf(store);

  // Told not to: no server is started (its log would be made before it is spawned).
  const optedOut = await launch(["realise", "hello.ts"], dir, { UKB_NO_SERVER: "1" });
  t.is(optedOut.code, 0, optedOut.stderr);
  t.false(fs.existsSync(serverLog));
  // A recipe evaluated on every run: a server could never answer it.
  writeRecipe(dir, "clock.ts", `import { derivation, hostTools } from "ukb";\nconst now = Date.now();\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "clock", builder: \`\${t}/bin/sh\`, args: ["-c", now > 0 ? "echo > $out" : "exit 1"] });\n`);
  const volatile = await launch(["realise", "clock.ts", "--no-out-link"], dir);
  t.is(volatile.code, 0, volatile.stderr);
  t.false(fs.existsSync(serverLog));
  // A failed realise starts none either.
  writeRecipe(dir, "fails.ts", `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "fails", builder: \`\${t}/bin/sh\`, args: ["-c", "exit 3"] });\n`);
  t.is((await launch(["realise", "fails.ts", "--no-out-link"], dir)).code, 1);
  t.false(fs.existsSync(serverLog));

  // Through the launcher, with no server: Node's CLI answers, then a server starts in the background.
  // The caller's pipes close when ukb is done (fd 200 here, as a make jobserver or a CI runner may
  // leave one): the server, which lives on, holds none of them. What the launcher told the CLI is
  // not in the environment the recipe sees (an output could hold it).
  writeRecipe(dir, "seen.ts", `import { derivation, hostTools } from "ukb";\nconst told = process.env.UKB_LAUNCHER_NO_SERVER ?? "unset";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "seen", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${told} > $out\`] });\n`);
  const stdio = ["ignore", "pipe", "pipe", ...Array.from({ length: 197 }, () => "ignore" as const), "pipe"] as const;
  const child = spawn(UKB_COMMAND, ["realise", "seen.ts"], { cwd: dir, stdio: [...stdio] });
  let stdout = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d));
  const closed = new Promise<number | null>((resolve) => child.once("close", resolve));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  t.is(await exited, 0);
  const allClosed = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20_000))]);
  t.true(allClosed, "a pipe ukb was given stays open after it exited: the server it started holds it");
  const first = { stdout };
  t.is(fs.readFileSync(stdout.trim(), "utf8"), "unset\n");
  const running = await startedServer(t, store);
  t.truthy(running, `no server started; its log: ${fs.existsSync(serverLog) ? fs.readFileSync(serverLog, "utf8") : "none"}`);
  const second = await launch(["realise", "seen.ts"], dir);
  t.is(second.code, 0, second.stderr);
  t.is(second.stdout, first.stdout);
  t.is((await status())!.answered, running!.answered + 1, "the second no-op is the server's");
  // It is the only one: a realise answered by it, or falling back to Node past it, starts no other.
  t.is((await launch(["realise", "hello.ts", "--dry-run"], dir)).code, 0);
  t.is((await status())!.pid, running!.pid);
  t.is(fs.readFileSync(serverLog, "utf8").match(/serving /g)?.length, 1);
});

test("a server a realise starts makes nothing: not the store a script deleted as ukb ended; an empty UKB_STORE is ./cache for the launcher and the CLI alike", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  // mktemp -d; ukb realise --store $d/s; rm -rf $d, as a script's exit trap does.
  const scratch = path.join(dir, "scratch");
  const store = path.join(scratch, "s");
  const r = await launch(["realise", "hello.ts", "--no-out-link", "--store", store], dir);
  t.is(r.code, 0, r.stderr);
  fs.rmSync(scratch, { recursive: true, force: true });
  await new Promise((done) => setTimeout(done, 3000));
  t.false(fs.existsSync(scratch), "the server made the deleted store's folder again");

  const empty = await launch(["realise", "hello.ts", "--no-out-link"], dir, { UKB_STORE: "" });
  t.is(empty.code, 0, empty.stderr);
  t.true(empty.stdout.startsWith(path.join(dir, "cache", "store")), empty.stdout);
  t.truthy(await startedServer(t, path.join(dir, "cache")), "no server for ./cache");
  const served = await launch(["realise", "hello.ts", "--no-out-link"], dir, { UKB_STORE: "" });
  t.is(served.stdout, empty.stdout);
  t.is((await statusOf(path.join(dir, "cache")))?.answered, 1);
});

test("the launcher hands Node's CLI the descriptors it was given: a /dev/fd/N argument, Node's IPC channel", async (t) => {
  const dir = tempDir();
  const generated = await ukb(["key", "generate", "--name", "t", "--out", path.join(dir, "k.sec")]);
  t.is(generated.code, 0, generated.stderr);
  const viaFd = await ukb(["-c", `"$0" key public <(cat k.sec)`, UKB_COMMAND], { cwd: dir, command: "bash" });
  t.is(viaFd.code, 0, viaFd.stderr);
  t.is(viaFd.stdout, generated.stdout);
  // A Node parent with an IPC channel: Node aborts at start if NODE_CHANNEL_FD names a closed descriptor.
  const child = spawn(UKB_COMMAND, ["help"], { stdio: ["ignore", "ignore", "pipe", "ipc"] });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once("exit", (c, s) => resolve([c, s])));
  t.deepEqual([code, signal], [0, null]);
});

// The server's started CLI: what it runs, and how.

/** A recipe whose one build runs `script` in sh, where `${t}` is its host tools (sh and sleep). */
const shellRecipe = (name: string, script: string) =>
  `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh", "sleep"]);\nexport default derivation({ name: "${name}", builder: \`\${t}/bin/sh\`, args: ["-c", \`${script}\`] });\n`;

/** Starts bin/ukb and collects what it prints; `started` resolves once stderr shows `marker`. */
function launchInBackground(args: string[], cwd: string, marker: RegExp) {
  const child = spawn(UKB_COMMAND, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let seen: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (seen = resolve));
  child.stdout.on("data", (d: Buffer) => (stdout += d));
  child.stderr.on("data", (d: Buffer) => {
    stderr += d;
    if (marker.test(stderr)) seen();
  });
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, started, ended };
}

/**
 * A project whose recipe's one build sleeps `seconds`, a server for its store
 * with its started CLI ready, and a launch of that recipe under way (its
 * build started).
 */
async function runUnderway(t: ExecutionContext, name: string, seconds: number) {
  const { dir, store } = await realisedHello(t);
  writeRecipe(dir, `${name}.ts`, shellRecipe(name, `\${t}/bin/sleep ${seconds}; echo done > $out`));
  const status = await startServer(t, store);
  const { pid, ran } = await readyToRun(t, status);
  const run = launchInBackground(["realise", `${name}.ts`, "--no-out-link"], dir, new RegExp(`building ${name}`));
  await run.started;
  return { dir, store, status, pid, ran, run };
}

test("a changed recipe is evaluated and built by the server's started CLI: the launcher starts no Node, and gets its output, link and exit code", async (t) => {
  const { dir, store } = await realisedHello(t);
  const status = await startServer(t, store);
  const { ran, answered } = await readyToRun(t, status);
  // Long enough for a loaded machine to look at the launcher mid-run.
  writeRecipe(dir, "salut.ts", shellRecipe("salut", "${t}/bin/sleep 5; echo salut > $out"));
  const run = launchInBackground(["realise", "salut.ts", "-o", "out"], dir, /building salut/);
  await run.started;
  // Mid-run, the launcher is still itself: it did not exec Node.
  let exe: string;
  try {
    exe = fs.realpathSync(`/proc/${run.child.pid}/exe`);
  } catch (err) {
    exe = `unreadable (${(err as NodeJS.ErrnoException).code}): the launcher ended before the build did`;
  }
  t.is(exe, LAUNCHER);
  const r = await run.ended;
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "salut\n");
  t.is(fs.readlinkSync(path.join(dir, "out")), r.stdout.trim());
  t.regex(r.stderr, /building salut\nbuilt salut in \d+\.\d+ s\n/);
  t.like(await status(), { ran: ran + 1, answered });
  // What it built is the store's, as any build: the next launch is a no-op the server answers.
  const again = await launch(["realise", "salut.ts", "-o", "out"], dir);
  t.is(again.stdout, r.stdout);
  t.like(await status(), { ran: ran + 1, answered: answered + 1 });
  t.is((await ukb(["store", "verify", "--store", store])).code, 0);
});

test("a run takes the launcher's environment, working folder, relative paths and umask", async (t) => {
  const dir = tempDir();
  const sub = path.join(dir, "sub");
  fs.mkdirSync(sub);
  writeRecipe(dir, "where.ts", `import { derivation, hostTools } from "ukb";
import path from "node:path";
const t = hostTools(["sh"]);
export default derivation({ name: "where", builder: \`\${t}/bin/sh\`, args: ["-c", "echo $G $HERE > $out"], env: { G: process.env.GREETING ?? "none", HERE: path.basename(process.cwd()) } });
`);
  const store = path.join(dir, "cache");
  t.is((await ukb(["realise", "where.ts", "--store", store, "--no-out-link"], { cwd: dir })).code, 0);
  const status = await startServer(t, store);
  const { ran } = await readyToRun(t, status);
  // From sub/, with its own variable, a relative recipe and link, and umask 077.
  const r = await ukb(["-c", 'umask 077; exec "$0" realise ../where.ts --store ../cache -o here', UKB_COMMAND], { cwd: sub, command: "sh", env: { GREETING: "hi" } });
  t.is(r.code, 0, r.stderr);
  const out = r.stdout.trim();
  t.is(fs.readFileSync(out, "utf8"), "hi sub\n");
  t.is(fs.readlinkSync(path.join(sub, "here")), out);
  t.is((await status())!.ran, ran + 1);
  // The build's log was made with the launcher's umask.
  t.is((fs.statSync(path.join(store, "logs", `${path.basename(out)}.log`)).mode & 0o777).toString(8), "600");
});

test("a build that fails in a run is reported as Node's CLI reports it: its name, exit status and log, exit code 1", async (t) => {
  const { dir, store } = await realisedHello(t);
  writeRecipe(dir, "fails.ts", shellRecipe("fails", "echo about to fail; exit 3"));
  const status = await startServer(t, store);
  const { ran } = await readyToRun(t, status);
  // Node's first: it builds the host tools, which the run then finds valid.
  const byNode = await ukb(["realise", "fails.ts"], { cwd: dir });
  const byServer = await launch(["realise", "fails.ts"], dir);
  t.is(byServer.code, 1);
  t.is(byNode.code, 1);
  t.regex(byServer.stderr, /fails.*exit (code|status) 3[\s\S]*about to fail/);
  // The same lines from the build on (Node's built the host tools first).
  const fromBuild = (s: string) => s.slice(s.indexOf("building fails"));
  t.is(fromBuild(byServer.stderr), fromBuild(byNode.stderr));
  t.is((await status())!.ran, ran + 1);
  t.false(fs.existsSync(path.join(dir, "result")) && fs.readlinkSync(path.join(dir, "result")).includes("fails"));
});

test("Ctrl-C reaches a run: the launcher forwards SIGINT, the build stops, nothing is registered, and the store stays whole", async (t) => {
  const { dir, store, status, ran, run } = await runUnderway(t, "slow", 60);
  const sent = Date.now();
  run.child.kill("SIGINT");
  const ended = await run.ended;
  t.true(Date.now() - sent < 15_000, "the build went on after Ctrl-C");
  t.is(ended.code, 1, ended.stderr);
  t.regex(ended.stderr, /skipped slow: cancelled/);
  t.is(ended.stdout, "");
  t.is((await status())!.ran, ran + 1);
  const verify = await ukb(["store", "verify", "--store", store]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  const dry = await ukb(["realise", "slow.ts", "--dry-run"], { cwd: dir });
  t.regex(dry.stdout, /will be built/);
});

test("a launcher killed during a run takes its run with it, as it would its own Node CLI", async (t) => {
  const { store, status, run } = await runUnderway(t, "slow", 60);
  run.child.kill("SIGKILL");
  await run.ended;
  // The run ends (its lock released), and the server starts the next CLI for the next launch.
  const after = await until(status, (s) => s?.startedCli === "ready", 20_000);
  t.is(after?.startedCli, "ready", "the killed launcher's run went on");
  const log = fs.readFileSync(path.join(store, "logs", "server.log"), "utf8");
  t.regex(log, /run ended: exit (1|143)/);
  t.is((await ukb(["store", "verify", "--store", store])).code, 0);
});

test("a server killed during a run: the launcher says so and runs the command again with Node, which finishes it", async (t) => {
  const { store, pid, run } = await runUnderway(t, "pause", 2);
  process.kill(pid, "SIGKILL");
  const ended = await run.ended;
  t.is(ended.code, 0, ended.stderr);
  t.regex(ended.stderr, /the store's server stopped during the run; running it again without the server/);
  t.is(fs.readFileSync(ended.stdout.trim(), "utf8"), "done\n");
  t.is((await ukb(["store", "verify", "--store", store])).code, 0);
});

test("a launcher with other rights (no_new_privs), or naming its own descriptors, is left to its own Node CLI", async (t) => {
  const { dir, store } = await realisedHello(t);
  const status = await startServer(t, store);
  const { ran } = await readyToRun(t, status);
  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo privs"));
  const limited = await ukb(["--no-new-privs", UKB_COMMAND, "realise", "hello.ts", "--no-out-link"], { cwd: dir, command: "setpriv" });
  t.is(limited.code, 0, limited.stderr);
  t.is(fs.readFileSync(limited.stdout.trim(), "utf8"), "PRIVS\n");
  t.like(await status(), { ran });
  t.regex((await status())!.lastFallback?.why ?? "", /the launcher's capabilities, no_new_privs or seccomp are not the server's/);

  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo proc"));
  const viaProc = await launch(["realise", "hello.ts", "-o", "/proc/self/cwd/link"], dir);
  t.is(viaProc.code, 0, viaProc.stderr);
  t.is(fs.readlinkSync(path.join(dir, "link")), viaProc.stdout.trim());
  t.like(await status(), { ran });
  t.regex((await status())!.lastFallback?.why ?? "", /names the launcher's own descriptors, terminal or \/proc entry/);

  // Another locale: ICU took the server's as the started CLI began, and a recipe may format with it.
  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo locale"));
  const otherLocale = await ukb(["realise", "hello.ts", "--no-out-link"], { cwd: dir, command: UKB_COMMAND, env: { LC_MESSAGES: "de_DE.UTF-8" } });
  t.is(otherLocale.code, 0, otherLocale.stderr);
  t.is(fs.readFileSync(otherLocale.stdout.trim(), "utf8"), "LOCALE\n");
  t.like(await status(), { ran });
  t.regex((await status())!.lastFallback?.why ?? "", /the launcher's LC_MESSAGES is not the server's, and Node reads it only as it starts/);
});

test("a run from a terminal draws the live status line there, as Node's CLI would", async (t) => {
  const { dir, store } = await realisedHello(t);
  writeRecipe(dir, "short.ts", shellRecipe("short", "${t}/bin/sleep 1; echo > $out"));
  const status = await startServer(t, store);
  const { ran } = await readyToRun(t, status);
  // script(1) gives the launcher a terminal for its stdout and stderr.
  const r = await ukb(["-qec", `"${UKB_COMMAND}" realise short.ts --no-out-link`, "/dev/null"], { cwd: dir, command: "script" });
  t.is(r.code, 0, r.stdout);
  t.regex(r.stdout, /\[\d+\/\d+ built, 1 running, \d+ waiting\] \d+\.\ds short/);
  t.regex(r.stdout, /\r\x1b\[2K/);
  t.is((await status())!.ran, ran + 1);
});

/** PIDs of the processes whose parent is `pid` and whose command line holds `text`. */
function childrenOf(pid: number, text: string): number[] {
  return fs
    .readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        const stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        return ppid === pid && fs.readFileSync(`/proc/${name}/cmdline`, "utf8").includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
}

test("a started CLI killed while it waits is started again, and the next launch runs in the new one", async (t) => {
  const { dir, store } = await realisedHello(t);
  const status = await startServer(t, store);
  const { pid, ran } = await readyToRun(t, status);
  const [waiting] = childrenOf(pid, "server\0warm");
  t.truthy(waiting, "no started CLI among the server's children");
  process.kill(waiting!, "SIGKILL");
  await until(status, (s) => s?.startedCli !== "ready", 5000);
  const again = await until(status, (s) => s?.startedCli === "ready");
  t.is(again?.startedCli, "ready", fs.readFileSync(path.join(store, "logs", "server.log"), "utf8"));
  t.notDeepEqual(childrenOf(pid, "server\0warm"), [waiting]);
  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo again"));
  const r = await launch(["realise", "hello.ts", "--no-out-link"], dir);
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "AGAIN\n");
  t.is((await status())!.ran, ran + 1);
});

test("a launcher whose PATH finds another node (a wrapper, another version) is left to that node", async (t) => {
  const { dir, store } = await realisedHello(t);
  const status = await startServer(t, store);
  const { ran } = await readyToRun(t, status);
  const node = nodeRecorder();
  writeRecipe(dir, "hello.ts", HELLO.replace("echo hello", "echo other"));
  const r = await launch(["realise", "hello.ts", "--no-out-link"], dir, { PATH: node.PATH });
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(r.stdout.trim(), "utf8"), "OTHER\n");
  t.regex(node.starts(), /realise hello\.ts/);
  t.like(await status(), { ran });
  t.regex((await status())!.lastFallback?.why ?? "", /the launcher's node \(.*\/node\) is not the server's/);
});

test("a server asked to stop during a run lets the run end first, then exits", async (t) => {
  const { store, pid, run } = await runUnderway(t, "pause", 2);
  const stopped = await ukb(["server", "stop", "--store", store]);
  t.regex(stopped.stdout, /stopped the server/);
  const ended = await run.ended;
  t.is(ended.code, 0, ended.stderr);
  t.is(fs.readFileSync(ended.stdout.trim(), "utf8"), "done\n");
  t.notRegex(ended.stderr, /running it again/);
  t.true(await exits(pid, 10_000), "the server outlived its last run");
});
