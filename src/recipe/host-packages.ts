/**
 * The Debian packages behind host programs, and the packages those need:
 * their versions join `hostTools`' hash. A program's own bytes do not say
 * everything it runs with: gcc's driver runs cc1 (another package), includes
 * libc6-dev's headers and links with its crt files. Upgrading any of them
 * changes the versions here, so every hash downstream changes, as it does
 * when the program itself changes.
 *
 * Where a program is not a package's (no dpkg on the host, /usr/local), its
 * bytes are all the hash covers, as before. Reading dpkg's database is
 * src/host's; this module records what the evaluation read of it.
 */
import path from "node:path";
import { dpkgAdmindir, installed, loadIndex, ownersOf, packageClosure } from "../host/index.js";
import { RecipeError } from "../errors/index.js";
import { recordDependency, recordEnvDependency } from "./eval-deps.js";
import { callerLocation } from "./location.js";

/**
 * The packages that own `paths` (every path a program was reached by: the
 * link on PATH, the links on the way, the file it resolves to) and those
 * `named`, with what they depend on (and what they recommend themselves), as
 * sorted `name:arch=version` entries; undefined when the host has no dpkg
 * database or owns none of them.
 * Essential packages reached as dependencies (dash needs dpkg, which needs
 * tar, for its install scripts) are left out: on every Debian system, not
 * what a program runs with, and a tar update must not rebuild everything.
 */
export function packagesOf(paths: readonly string[], named: readonly string[] = []): string[] | undefined {
  recordEnvDependency("DPKG_ADMINDIR");
  const dir = dpkgAdmindir();
  const index = loadIndex(dir);
  if (!index) {
    if (named.length > 0) throw new RecipeError(`hostTools: packages (${named.join(", ")}) need dpkg's database, and this host has none at ${dir}`, callerLocation());
    return undefined;
  }
  // An upgrade changes the database, a diversion (dpkg-divert) which package owns a path: the
  // evaluation is then done again.
  recordDependency(path.join(dir, "status"));
  recordDependency(path.join(dir, "diversions"));
  const owners = ownersOf(dir, index, paths);
  for (const name of named) {
    // `name:arch`, or a name (a virtual one too: libz-dev is zlib1g-dev) taken as dpkg takes a
    // dependency of a package of the system's architecture.
    const key = name.includes(":") ? (index.packages[name] ? name : undefined) : installed(index, [name], index.native);
    if (!key) throw new RecipeError(`hostTools: package '${name}' is not installed on this host`, callerLocation());
    owners.add(key);
  }
  if (owners.size === 0) return undefined;
  const closure = packageClosure(index, owners, { essentialDependencies: false });
  return [...closure].map((key) => `${key}=${index.packages[key]!.version}`).sort();
}
