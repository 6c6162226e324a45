/**
 * What a build sees of the host's system directories: only the files of the
 * Debian packages its host tools run with, not all of /usr.
 *
 * Why: a compiler searches /usr/include and /usr/local/include, a configure
 * script probes for zlib.h or perl, a Makefile runs /usr/bin/python3 by
 * path. With all of /usr visible, whatever else the host has installed
 * changes a build's output while no hash changes: the same derivation built
 * on two machines differs, and a binary cache serves the one to the other.
 * Nix shows a build nothing of the host; ukb shows it the packages that
 * `hostTools` found for its programs (src/host: the owners, what they depend
 * on, what they recommend themselves), plus /bin/sh's, which make, system()
 * and every `#!/bin/sh` script run by that path (Nix's sandbox gives a
 * /bin/sh too). That is what hostTools' hash covers (src/recipe/host-packages.ts):
 * Essential packages reached only as dependencies (dpkg, tar) are neither
 * hashed nor shown.
 *
 * The view is a tree of mounts over each system directory (a tmpfs, its
 * folders, and read-only binds of the packages' files; a folder all of
 * whose entries are the packages' is bound whole). Documentation (man,
 * info, doc, locale) is left out: builds do not read it and it would double
 * the mounts.
 *
 * Where the packages are not known, the build sees the system directories
 * whole, as before: a host without dpkg, a host tool no package owns
 * (/usr/local/bin), or UKB_HOST_VIEW=system.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { dpkgAdmindir, loadIndex, ownersOf, packageClosure, packageFiles } from "../host/index.js";
import type { Store } from "../store/index.js";

/** Host directories every build sees read-only (a symlink stays a symlink, as /bin → usr/bin on merged-/usr systems). */
export const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/** One entry of a view, parents before children. */
export type ViewEntry =
  | { readonly kind: "dir"; readonly path: string }
  /** A file, or a folder all of whose entries are shown, bound read-only at its own path. */
  | { readonly kind: "bind"; readonly path: string }
  | { readonly kind: "symlink"; readonly path: string; readonly target: string };

export interface HostView {
  /** Same key, same mounts: pooled sandboxes are kept per view. */
  readonly key: string;
  /** The system directories it replaces (those that are real folders, not links), each with its entries. */
  readonly roots: readonly { readonly root: string; readonly entries: readonly ViewEntry[] }[];
  /** How many packages it shows. */
  readonly packages: number;
}

/** Left out of every view: what no build reads. */
const DOCUMENTATION = /^\/usr\/share\/(doc|man|info|locale|lintian|bug|doc-base|menu)(\/|$)/;

/**
 * The host programs the store paths of a build's input closure lead to:
 * the tools of its `hostTools` outputs (their `bin/` links point at them).
 */
export function hostProgramsIn(store: Store, closure: readonly string[]): string[] {
  const programs = new Set<string>();
  for (const base of closure) for (const program of programsOf(store, base)) programs.add(program);
  return [...programs].sort();
}

/** Per store (its real folder) and path: the host programs it leads to. A valid path never changes; a deep graph asks of the same paths again and again. */
const programsByPath = new Map<string, readonly string[]>();

function programsOf(store: Store, base: string): readonly string[] {
  const real = store.realPath(base);
  let programs = programsByPath.get(real);
  if (programs) return programs;
  const drv = store.drvOf(base);
  if (drv) programs = drv.kind === "host-tools" ? (drv.hostTools ?? []).map((tool) => tool.path) : [];
  // A path whose derivation this store never saw (substituted as part of another's closure):
  // its links into the system directories, if it is a hostTools output.
  else programs = hostLinksIn(path.join(real, "bin"));
  programsByPath.set(real, programs);
  return programs;
}

function hostLinksIn(bin: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(bin);
  } catch {
    return [];
  }
  const targets: string[] = [];
  for (const name of names) {
    let target: string;
    try {
      target = fs.readlinkSync(path.join(bin, name));
    } catch {
      continue;
    }
    if (SYSTEM_DIRS.some((d) => target.startsWith(`${d}/`))) targets.push(target);
  }
  return targets;
}

const views = new Map<string, HostView | undefined>();

/**
 * The view of the system directories for a build whose host tools are
 * `programs` (real paths); undefined where the build sees them whole.
 */
export function hostViewFor(programs: readonly string[]): HostView | undefined {
  if (process.env.UKB_HOST_VIEW === "system") return undefined;
  const dir = dpkgAdmindir();
  const index = loadIndex(dir);
  if (!index) return undefined;
  const memo = `${index.key}\0${programs.join("\0")}`;
  if (views.has(memo)) return views.get(memo);
  const view = makeView(dir, programs);
  views.set(memo, view);
  return view;
}

function makeView(dir: string, programs: readonly string[]): HostView | undefined {
  const index = loadIndex(dir)!;
  const owners = new Set<string>();
  for (const program of programs) {
    const owner = ownersOf(index, [[program]]);
    // A program no package owns: what it runs with is unknown, so the build sees everything.
    if (owner.size === 0) return undefined;
    for (const o of owner) owners.add(o);
  }
  let sh: string | undefined;
  try {
    sh = fs.realpathSync("/bin/sh");
  } catch {
    // no /bin/sh on this host
  }
  if (sh) for (const o of ownersOf(index, [["/bin/sh", sh]])) owners.add(o);
  const packages = packageClosure(index, owners, { essentialDependencies: false });

  const shown = new Set<string>();
  const realDirs = new Map<string, string | undefined>();
  const realDir = (d: string) => {
    if (!realDirs.has(d)) {
      let real: string | undefined;
      try {
        real = fs.realpathSync(d);
      } catch {
        real = undefined;
      }
      realDirs.set(d, real);
    }
    return realDirs.get(d);
  };
  for (const key of packages) {
    for (const listed of packageFiles(dir, index, key)) {
      // As the file is found on this host: /lib/x86_64-linux-gnu/libc.so.6 is under /usr/lib on a merged-/usr system.
      const parent = realDir(path.dirname(listed));
      if (!parent) continue;
      const file = path.join(parent, path.basename(listed));
      if (DOCUMENTATION.test(file) || !SYSTEM_DIRS.some((d) => file.startsWith(`${d}/`))) continue;
      for (let p = file; p !== "/" && !shown.has(p); p = path.dirname(p)) shown.add(p);
    }
  }

  const roots: { root: string; entries: ViewEntry[] }[] = [];
  for (const root of SYSTEM_DIRS) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(root);
    } catch {
      continue;
    }
    if (!st.isDirectory()) continue;
    const { entries } = walk(root, shown);
    roots.push({ root, entries });
  }
  const key = crypto.createHash("sha256").update(JSON.stringify(roots)).digest("hex").slice(0, 32);
  return { key, roots, packages: packages.size };
}

/** The entries of `dir` that are shown; whole: every entry of it is (then it is bound as one). */
function walk(dir: string, shown: ReadonlySet<string>): { whole: boolean; entries: ViewEntry[] } {
  const entries: ViewEntry[] = [];
  let whole = true;
  let dirents: fs.Dirent[];
  try {
    dirents = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return { whole: false, entries };
  }
  dirents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of dirents) {
    const p = `${dir}/${e.name}`;
    if (!shown.has(p)) {
      whole = false;
      continue;
    }
    if (e.isSymbolicLink()) entries.push({ kind: "symlink", path: p, target: fs.readlinkSync(p) });
    else if (e.isDirectory()) {
      const sub = walk(p, shown);
      if (sub.whole) entries.push({ kind: "bind", path: p });
      else {
        whole = false;
        entries.push({ kind: "dir", path: p }, ...sub.entries);
      }
    } else if (e.isFile()) entries.push({ kind: "bind", path: p });
    else whole = false;
  }
  return { whole, entries };
}
