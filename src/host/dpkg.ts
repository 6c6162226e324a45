/**
 * dpkg's database, read: which installed package owns a program, what each
 * package depends on, and which files a package installed. `hostTools`
 * hashes the versions of what its programs run with (src/recipe/host-packages.ts);
 * the sandbox shows a build only those packages' files (src/build/host-view.ts).
 *
 * Finding which package owns a file means reading every
 * /var/lib/dpkg/info/*.list (dpkg -S does the same): ~150 ms here. The index
 * of programs it gives, and the package table, are kept in the user's cache
 * folder, keyed by the database's stamp, so that happens once per change of
 * the installed packages.
 */
import fs from "node:fs";
import path from "node:path";
import { userCacheFile, writeCacheFile } from "./system.js";

/** dpkg's database: /var/lib/dpkg, or where DPKG_ADMINDIR says, as for dpkg itself (a chroot's, say). */
export function dpkgAdmindir(): string {
  return process.env.DPKG_ADMINDIR || "/var/lib/dpkg";
}

/** Folders whose files are programs: only their entries of the .list files are indexed. */
const PROGRAM_DIRS = /^\/(usr\/)?(local\/)?s?bin\//;

export interface Package {
  readonly name: string;
  readonly version: string;
  readonly arch: string;
  /** Essential: yes (dpkg, tar, coreutils…): on every Debian system, and depended on for install scripts. */
  readonly essential: boolean;
  /** Depends and Pre-Depends: groups of alternatives, names without versions. */
  readonly needs: readonly (readonly string[])[];
  /** Recommends, in the same form: followed from a tool's own package only (gcc-12 recommends libc6-dev, the headers it compiles with). */
  readonly recommends: readonly (readonly string[])[];
}

/** Maps without a prototype: a package may be named `constructor`. */
type Table<T> = Record<string, T>;
const table = <T>(): Table<T> => Object.create(null) as Table<T>;

export interface Index {
  readonly key: string;
  /** Program path (as dpkg lists it) → the `name:arch` of the package that owns it. */
  readonly owners: Table<string>;
  /** `name:arch` → package (a library of two architectures is two packages). */
  readonly packages: Table<Package>;
  /** Name → the `name:arch` of its installed packages; a virtual name → those that provide it. */
  readonly byName: Table<string[]>;
  readonly provides: Table<string[]>;
  /** The system's own architecture (dpkg's). */
  readonly native: string;
  /**
   * dpkg-divert's table: a path another package's file was moved from → where
   * it lies now and the package that moved it (":" for the administrator).
   * postgresql-common puts its wrapper at /usr/bin/pg_config and libpq-dev's
   * file at /usr/bin/pg_config.libpq-dev, though both lists say pg_config.
   */
  readonly diversions: Table<{ readonly to: string; readonly by: string }>;
}

/** Where a file a package's list names really lies: elsewhere if another package (or the administrator) diverted it. */
function placed(index: Index, packageName: string, listed: string): string {
  const diversion = index.diversions[listed];
  return diversion && diversion.by !== packageName ? diversion.to : listed;
}

function readDiversions(dir: string): Table<{ to: string; by: string }> {
  const diversions = table<{ to: string; by: string }>();
  let lines: string[];
  try {
    lines = fs.readFileSync(path.join(dir, "diversions"), "utf8").split("\n");
  } catch {
    return diversions;
  }
  for (let i = 0; i + 2 < lines.length; i += 3) diversions[lines[i]!] = { to: lines[i + 1]!, by: lines[i + 2]! };
  return diversions;
}

/**
 * The index last loaded, and the outside-bin owners found, shared by every
 * copy of this module in the process: the CLI's bundle reads the index for
 * the host view, the recipe API's for hostTools, and each would parse the
 * same 200 KB of JSON again.
 */
const shared = ((globalThis as Record<symbol, unknown>)[Symbol.for("ukb.dpkg.1")] ??= {}) as { loaded?: Index; listed?: ListedPaths };

/** /bin/x and /usr/bin/x are one file on a merged-/usr system, and dpkg lists either. */
function mergedUsrAliases(file: string): string[] {
  const m = /^\/(usr\/)?((s?bin|lib\w*)\/.*)$/.exec(file);
  if (!m) return [file];
  return [file, m[1] ? `/${m[2]}` : `/usr/${m[2]}`];
}

/** One cache file per database (a chroot's is another), named by its folder; the key inside decides whether it holds. */
function databaseCacheFile(dir: string, stem: string): string {
  return userCacheFile(dir === "/var/lib/dpkg" ? `${stem}.json` : `${stem}${dir.replace(/[^A-Za-z0-9.-]+/g, "_").slice(-150)}.json`);
}

export function loadIndex(dir: string): Index | undefined {
  let key: string;
  try {
    const status = fs.statSync(path.join(dir, "status"));
    const info = fs.statSync(path.join(dir, "info"));
    let diverted = "none";
    try {
      const d = fs.statSync(path.join(dir, "diversions"));
      diverted = `${d.ino}:${d.size}:${d.mtimeMs}:${d.ctimeMs}`;
    } catch {
      // no diversions file: none
    }
    key = `${dir}:${status.ino}:${status.size}:${status.mtimeMs}:${status.ctimeMs}:${info.mtimeMs}:${info.ctimeMs}:${diverted}`;
  } catch {
    return undefined;
  }
  if (shared.loaded?.key === key) return shared.loaded;
  const cacheFile = databaseCacheFile(dir, "dpkg-index-4");
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, "utf8")) as Index;
    // Read back into tables without prototypes (JSON.parse makes plain objects).
    const tables = (o: object) => Object.assign(Object.create(null) as object, o);
    if (cached.key === key) return (shared.loaded = { ...cached, owners: tables(cached.owners), packages: tables(cached.packages), byName: tables(cached.byName), provides: tables(cached.provides), diversions: tables(cached.diversions) } as Index);
  } catch {
    // none yet, or unreadable: made again
  }
  const built = buildIndex(dir, key);
  writeCacheFile(cacheFile, built);
  return (shared.loaded = built);
}

function buildIndex(dir: string, key: string): Index {
  const info = path.join(dir, "info");
  const packages = table<Package>();
  const byName = table<string[]>();
  const provides = table<string[]>();
  for (const paragraph of fs.readFileSync(path.join(dir, "status"), "utf8").split(/\n\n+/)) {
    const fields = parseParagraph(paragraph);
    const name = fields.Package;
    if (!name || !/ installed$/.test(fields.Status ?? "") || !fields.Version) continue;
    const arch = fields.Architecture ?? "all";
    const pkgKey = `${name}:${arch}`;
    const needs = ["Pre-Depends", "Depends"].flatMap((f) => parseRelations(fields[f]));
    packages[pkgKey] = { name, version: fields.Version, arch, essential: fields.Essential === "yes", needs, recommends: parseRelations(fields.Recommends) };
    (byName[name] ??= []).push(pkgKey);
    for (const [virtual] of parseRelations(fields.Provides)) if (virtual) (provides[virtual] ??= []).push(pkgKey);
  }
  for (const list of [...Object.values(byName), ...Object.values(provides)]) list.sort();
  const native = byName.dpkg?.[0]?.replace(/^dpkg:/, "") ?? "all";
  const owners = table<string>();
  const diversions = readDiversions(dir);
  for (const entry of fs.readdirSync(info)) {
    if (!entry.endsWith(".list")) continue;
    // `name.list` (one architecture: the one installed, or the system's), or `name:arch.list`.
    const stem = entry.slice(0, -".list".length);
    const keys = byName[stem.replace(/:.*$/, "")] ?? [];
    const owner = stem.includes(":") ? stem : (keys.find((k) => k.endsWith(`:${native}`)) ?? keys[0]);
    if (!owner) continue;
    let text: string;
    try {
      text = fs.readFileSync(path.join(info, entry), "utf8");
    } catch {
      continue;
    }
    const name = stem.replace(/:.*$/, "");
    for (const line of text.split("\n")) {
      if (!PROGRAM_DIRS.test(line)) continue;
      const diversion = diversions[line];
      // A diverted path is the diverting package's; the file another package listed there lies where it was moved.
      if (diversion && diversion.by !== name) owners[diversion.to] ??= owner;
      else if (diversion) owners[line] = owner;
      else owners[line] ??= owner;
    }
  }
  return { key, owners, packages, byName, provides, native, diversions };
}

/** A control paragraph's fields; continuation lines join their field. */
function parseParagraph(paragraph: string): Record<string, string> {
  const fields: Record<string, string> = {};
  let last: string | undefined;
  for (const line of paragraph.split("\n")) {
    if (/^\s/.test(line)) {
      if (last) fields[last] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    last = line.slice(0, colon);
    fields[last] = line.slice(colon + 1).trim();
  }
  return fields;
}

/** `a (>= 1), b:any | c` → [["a"], ["b", "c"]]: names only (what is installed satisfied dpkg). */
function parseRelations(value: string | undefined): string[][] {
  if (!value) return [];
  return value
    .split(",")
    .map((group) =>
      group
        .split("|")
        .map((alt) => alt.trim().split(/[\s(:[<]/)[0]!)
        .filter((alt) => alt.length > 0),
    )
    .filter((group) => group.length > 0);
}

/**
 * The `name:arch` of the packages that own any path of `paths` (a program's
 * link on PATH, each link on the way, the file it resolves to: /usr/bin/gcc
 * is gcc's, the file it leads to gcc-12's; /usr/bin/python3 is
 * python3-minimal's, python3.11 python3.11-minimal's). A path outside the
 * bin folders the index covers (java is /usr/lib/jvm/…/bin/java) is looked
 * for in every package's file list, as `dpkg -S` does.
 */
export function ownersOf(dir: string, index: Index, paths: readonly string[]): Set<string> {
  const owners = new Set<string>();
  const missed: string[] = [];
  for (const name of paths.flatMap(mergedUsrAliases)) {
    const owner = index.owners[name];
    if (owner !== undefined && index.packages[owner]) owners.add(owner);
    // update-alternatives' links (cc, awk, java on the way to their programs) are in no package's list.
    else if (!PROGRAM_DIRS.test(name) && !name.startsWith("/etc/alternatives/")) missed.push(name);
  }
  if (missed.length > 0) for (const owner of ownersFromLists(dir, index, missed).values()) owners.add(owner);
  return owners;
}

/**
 * Paths outside the bin folders, with the package whose list has each (null:
 * none), for one state of the database. Finding one reads every list
 * (~0.15 s here), so what was found is kept in the user's cache folder too:
 * an evaluation in a new process does not read them all again.
 */
interface ListedPaths {
  key: string;
  owners: Record<string, string | null>;
}

function listedFor(dir: string, index: Index): { known: ListedPaths; file: string } {
  const file = databaseCacheFile(dir, "dpkg-listed-1");
  let listed = shared.listed;
  if (listed?.key !== index.key) {
    listed = shared.listed = { key: index.key, owners: Object.create(null) as Record<string, string | null> };
    try {
      const cached = JSON.parse(fs.readFileSync(file, "utf8")) as ListedPaths;
      if (cached.key === index.key) Object.assign(listed.owners, cached.owners);
    } catch {
      // none yet, or unreadable: found again
    }
  }
  return { known: listed, file };
}

function ownersFromLists(dir: string, index: Index, names: readonly string[]): Map<string, string> {
  const { known, file } = listedFor(dir, index);
  const wanted = new Set(names.filter((name) => !(name in known.owners)));
  if (wanted.size > 0) {
    for (const key of Object.keys(index.packages).sort()) {
      for (const listedFile of packageFiles(dir, index, key)) if (wanted.has(listedFile) && !known.owners[listedFile]) known.owners[listedFile] = key;
    }
    for (const name of wanted) if (!(name in known.owners)) known.owners[name] = null;
    writeCacheFile(file, known);
  }
  const found = new Map<string, string>();
  for (const name of names) {
    const owner = known.owners[name];
    if (owner) found.set(name, owner);
  }
  return found;
}

/**
 * The packages `owners` need: themselves, their Depends and Pre-Depends to
 * the end, and what they recommend themselves, one level (gcc-12 recommends
 * libc6-dev, the headers it compiles with; not what libc6-dev recommends in
 * turn: man pages, fonts, image libraries). Essential packages reached as
 * dependencies (dash needs dpkg, which needs tar, for install scripts) are
 * left out unless `essentialDependencies`: they are on every Debian system.
 */
export function packageClosure(index: Index, owners: Iterable<string>, options: { essentialDependencies: boolean }): Set<string> {
  const closure = new Set<string>();
  const chosen = (group: readonly string[], arch: string) => installed(index, group, arch);
  const visit = (key: string, isOwner: boolean) => {
    const pkg = index.packages[key];
    if (!pkg || closure.has(key) || (pkg.essential && !isOwner && !options.essentialDependencies)) return;
    closure.add(key);
    for (const group of pkg.needs) {
      const next = chosen(group, pkg.arch);
      if (next) visit(next, false);
    }
  };
  for (const owner of owners) {
    visit(owner, true);
    const pkg = index.packages[owner];
    for (const group of pkg?.recommends ?? []) {
      const next = chosen(group, pkg!.arch);
      if (next) visit(next, false);
    }
  }
  return closure;
}

/**
 * The installed package (`name:arch`) a group of alternatives names: the
 * first alternative installed or provided is the one in use; of a name
 * installed for several architectures, the one in `arch` (of the package
 * that needs it), else an arch-independent one, else the system's.
 */
export function installed(index: Index, alternatives: readonly string[], arch: string): string | undefined {
  for (const alt of alternatives) {
    const keys = index.byName[alt] ?? index.provides[alt];
    if (!keys) continue;
    return keys.find((k) => k === `${alt}:${arch}`) ?? keys.find((k) => k.endsWith(":all")) ?? keys.find((k) => k.endsWith(`:${index.native}`)) ?? keys[0];
  }
  return undefined;
}

/** The paths a package installed, as its `info/*.list` gives them (directories too); empty if the list is gone. */
export function packageFiles(dir: string, index: Index, key: string): string[] {
  const pkg = index.packages[key];
  if (!pkg) return [];
  // `name:arch.list` for a package of several architectures (Multi-Arch: same), else `name.list`.
  for (const list of [`${pkg.name}:${pkg.arch}.list`, `${pkg.name}.list`]) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, "info", list), "utf8");
    } catch {
      continue;
    }
    return text
      .split("\n")
      .filter((line) => line.startsWith("/") && line !== "/.")
      .map((line) => placed(index, pkg.name, line));
  }
  return [];
}

/** The installed Essential packages (coreutils, bash, perl-base, libc-bin…): every Debian system has them, and packages need not say they use them. */
export function essentialPackages(index: Index): string[] {
  return Object.keys(index.packages).filter((key) => index.packages[key]!.essential).sort();
}
