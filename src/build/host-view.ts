/**
 * What a build sees of the host's system directories: only the files of the
 * Debian packages its host tools' hashes cover, and the Essential ones, not
 * all of /usr.
 *
 * Why: a compiler searches /usr/include and /usr/local/include, a configure
 * script probes for zlib.h or perl, a Makefile runs /usr/bin/python3 by
 * path. With all of /usr visible, whatever else the host has installed
 * changes a build's output while no hash changes: the same derivation built
 * on two machines differs, and a binary cache serves the one to the other.
 * Nix shows a build nothing of the host; ukb shows it the `hostPackages` of
 * every `hostTools` derivation in its graph (src/recipe/host-packages.ts:
 * the packages of the programs, of the links to them, and those named by
 * `packages`, with what they depend on and recommend themselves), plus the
 * Essential packages and their dependencies, which no package declares it
 * needs (/bin/sh, bash and perl-base for scripts, libc-bin's locales), as
 * Debian's build chroots (sbuild) have them. Those are shown, not hashed.
 *
 * The view is a tree of mounts over each system directory (a tmpfs, its
 * folders, and read-only binds of the packages' files, placed where
 * dpkg-divert moved them; a folder all of whose entries are the packages'
 * is bound whole). Documentation (man, info, doc, locale) is left out:
 * builds do not read it and it would double the mounts.
 *
 * Where the packages are not known, the build sees the system directories
 * whole, as before: a host without dpkg, a host tool no package owns
 * (/usr/local/bin; its log says so), or UKB_HOST_VIEW=system.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { dpkgAdmindir, essentialPackages, inSystemDirs, loadIndex, ownersOf, packageClosure, packageFiles, SYSTEM_DIRS, userCacheFile, writeCacheFile, type Index } from "../host/index.js";
import { UkbError } from "../errors/index.js";
import type { DrvRecord } from "../graph/index.js";

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
}

/** Left out of every view: what no build reads. */
const DOCUMENTATION = /^\/usr\/share\/(doc|man|info|locale|lintian|bug|doc-base|menu)(\/|$)/;

/** The host tools a build may run, and the packages their hashes cover (`name:arch`). */
export interface HostToolSet {
  readonly programs: readonly string[];
  readonly packages: readonly string[];
}

/**
 * The host tools of every `hostTools` derivation among a build's inputs,
 * theirs, and so on, with the packages each hashed (`hostPackages`). Taken
 * from the derivation graph, never from what is in the store (a substituted
 * input could bring anything), so what a build sees follows from its hash:
 * every package shown, Essential ones aside, is covered by the hash of some
 * derivation it depends on.
 */
export function hostToolsOf(drv: DrvRecord, lookup: (hash: string) => DrvRecord | undefined): HostToolSet {
  return union(Object.keys(drv.inputDrvs).map((input) => toolsBelow(input, lookup)));
}

/** Derivation hash → the host tools it and its inputs lead to (a deep graph asks of the same derivations again and again). */
const toolsByDrv = new Map<string, HostToolSet>();

function toolsBelow(hash: string, lookup: (hash: string) => DrvRecord | undefined): HostToolSet {
  const known = toolsByDrv.get(hash);
  if (known) return known;
  const drv = lookup(hash);
  if (!drv) throw new UkbError("internal", `derivation ${hash} of the graph is unknown: what its build may see of the host cannot be told`);
  const own: HostToolSet = {
    programs: drv.kind === "host-tools" ? (drv.hostTools ?? []).map((t) => t.path) : [],
    packages: drv.kind === "host-tools" ? (drv.hostPackages ?? []).map((p) => p.replace(/=.*$/, "")) : [],
  };
  const tools = union([own, hostToolsOf(drv, lookup)]);
  toolsByDrv.set(hash, tools);
  return tools;
}

function union(sets: readonly HostToolSet[]): HostToolSet {
  return { programs: [...new Set(sets.flatMap((s) => s.programs))].sort(), packages: [...new Set(sets.flatMap((s) => s.packages))].sort() };
}

/** What a build sees of the system directories: `view`, or all of them; `note` says why all, where the user would not guess. */
export interface HostViewChoice {
  readonly view?: HostView;
  readonly note?: string;
}

const views = new Map<string, HostViewChoice>();
/** The tool sets views were asked for in this process, in the order first asked (what the server's next started CLI readies sandboxes for). */
const asked = new Map<string, HostToolSet>();

/** The first `count` tool sets whose views builds in this process asked for (the first builds of a graph ask first). */
export function toolSetsAsked(count: number): HostToolSet[] {
  return [...asked.values()].slice(0, count);
}

/**
 * Forgets the views made in this process: the server's started CLI makes
 * some ahead, and a run must check the folders they were made from as a
 * new process would (a file added since is a change).
 */
export function forgetViews(): void {
  views.clear();
  asked.clear();
}

/** The view of the system directories for a build whose host tools are `tools`. */
export function hostViewFor(tools: HostToolSet): HostViewChoice {
  if (process.env.UKB_HOST_VIEW === "system") return {};
  const dir = dpkgAdmindir();
  const index = loadIndex(dir);
  if (!index) return {};
  const memo = `${index.key}\0${tools.programs.join("\0")}\0\0${tools.packages.join("\0")}`;
  if (!asked.has(memo)) asked.set(memo, tools);
  let choice = views.get(memo);
  if (!choice) {
    const file = userCacheFile("host-views", `${crypto.createHash("sha256").update(memo).digest("hex").slice(0, 32)}.json`);
    choice = readCachedView(file);
    if (!choice) {
      const read: string[] = [];
      choice = makeView(dir, index, tools, read);
      const folders: Record<string, string> = {};
      for (const folder of read) folders[folder] = folderStamp(folder);
      writeCacheFile(file, { version: 1, folders, choice } satisfies CachedView);
    }
    views.set(memo, choice);
  }
  return choice;
}

/**
 * Making a view reads ~70 file lists and a few hundred folders (~50 ms);
 * a new ukb process would do it again for every cold realise. It is kept in
 * the user's cache folder with the stamps of the folders it read: a file
 * added to or removed from one of them (a folder once bound whole may no
 * longer be) makes it again. The dpkg database's stamp is in its name.
 */
interface CachedView {
  readonly version: 1;
  /** Folder → its stamp when the view was made. */
  readonly folders: Readonly<Record<string, string>>;
  readonly choice: HostViewChoice;
}

function folderStamp(folder: string): string {
  try {
    const st = fs.statSync(folder);
    return `${st.ino}:${st.mtimeMs}:${st.ctimeMs}`;
  } catch {
    return "missing";
  }
}

function readCachedView(file: string): HostViewChoice | undefined {
  try {
    const cached = JSON.parse(fs.readFileSync(file, "utf8")) as CachedView;
    if (cached.version !== 1) return undefined;
    for (const [folder, stamp] of Object.entries(cached.folders)) if (folderStamp(folder) !== stamp) return undefined;
    return cached.choice;
  } catch {
    return undefined;
  }
}

/** Makes the view; `read` gets every folder whose listing it depends on. */
function makeView(dir: string, index: Index, tools: HostToolSet, read: string[]): HostViewChoice {
  for (const program of tools.programs) {
    // A program no package owns: what it runs with is unknown, so the build sees everything.
    if (ownersOf(dir, index, [program]).size === 0) return { note: `ukb: this build sees all of the host's system directories: its host tool ${program} belongs to no Debian package` };
  }
  // What the tools' hashes cover, and the Essential packages, which no package declares it
  // needs: /bin/sh, bash and perl for scripts (ldd, shasum), libc-bin's locales, coreutils.
  const packages = packageClosure(index, essentialPackages(index), { essentialDependencies: true });
  for (const key of tools.packages) packages.add(key);

  const shown = new Set<string>();
  const realDirs = new Map<string, string | undefined>();
  const realDir = (d: string) => {
    if (!realDirs.has(d)) {
      let real: string | undefined;
      try {
        real = fs.realpathSync.native(d);
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
      // (dpkg's lists hold absolute, normalised paths: plain string cuts are enough, and cheaper than node:path.)
      const slash = listed.lastIndexOf("/");
      const parent = slash === 0 ? "/" : realDir(listed.slice(0, slash));
      if (!parent) continue;
      const file = `${parent === "/" ? "" : parent}/${listed.slice(slash + 1)}`;
      if (DOCUMENTATION.test(file) || !inSystemDirs(file)) continue;
      for (let p = file; p.length > 1 && !shown.has(p); p = p.slice(0, p.lastIndexOf("/")) || "/") shown.add(p);
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
    const { entries } = walk(root, shown, read);
    roots.push({ root, entries });
  }
  // The database's stamp too: an upgrade during a long realise replaces files, and a pooled
  // sandbox's binds would still show the old ones.
  const key = crypto.createHash("sha256").update(index.key).update(JSON.stringify(roots)).digest("hex").slice(0, 32);
  return { view: { key, roots } };
}

/** The entries of `dir` that are shown; whole: every entry of it is (then it is bound as one). */
function walk(dir: string, shown: ReadonlySet<string>, read: string[]): { whole: boolean; entries: ViewEntry[] } {
  const entries: ViewEntry[] = [];
  let whole = true;
  let dirents: fs.Dirent[];
  read.push(dir);
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
      const sub = walk(p, shown, read);
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
