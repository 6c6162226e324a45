/**
 * The Debian packages behind host programs, and the packages those need:
 * their versions join `hostTools`' hash. A program's own bytes do not say
 * everything it runs with: gcc's driver runs cc1 (another package), includes
 * libc6-dev's headers and links with its crt files. Upgrading any of them
 * changes the versions here, so every hash downstream changes, as it does
 * when the program itself changes.
 *
 * Where a program is not a package's (no dpkg on the host, /usr/local), its
 * bytes are all the hash covers, as before.
 *
 * Finding which package owns a file means reading every
 * /var/lib/dpkg/info/*.list (dpkg -S does the same): ~150 ms here. The index
 * of programs it gives, and the package table, are kept in the user's cache
 * folder, keyed by the dpkg database's stamp, so that happens once per
 * change of the installed packages.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { recordDependency, recordEnvDependency } from "./eval-deps.js";

/** dpkg's database: /var/lib/dpkg, or where DPKG_ADMINDIR says, as for dpkg itself (a chroot's, say). */
function admindir(): string {
  recordEnvDependency("DPKG_ADMINDIR");
  return process.env.DPKG_ADMINDIR || "/var/lib/dpkg";
}
/** Folders whose files are programs: only their entries of the .list files are indexed. */
const PROGRAM_DIRS = /^\/(usr\/)?(local\/)?s?bin\//;

interface Package {
  readonly version: string;
  readonly arch: string;
  /** Depends and Pre-Depends: groups of alternatives, names without versions. */
  readonly needs: readonly (readonly string[])[];
  /** Recommends, in the same form: followed from a tool's own package only (gcc-12 recommends libc6-dev, the headers it compiles with). */
  readonly recommends: readonly (readonly string[])[];
}

interface Index {
  readonly key: string;
  /** Program path (as dpkg lists it) → owning package name. */
  readonly owners: Record<string, string>;
  readonly packages: Record<string, Package>;
  /** Virtual package → the installed packages that provide it. */
  readonly provides: Record<string, string[]>;
}

let loaded: Index | undefined;

/**
 * The packages that own `files` (each given as every path it was reached by:
 * the link on PATH and the file it resolves to), with everything they
 * depend on (and what they recommend themselves), as sorted `name:arch=version` entries; undefined
 * when the host has no dpkg database or owns none of them.
 */
export function packagesOf(files: readonly (readonly string[])[]): string[] | undefined {
  const dir = admindir();
  const index = loadIndex(dir);
  if (!index) return undefined;
  // An upgrade changes the database: the evaluation is then done again.
  recordDependency(path.join(dir, "status"));
  const owners = new Set<string>();
  for (const names of files) {
    for (const name of names.flatMap(mergedUsrAliases)) {
      const owner = index.owners[name];
      if (owner) {
        owners.add(owner);
        break;
      }
    }
  }
  if (owners.size === 0) return undefined;
  const closure = new Set<string>();
  // The first alternative installed (or provided) is the one in use.
  const chosen = (group: readonly string[]) => group.map((alt) => (index.packages[alt] ? alt : index.provides[alt]?.[0])).find((x) => x !== undefined);
  const visit = (name: string) => {
    if (closure.has(name) || !index.packages[name]) return;
    closure.add(name);
    for (const group of index.packages[name]!.needs) {
      const next = chosen(group);
      if (next) visit(next);
    }
  };
  // Recommends one level deep: what a tool works with (a compiler's headers), not what those
  // recommend in turn (libc6-dev's man pages, fonts, image libraries).
  for (const owner of owners) {
    visit(owner);
    for (const group of index.packages[owner]?.recommends ?? []) {
      const next = chosen(group);
      if (next) visit(next);
    }
  }
  return [...closure].map((name) => `${name}:${index.packages[name]!.arch}=${index.packages[name]!.version}`).sort();
}

/** /bin/x and /usr/bin/x are one file on a merged-/usr system, and dpkg lists either. */
function mergedUsrAliases(file: string): string[] {
  const m = /^\/(usr\/)?((s?bin|lib\w*)\/.*)$/.exec(file);
  if (!m) return [file];
  return [file, m[1] ? `/${m[2]}` : `/usr/${m[2]}`];
}

function loadIndex(dir: string): Index | undefined {
  let key: string;
  try {
    const status = fs.statSync(path.join(dir, "status"));
    const info = fs.statSync(path.join(dir, "info"));
    key = `${dir}:${status.ino}:${status.size}:${status.mtimeMs}:${status.ctimeMs}:${info.mtimeMs}:${info.ctimeMs}`;
  } catch {
    return undefined;
  }
  if (loaded?.key === key) return loaded;
  const cacheFile = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "ukb", "dpkg-index-2.json");
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, "utf8")) as Index;
    if (cached.key === key) return (loaded = cached);
  } catch {
    // none yet, or unreadable: made again
  }
  loaded = buildIndex(dir, key);
  try {
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(loaded));
    fs.renameSync(tmp, cacheFile);
  } catch {
    // A cache folder we may not write: the index is made on each evaluation.
  }
  return loaded;
}

function buildIndex(dir: string, key: string): Index {
  const info = path.join(dir, "info");
  const packages: Record<string, Package> = {};
  const provides: Record<string, string[]> = {};
  for (const paragraph of fs.readFileSync(path.join(dir, "status"), "utf8").split(/\n\n+/)) {
    const fields = parseParagraph(paragraph);
    const name = fields.Package;
    if (!name || !/ installed$/.test(fields.Status ?? "") || !fields.Version) continue;
    const needs = ["Pre-Depends", "Depends"].flatMap((f) => parseRelations(fields[f]));
    packages[name] = { version: fields.Version, arch: fields.Architecture ?? "all", needs, recommends: parseRelations(fields.Recommends) };
    for (const [virtual] of parseRelations(fields.Provides)) if (virtual) (provides[virtual] ??= []).push(name);
  }
  for (const list of Object.values(provides)) list.sort();
  const owners: Record<string, string> = {};
  for (const entry of fs.readdirSync(info)) {
    if (!entry.endsWith(".list")) continue;
    // `name.list`, or `name:arch.list` for a package of several architectures.
    const name = entry.slice(0, -".list".length).replace(/:.*$/, "");
    let text: string;
    try {
      text = fs.readFileSync(path.join(info, entry), "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) if (PROGRAM_DIRS.test(line)) owners[line] ??= name;
  }
  return { key, owners, packages, provides };
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
