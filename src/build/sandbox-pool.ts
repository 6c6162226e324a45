/**
 * Pooled sandboxes: bubblewrap sets a sandbox up once, and a small program
 * inside it (sandbox-pool-py.ts) runs one build after another in it, each
 * with its own store view, build folder, /tmp, /dev/shm and IPC namespace,
 * and none of the processes of the build before.
 *
 * Why: a bwrap start costs ~13 ms of CPU here even for `true` (its exec, a
 * user and a network namespace, the mount table), more than any builder of
 * the benchmark graph. In a pooled sandbox a build costs a handful of mount
 * calls and one posix_spawn. Nix pays the namespace setup per build too;
 * Bazel reuses its sandbox folders for the same reason.
 *
 * What builds of one sandbox share, one after the other and never at the
 * same time: its network namespace (loopback only, and nothing listens once
 * a build's processes are dead) and its hostname. See README, "Isolation".
 *
 * Where it cannot run (no python3 in the system directories, bwrap refusing
 * --cap-add, mounts refused), `prepare` answers undefined and builds fall
 * back to one bwrap per build. UKB_SANDBOX=pool|fresh forces one.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { UkbError } from "../errors/index.js";
import { VIRTUAL_STORE } from "../graph/index.js";
import { AGENT_SOURCE } from "./sandbox-pool-py.js";
import { inSystemDirs } from "../host/index.js";
import { BUILD_TOP, findBwrap, forgetBwrap, systemDirArgs, type SandboxSpec } from "./sandbox.js";
import type { HostView } from "./host-view.js";
import { holdEventLoop, toExit, type Exit, type GatedRun } from "./spawner.js";

/** Where the store's root folder appears inside a pooled sandbox (hidden from each build while it runs). */
const HOST = "/.ukb-host";
/** How many idle sandboxes of other views are kept when one of a new view starts. */
const SPARES_KEPT = 4;
/** Where a sandbox's view of the system directories is made before it is moved over them. */
const VIEW_STAGE = "/.ukb-view";
/** The python3 to run inside: UKB_PYTHON, or the system's; it must live in the system directories, all a sandbox sees of the host. */
function findSandboxPython(): string | { missing: string } {
  const wanted = process.env.UKB_PYTHON;
  if (wanted) return inSystemDirs(wanted) ? wanted : { missing: `UKB_PYTHON (${wanted}) is outside the system directories a sandbox sees` };
  return ["/usr/bin/python3", "/bin/python3"].find((p) => fs.existsSync(p)) ?? { missing: "no python3 in the system directories" };
}

export interface PooledBuild extends SandboxSpec {
  /** The build's log file; the builder's stdout and stderr are appended to it. */
  log: string;
}

interface Agent {
  readonly proc: ChildProcess;
  /** Resolves true once it said "ready", false if it died first. */
  readonly ready: Promise<boolean>;
  /** The build it runs: its id and how to report its end. */
  current: { id: number; finish: (exit: Exit) => void } | undefined;
  dead: boolean;
  /** The key of the view of the system directories it shows ("" for all of them); undefined until its first build. */
  view: string | undefined;
}

/** A view in the agent's terms: per system folder, its path, its number of entries, then each entry. */
function viewFields(view: HostView): string[] {
  const fields: string[] = [];
  for (const { root, entries } of view.roots) {
    fields.push(root, String(entries.length));
    for (const e of entries) {
      if (e.kind === "dir") fields.push("d", e.path);
      else if (e.kind === "symlink") fields.push("l", e.path, e.target);
      else fields.push("b", e.path);
    }
  }
  return fields;
}

type Mode = "pool" | "fresh" | "auto";

class SandboxPool {
  /** Sandboxes free for a build, started or still starting. */
  private readonly spare: Agent[] = [];
  private next = 1;
  /** Why pooled sandboxes cannot run here, once that is known. */
  private broken: string | undefined;

  constructor(
    private readonly root: string,
    private readonly mode: Mode,
  ) {}

  /**
   * Sets a build up in a pooled sandbox, to start on `go()`; undefined when
   * pooled sandboxes cannot run here (the caller uses one bwrap per build).
   */
  async prepare(spec: PooledBuild, signal?: AbortSignal): Promise<GatedRun | undefined> {
    if (this.mode === "fresh" || this.broken) return this.refuse();
    const values = [spec.builder, ...spec.args, ...Object.entries(spec.env).flat()];
    if (values.some((v) => v.includes("\0"))) throw new UkbError("build", "an argument or environment value of the builder holds a NUL byte, which no program can be given");
    const id = this.next++;
    const inside = (p: string) => {
      const rel = path.relative(this.root, p);
      if (rel.startsWith("..") || path.isAbsolute(rel)) throw new UkbError("build", `${p} is outside the store ${this.root}`);
      return rel;
    };
    // What can fail is checked before a sandbox is taken.
    const fixed = [inside(spec.storeDir), inside(spec.buildDir), inside(spec.log)];
    const inputs = [...spec.inputs].sort().flatMap(([base, real]) => [base, inside(real)]);
    const viewKey = spec.view?.key ?? "";
    let agent = await this.acquire(viewKey);
    // One that died since it was spare (its death is seen only now): the next, or a new one.
    while (agent?.dead) agent = await this.acquire(viewKey);
    if (!agent) return this.refuse();
    const chosen = agent;
    // Its first build: the view goes with it, and stays the sandbox's.
    const view = chosen.view === undefined && spec.view ? viewFields(spec.view) : [];
    chosen.view = viewKey;
    const request = [
      "prep", id, ...fixed,
      1 + spec.args.length, spec.builder, ...spec.args,
      Object.keys(spec.env).length, ...Object.entries(spec.env).flat(),
      view.length, ...view,
      ...inputs,
    ];
    let opened = false;
    let ended = false;
    const onAbort = () => this.send(chosen, ["kill", id]);
    const exited = new Promise<Exit>((resolve) => {
      chosen.current = {
        id,
        finish: (exit) => {
          ended = true;
          signal?.removeEventListener("abort", onAbort);
          chosen.current = undefined;
          if (!chosen.dead) this.spare.push(chosen);
          hold(chosen, false);
          resolve(exit);
        },
      };
    });
    hold(chosen, true);
    this.send(chosen, request);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    return {
      go: () => {
        if (opened || ended) return;
        opened = true;
        this.send(chosen, ["go", id]);
      },
      exited,
    };
  }

  private refuse(): undefined {
    if (this.mode === "pool") throw new UkbError("build", `pooled sandboxes cannot run here: ${this.broken ?? "disabled"}`);
    return undefined;
  }

  /** One request: its byte length on a line, then its fields separated by NUL (which no argument or env value can hold). */
  private send(agent: Agent, fields: readonly (string | number)[]): void {
    const payload = Buffer.from(fields.join("\0"));
    if (!agent.dead) agent.proc.stdin!.write(Buffer.concat([Buffer.from(`${payload.length}\n`), payload]));
  }

  /**
   * Starts sandboxes until `count` are spare, without waiting for them: ukb
   * calls this while a recipe evaluates, so that the first builds find their
   * sandboxes up (a start is ~40 ms of CPU, on the core evaluation leaves).
   */
  warm(count: number): void {
    if (this.mode === "fresh" || this.broken) return;
    while (this.spare.length < count) {
      const agent = this.start();
      if (!agent) return;
      this.spare.push(agent);
    }
  }

  /**
   * Gives spare sandboxes that show no view yet the views of the builds to
   * come, one each in order, as soon as ukb knows them: a sandbox mounts its
   * view (~550 binds for `sh` alone, 15–45 ms while the others start) before
   * the build asks, not after.
   */
  showViews(views: readonly HostView[]): void {
    const blank = this.spare.filter((a) => a.view === undefined && !a.dead);
    for (let i = 0; i < views.length && i < blank.length; i++) {
      blank[i]!.view = views[i]!.key;
      this.send(blank[i]!, ["view", 0, ...viewFields(views[i]!)]);
    }
  }

  /**
   * A spare sandbox showing view `viewKey`, or one that shows none yet (once
   * up), or a new one; undefined (and the pool marked broken) if one will not
   * start.
   */
  private async acquire(viewKey: string): Promise<Agent | undefined> {
    for (let yielded = false; ; ) {
      // The one that has shown that view longest (a view sent a moment ago may still be mounting),
      // else the latest with none.
      let at = this.spare.findIndex((agent) => agent.view === viewKey);
      for (let i = this.spare.length - 1; at < 0 && i >= 0; i--) if (this.spare[i]!.view === undefined) at = i;
      if (at < 0) {
        if (yielded) break;
        // A start blocks the event loop for 10–25 ms (a fork of ukb): the builds that hold a slot
        // already send their "go" first, then this one starts a sandbox (or finds one freed).
        yielded = true;
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      const [agent] = this.spare.splice(at, 1);
      if (!agent!.dead && (await agent!.ready) && !agent!.dead) return agent;
    }
    // Spares of other views wait for their next build, up to a few: a graph alternates between
    // a handful of tool sets (a compiler's, an archiver's).
    if (this.spare.length >= SPARES_KEPT) this.spare.shift()!.proc.kill("SIGKILL");
    const agent = this.start();
    if (agent && (await agent.ready)) return agent;
    this.broken ??= "its sandbox would not start (bwrap --cap-add, or mounts inside a user namespace, refused)";
    return undefined;
  }

  /** Stops the spare sandboxes (builds under way go on). */
  discardSpares(): void {
    for (const agent of this.spare.splice(0)) agent.proc.kill("SIGKILL");
  }

  private start(): Agent | undefined {
    const python = findSandboxPython();
    if (typeof python !== "string") {
      this.broken = python.missing;
      return undefined;
    }
    const args = [
      "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session", "--clearenv", "--hostname", "localhost",
      // uid 0 of its own user namespace, which then owns the mount namespace (without it, bwrap run
      // by another user nests a second user namespace, and the program inside may not mount).
      "--uid", "0", "--gid", "0",
      // Kept by the program inside for its mounts; every builder starts without any (see sandbox-pool-py.ts).
      "--cap-add", "ALL",
      ...systemDirArgs(),
      "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
      "--dir", VIRTUAL_STORE, "--dir", BUILD_TOP, "--dir", VIEW_STAGE,
      "--bind", this.root, HOST,
      "--remount-ro", "/",
      "--chdir", "/",
      "--", python, "-I", "-S", "-c", AGENT_SOURCE,
    ];
    const proc = spawn(findBwrap(), args, { stdio: ["pipe", "pipe", "inherit"], detached: true });
    let announce: (ok: boolean) => void = () => undefined;
    const agent: Agent = { proc, ready: new Promise<boolean>((r) => (announce = r)), current: undefined, dead: false, view: undefined };
    proc.stdin!.on("error", () => undefined);
    proc.once("error", () => announce(false));
    const lines = createInterface({ input: proc.stdout! });
    lines.on("line", (line) => {
      if (line === "ready") return announce(true);
      const [kind, idText, status, retire] = line.split(" ");
      if (kind !== "done" || agent.current?.id !== Number(idText)) return;
      // "retire": the build changed the sandbox's own process state; it exits, and is never reused.
      if (retire === "retire") agent.dead = true;
      agent.current.finish(toExit(Number(status)));
    });
    lines.once("close", () => {
      agent.dead = true;
      const spare = this.spare.indexOf(agent);
      if (spare >= 0) this.spare.splice(spare, 1);
      announce(false);
      agent.current?.finish({ code: null, signal: "SIGKILL" });
      hold(agent, false);
    });
    hold(agent, true);
    void agent.ready.then((ok) => hold(agent, !ok ? false : agent.current !== undefined));
    return agent;
  }
}

/** Holds the event loop while a sandbox starts or builds; lets ukb exit while it idles. */
function hold(agent: Agent, busy: boolean): void {
  holdEventLoop(agent.proc, busy && !agent.dead);
}

const pools = new Map<string, SandboxPool>();

/**
 * What sandboxes started now depend on in the environment: PATH (where bwrap
 * is), UKB_SANDBOX and UKB_PYTHON. The server's started CLI starts them
 * ahead of a launch, then keeps them only if the launch's are the same.
 */
export function sandboxSettings(): string {
  return JSON.stringify([process.env.PATH, process.env.UKB_SANDBOX, process.env.UKB_PYTHON]);
}

/** Stops every spare sandbox and forgets the pools and the bwrap found (the environment they were started in is gone). */
export function discardSandboxPools(): void {
  for (const pool of pools.values()) pool.discardSpares();
  pools.clear();
  forgetBwrap();
}

/** The pool of sandboxes for builds in the store at `root`. */
export function sandboxPool(root: string): SandboxPool {
  let pool = pools.get(root);
  if (!pool) {
    const forced = process.env.UKB_SANDBOX;
    const mode: Mode = forced === "pool" || forced === "fresh" ? forced : "auto";
    pools.set(root, (pool = new SandboxPool(root, mode)));
  }
  return pool;
}
