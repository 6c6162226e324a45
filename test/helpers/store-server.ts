/**
 * Helpers for the tests of the store's server and the native launcher
 * (core-server): start a server, read its status, run
 * commands as users do (bin/ukb), speak its protocol by hand.
 */
import type { ExecutionContext } from "ava";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ownProcessContext, type ServerStatus } from "../../src/server/protocol.js";
import { HELLO, ROOT, UKB_COMMAND, tempDir, ukb, writeRecipe } from "./ukb.js";

export const LAUNCHER = path.join(ROOT, "dist/bin/ukb");
/** The protocol's magic (src/server/protocol.ts). */
export const MAGIC = "ukb-server-4";

/** What `ukb server status --json` prints. */
export type Status = ServerStatus;

/** Runs the command as users do (bin/ukb). */
export const launch = (args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) => ukb(args, { cwd, env, command: UKB_COMMAND });

/** For launches that must not start the store's server when none runs (they test servers started by hand). */
export const NO_AUTOSTART = { UKB_NO_SERVER: "1" };

/** The status of `store`'s server (`ukb server status --json`), or undefined when none runs. */
export async function statusOf(store: string): Promise<Status | undefined> {
  const r = await ukb(["server", "status", "--json", "--store", store]);
  return (JSON.parse(r.stdout) as Status | null) ?? undefined;
}

/** Polls `read` every 100 ms for up to `withinMs` until `ok` holds of it; the last value read. */
export async function until<T>(read: () => Promise<T>, ok: (value: T) => boolean, withinMs = 15_000): Promise<T> {
  let value = await read();
  for (let waited = 0; !ok(value) && waited < withinMs; waited += 100) {
    await new Promise((r) => setTimeout(r, 100));
    value = await read();
  }
  return value;
}

/** Waits up to 15 s for a server of `store` (one a realise starts in the background); stopped when the test ends. */
export async function startedServer(t: ExecutionContext, store: string): Promise<Status | undefined> {
  t.teardown(() => ukb(["server", "stop", "--store", store]).then(() => undefined));
  return until(() => statusOf(store), (s) => s !== undefined);
}

/** Starts a server for `store` (stopped when the test ends) and returns a reader of its status. */
export async function startServer(t: ExecutionContext, store: string): Promise<() => Promise<Status | undefined>> {
  const started = await ukb(["server", "start", "--store", store, "--idle-timeout", "300"]);
  t.is(started.code, 0, started.stderr);
  t.teardown(() => ukb(["server", "stop", "--store", store]).then(() => undefined));
  return () => statusOf(store);
}

/** Waits until the server's started CLI is ready for a launch (it starts one after each run); fails the test if it never is. */
export async function readyToRun(t: ExecutionContext, status: () => Promise<Status | undefined>): Promise<Status> {
  const s = await until(status, (v) => v?.startedCli === "ready");
  t.is(s?.startedCli, "ready", "the server's started CLI never became ready");
  return s!;
}

/** A project folder with hello.ts realised by Node's CLI into its ./cache. */
export async function realisedHello(t: ExecutionContext): Promise<{ dir: string; store: string; out: string }> {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const first = await ukb(["realise", "hello.ts"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  return { dir, store: path.join(dir, "cache"), out: first.stdout.trim() };
}

/** A `node` first on PATH that records each start, then runs the real one. */
export function nodeRecorder(): { PATH: string; starts: () => string; clear: () => void } {
  const bin = tempDir();
  const log = path.join(bin, "starts");
  fs.writeFileSync(log, "");
  fs.writeFileSync(path.join(bin, "node"), `#!/bin/sh\necho "$*" >> '${log}'\nexec '${process.execPath}' "$@"\n`, { mode: 0o755 });
  return { PATH: `${bin}:${process.env.PATH}`, starts: () => fs.readFileSync(log, "utf8"), clear: () => fs.writeFileSync(log, "") };
}

/** Sends raw bytes to a socket and returns what comes back. */
export function ask(socket: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socket, () => conn.end(bytes));
    let answer = "";
    conn.on("data", (d: Buffer) => (answer += d));
    conn.on("error", reject);
    conn.on("close", () => resolve(answer));
  });
}

/** Whether process `pid` exits within `withinMs`. */
export async function exits(pid: number, withinMs: number): Promise<boolean> {
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

/** This process's capabilities, no_new_privs and seccomp, as the launcher sends its own (the server runs only for the same). */
export const processContext = (): string => ownProcessContext() ?? "-";

export { HELLO, writeRecipe };
