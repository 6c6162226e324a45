/**
 * Shared fixtures for the artifact tests: temp dirs that clean up, a command
 * runner, a small tree with every entry type, and a tree snapshot to compare.
 */
import { execFile } from "node:child_process";
import { chmod, chown, lchown, lutimes, mkdir, mkdtemp, readFile, readdir, readlink, lstat, rm, symlink, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { ExecutionContext } from "ava";
import { freePort } from "./helpers/servers.js";

const execFileP = promisify(execFile);

/** A fresh temp dir removed when the test ends. */
export async function tempDir(t: ExecutionContext, prefix = "ukb-art-"): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Run a program (no shell); returns stdout, throws with stderr on a non-zero exit. */
export async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { cwd: opts.cwd, maxBuffer: 64 << 20, encoding: "utf8" });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.stderr ?? ""} ${e.message}`);
  }
}

/**
 * A tree with every kind of entry the writers must handle: nested dirs, an
 * empty dir and file, exec bits, setuid/setgid (to be dropped), relative and
 * absolute symlinks, a non-ASCII name, names that sort differently by bytes
 * and by locale, and sizes that are not multiples of 4.
 */
export async function makeFixtureTree(root: string): Promise<void> {
  await mkdir(path.join(root, "nginx/conf"), { recursive: true });
  await mkdir(path.join(root, "nginx/html"), { recursive: true });
  await mkdir(path.join(root, "empty-dir"));
  await mkdir(path.join(root, "bin"));
  await writeFile(path.join(root, "nginx/conf/nginx.conf"), "worker_processes 1;\nevents {}\n");
  await writeFile(path.join(root, "nginx/html/index.html"), "<h1>hello ukb</h1>\n");
  await writeFile(path.join(root, "empty"), "");
  await writeFile(path.join(root, "a-b"), "x");
  await writeFile(path.join(root, "Zebra"), "upper case sorts first in byte order\n");
  await writeFile(path.join(root, "café.txt"), "non-ASCII name\n");
  await writeFile(path.join(root, "bin/tool"), "#!/bin/sh\necho tool\n");
  await chmod(path.join(root, "bin/tool"), 0o755);
  await writeFile(path.join(root, "bin/suid"), "setuid bits must be dropped");
  await chmod(path.join(root, "bin/suid"), 0o6755);
  await writeFile(path.join(root, "big.bin"), Buffer.alloc(300_001, 7));
  await symlink("../nginx/conf/nginx.conf", path.join(root, "bin/conf-link"));
  await symlink("/nginx/html", path.join(root, "html"));
  await chmod(path.join(root, "nginx/html"), 0o750);
}

/** Copy a tree (by walking it) and disturb what must not matter: times and owners. */
export async function copyTreeDisturbed(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const name of (await readdir(from)).reverse()) {
    const src = path.join(from, name);
    const dst = path.join(to, name);
    const st = await lstat(src);
    if (st.isDirectory()) {
      await copyTreeDisturbed(src, dst);
      await chmod(dst, st.mode & 0o7777);
    } else if (st.isSymbolicLink()) {
      await symlink(await readlink(src), dst);
      await lchown(dst, 1234, 4321).catch(() => undefined);
      await lutimes(dst, 1_000_000, 1_000_000).catch(() => undefined);
      continue;
    } else {
      await writeFile(dst, await readFile(src));
      await chmod(dst, st.mode & 0o7777);
    }
    // As root the copy gets other owners; as a user chown fails and times still differ.
    await chown(dst, 1234, 4321).catch(() => undefined);
    await chmod(dst, st.mode & 0o7777); // chown clears setuid: put it back
    await utimes(dst, 2_000_000_000, 1_500_000_000);
  }
}

export interface Snapshot {
  [rel: string]: { type: "file" | "dir" | "symlink"; perm: number; data?: string };
}

/** Type, permission bits and content (sha-free: small trees) of every entry below root. */
export async function snapshot(root: string, rel = ""): Promise<Snapshot> {
  const out: Snapshot = {};
  for (const name of await readdir(path.join(root, rel))) {
    const r = rel === "" ? name : `${rel}/${name}`;
    const abs = path.join(root, r);
    const st = await lstat(abs);
    if (st.isDirectory()) {
      out[r] = { type: "dir", perm: st.mode & 0o7777 };
      Object.assign(out, await snapshot(root, r));
    } else if (st.isSymbolicLink()) {
      out[r] = { type: "symlink", perm: 0o777, data: await readlink(abs) };
    } else {
      out[r] = { type: "file", perm: st.mode & 0o7777, data: (await readFile(abs)).toString("base64") };
    }
  }
  return out;
}

/** The snapshot the writers should produce from a source snapshot: setuid/setgid dropped. */
export function withoutSetid(s: Snapshot): Snapshot {
  const out: Snapshot = {};
  for (const [k, v] of Object.entries(s)) out[k] = { ...v, perm: v.perm & 0o1777 };
  return out;
}

/** Every file below a dir, relative path → bytes (for byte-identical comparisons). */
export async function allFiles(root: string, rel = ""): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of (await readdir(path.join(root, rel))).sort()) {
    const r = rel === "" ? name : `${rel}/${name}`;
    const st = await lstat(path.join(root, r));
    if (st.isDirectory()) for (const [k, v] of await allFiles(root, r)) out.set(k, v);
    else out.set(r, await readFile(path.join(root, r)));
  }
  return out;
}

export { freePort } from "./helpers/servers.js";

export interface Registry {
  /** "127.0.0.1:PORT" */
  host: string;
  stop(): Promise<void>;
}

/**
 * Debian's distribution registry (`docker-registry serve CONFIG`) on
 * 127.0.0.1 with its storage in `dir`; resolves once /v2/ answers. The
 * caller must stop() it (by the child's PID) in an always-run teardown.
 */
export async function startRegistry(dir: string): Promise<Registry> {
  const { spawn } = await import("node:child_process");
  const port = await freePort();
  const config = path.join(dir, "registry.yml");
  await mkdir(path.join(dir, "storage"), { recursive: true });
  await writeFile(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: error",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${path.join(dir, "storage")}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      "",
    ].join("\n"),
  );
  const child = spawn("docker-registry", ["serve", config], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid!, "SIGTERM");
      await exited;
    }
  };
  // Poll until it answers (readiness, not a timed assertion); give up if it exits or after 20 s.
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v2/`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not answer on port ${port}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { host: `127.0.0.1:${port}`, stop };
}
