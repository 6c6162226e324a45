/**
 * The sandbox a builder runs in (bubblewrap): new user-visible namespaces for
 * mounts, network (none), PIDs, IPC and hostname; the store read-only at the
 * fixed path /ukb/store holding only the build's inputs and their closure; a
 * fresh /build; /tmp empty; of the host's system directories, read-only, the
 * files of the packages its host tools' hashes cover and the Essential ones
 * (host-view.ts), and nothing else of the host; an environment made only of
 * what is declared.
 */
import fs from "node:fs";
import { UkbError } from "../errors/index.js";
import { VIRTUAL_STORE } from "../graph/index.js";
import { SYSTEM_DIRS } from "../host/index.js";
import type { HostView } from "./host-view.js";

/** Where the build directory is mounted: fixed, so paths recorded by compilers do not vary. */
export const BUILD_TOP = "/build";

let bwrapPath: string | undefined;
/** Forgets the bwrap found, for a process whose PATH changed (the server's started CLI taking a launcher's). */
export function forgetBwrap(): void {
  bwrapPath = undefined;
}
export function findBwrap(): string {
  if (bwrapPath) return bwrapPath;
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":").concat(["/usr/bin", "/bin"])) {
    const candidate = `${dir}/bwrap`;
    if (dir && fs.existsSync(candidate)) return (bwrapPath = candidate);
  }
  throw new UkbError("build", "bubblewrap (bwrap) is not installed: builds need it for their sandbox", { hint: "apt-get install bubblewrap" });
}

export interface SandboxSpec {
  /** Real dir mounted writable at /ukb/store; outputs appear in it. */
  storeDir: string;
  /** Real dir mounted at /build. */
  buildDir: string;
  /** Store basename → real path, mounted read-only under /ukb/store. */
  inputs: ReadonlyMap<string, string>;
  env: Readonly<Record<string, string>>;
  builder: string;
  args: readonly string[];
  /** What the build sees of the system directories; all of them, read-only, when undefined. */
  view?: HostView | undefined;
}

let systemDirs: string[] | undefined;
/** How the host's system directories appear in a sandbox: whole (looked at once per process), or as `view` shows them. */
export function systemDirArgs(view?: HostView): string[] {
  if (view) return viewArgs(view);
  if (systemDirs) return systemDirs;
  const a: string[] = [];
  for (const dir of SYSTEM_DIRS) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dir);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) a.push("--symlink", fs.readlinkSync(dir), dir);
    else if (st.isDirectory()) a.push("--ro-bind", dir, dir);
  }
  return (systemDirs = a);
}

/** A view in bwrap's terms: over each system folder a tmpfs holding its entries, then made read-only. */
function viewArgs(view: HostView): string[] {
  const a: string[] = [];
  const replaced = new Set(view.roots.map((r) => r.root));
  for (const dir of SYSTEM_DIRS) {
    if (replaced.has(dir)) continue;
    const link = readlinkOrUndefined(dir);
    if (link !== undefined) a.push("--symlink", link, dir);
  }
  for (const { root, entries } of view.roots) {
    a.push("--tmpfs", root);
    for (const e of entries) {
      if (e.kind === "dir") a.push("--dir", e.path);
      else if (e.kind === "symlink") a.push("--symlink", e.target, e.path);
      else a.push("--ro-bind", e.path, e.path);
    }
    a.push("--remount-ro", root);
  }
  return a;
}

function readlinkOrUndefined(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

/** The bwrap command line for a build. */
export function sandboxArgs(spec: SandboxSpec): string[] {
  // --as-pid-1: the builder is PID 1 of its namespace, as in Nix's sandbox; no init process
  // (one fork less per build); whatever it leaves running dies with it.
  // --cap-drop ALL: bwrap run by root keeps every capability for the builder otherwise (it could
  // remount an input writable, or unmount /proc/sys's cover); run by another user it drops them anyway.
  const a: string[] = ["--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session", "--clearenv", "--hostname", "localhost", "--cap-drop", "ALL"];
  a.push(...systemDirArgs(spec.view));
  // /proc/sys read-only: bwrap leaves it writable, and when ukb runs as root a builder could
  // otherwise set the host's sysctls (kernel.core_pattern runs a program as the host's root).
  a.push("--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev", "--tmpfs", "/tmp");
  a.push("--bind", spec.storeDir, VIRTUAL_STORE);
  for (const [base, real] of [...spec.inputs].sort()) {
    // A store path that is a symlink stays one: binding it would bind its target, resolved on the
    // host (a link to / would show the host's whole tree).
    const link = readlinkOrUndefined(real);
    if (link !== undefined) a.push("--symlink", link, `${VIRTUAL_STORE}/${base}`);
    else a.push("--ro-bind", real, `${VIRTUAL_STORE}/${base}`);
  }
  a.push("--bind", spec.buildDir, BUILD_TOP, "--chdir", BUILD_TOP);
  a.push("--remount-ro", "/");
  for (const [k, v] of Object.entries(spec.env).sort()) a.push("--setenv", k, v);
  a.push("--", spec.builder, ...spec.args);
  return a;
}
