/**
 * `hostTools`: the one door from a build to the host.
 *
 * Builds see no PATH and none of the host but its read-only system
 * directories. A recipe names the host programs it needs; ukb resolves each on
 * the host's PATH and hashes the file it resolves to, so upgrading gcc changes
 * the hash of every derivation downstream. The output is a `bin/` of symlinks
 * to the programs' host paths, which the sandbox shows read-only.
 */
import fs from "node:fs";
import path from "node:path";
import { RecipeError } from "../errors/index.js";
import { blake3Hex, type HostTool } from "../graph/index.js";
import { callerLocation } from "./location.js";
import { checkName, makeDerivation, type Derivation } from "./derivation.js";
import { recordDependency, recordEnvDependency } from "./eval-deps.js";
import { packagesOf } from "./host-packages.js";
import { inSystemDirs, SYSTEM_DIRS } from "../host/index.js";

const digestCache = new Map<string, { key: string; blake3: string }>();

function fileDigest(file: string): string {
  const st = fs.statSync(file);
  const key = `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;
  const cached = digestCache.get(file);
  if (cached?.key === key) return cached.blake3;
  const blake3 = blake3Hex(fs.readFileSync(file));
  digestCache.set(file, { key, blake3 });
  return blake3;
}

function findOnPath(program: string, searchPath: string): string | undefined {
  if (program.includes("/")) return fs.existsSync(program) ? program : undefined;
  for (const dir of searchPath.split(":")) {
    if (!dir) continue;
    // A program of that name put in a folder searched earlier would be found instead: its path
    // there is recorded (as missing, mostly). Not the folder's listing: any program installed
    // there, or pyenv's lock file in its shims, would make every recipe evaluate again.
    const candidate = path.join(dir, program);
    recordDependency(candidate);
    try {
      const st = fs.statSync(candidate);
      if (st.isFile() && (st.mode & 0o111) !== 0) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** Options of {@link hostTools}. */
export interface HostToolsOptions {
  /** Name of the derivation; default `host-tools`. */
  name?: string;
  /** The PATH to search; default the host's `PATH`. */
  path?: string;
  /**
   * Debian packages the build uses without running a program of theirs:
   * headers and libraries (`"zlib1g-dev"`), a language's library (`"perl"`,
   * whose modules perl-base lacks), or a virtual name one provides
   * (`"libz-dev"`), as in a Build-Depends line. Hashed, with what they depend on, and
   * shown to the build like the programs' packages; nothing else of the
   * host's /usr is.
   */
  packages?: readonly string[];
}

/**
 * Declares host programs a build may use, e.g. `hostTools(["sh", "make", "gcc"])`.
 * Its output's `bin/` holds them; its hash covers each program's contents.
 * A name may be `alias=program` (`"cc=gcc-12"`) to expose a program under another name.
 */
export function hostTools(programs: readonly string[], options: HostToolsOptions = {}): Derivation {
  const name = checkName(options.name ?? "host-tools", "hostTools");
  const named = options.packages ?? [];
  if (!Array.isArray(named) || named.some((p) => typeof p !== "string" || !/^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$/.test(p)))
    throw new RecipeError("hostTools(): packages must be a list of Debian package names (zlib1g-dev, perl, libssl-dev:amd64)", callerLocation());
  if (!Array.isArray(programs) || (programs.length === 0 && named.length === 0)) throw new RecipeError("hostTools() needs a non-empty list of program names (or of packages)", callerLocation());
  if (options.path === undefined) recordEnvDependency("PATH");
  const searchPath = options.path ?? process.env.PATH ?? "/usr/bin:/bin";
  const tools: HostTool[] = [];
  // Every path a program was reached by: the packages of any of them are what it runs with.
  const reachedBy: string[] = [];
  const seen = new Set<string>();
  for (const entry of programs) {
    if (typeof entry !== "string" || entry === "") throw new RecipeError("hostTools(): every program must be a non-empty string", callerLocation());
    const [alias, program] = entry.includes("=") ? (entry.split("=", 2) as [string, string]) : [path.basename(entry), entry];
    checkName(alias, "hostTools: a program");
    if (seen.has(alias)) continue;
    seen.add(alias);
    const found = findOnPath(program, searchPath);
    if (!found) throw new RecipeError(`hostTools: '${program}' is not on the host's PATH`, callerLocation());
    const real = fs.realpathSync(found);
    if (!inSystemDirs(found) || !inSystemDirs(real)) {
      const outside = inSystemDirs(found) ? real : found;
      throw new RecipeError(`hostTools: '${program}' is ${outside}${outside === real ? "" : ` (${real})`}, outside the system directories builds can see (${SYSTEM_DIRS.join(" ")})`, callerLocation());
    }
    // Each link on the way (sh -> dash, awk -> /etc/alternatives/awk -> mawk): repointing one is another tool.
    const chain: string[] = [];
    for (let p = found, hops = 0; hops < 40; hops++) {
      recordDependency(p);
      chain.push(p);
      if (!fs.lstatSync(p).isSymbolicLink()) break;
      p = path.resolve(path.dirname(p), fs.readlinkSync(p));
    }
    recordDependency(real);
    // dpkg lists /usr/bin/gcc under gcc and the file it leads to, x86_64-linux-gnu-gcc-12, under gcc-12.
    reachedBy.push(real, ...chain);
    // Link to the real file: a chain through /etc/alternatives (awk, cc, yacc on
    // Debian) would dangle in the sandbox, which shows no /etc.
    tools.push({ name: alias, path: real, blake3: fileDigest(real) });
  }
  tools.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const packages = packagesOf(reachedBy, [...named].sort());
  return makeDerivation({
    kind: "host-tools",
    name,
    builder: "builtin:host-tools",
    args: [],
    env: {},
    outputNames: ["out"],
    hostTools: tools,
    ...(packages ? { hostPackages: packages } : {}),
  });
}
