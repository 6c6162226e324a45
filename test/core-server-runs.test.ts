/**
 * What the store's server cannot answer itself (a changed recipe, something
 * to build) its started CLI runs in the launcher's place (src/server/warm.ts):
 * with the launcher's arguments, environment, folder and umask, its output
 * streamed to the launcher, its exit code the launcher's, the launcher's
 * signals forwarded to it. Each test checks the server's count of runs, so a
 * launcher that silently started Node instead fails.
 */
import test, { type ExecutionContext } from "ava";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { HELLO, UKB_COMMAND, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";
import { LAUNCHER, exits, launch, nodeRecorder, readyToRun, realisedHello, startServer, until } from "./helpers/store-server.js";

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
  writeRecipe(dir, "salut.ts", shellRecipe("salut", "${t}/bin/sleep 1; echo salut > $out"));
  const run = launchInBackground(["realise", "salut.ts", "-o", "out"], dir, /building salut/);
  await run.started;
  // Mid-run, the launcher is still itself: it did not exec Node.
  t.is(fs.realpathSync(`/proc/${run.child.pid}/exe`), LAUNCHER);
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
