/**
 * Sources from Debian's archive, through apt itself.
 *
 * Debian's source packages carry upstream tarballs byte for byte
 * (`<pkg>_<upstream version>.orig.tar.gz`), so on a machine that reaches only
 * Debian's mirrors, `apt-get source` is a faithful substitute for the upstream
 * URL — the sha256 a recipe pins is the upstream one either way. Going
 * through apt (not our own HTTP client) keeps apt's proxy, auth and signed
 * index checks. The result is hash-checked like any download.
 */
import { spawn } from "node:child_process";
import { mkdtemp, open, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { UkbError } from "../errors/index.js";
import { checkDigests, describeExpected, hashFile, normaliseExpected, type ExpectedHashes, type FileDigests } from "./digest.js";
import { fsyncDir } from "./download.js";
import { downloadLimiter, type Limiter } from "./limiter.js";

/** The commands that turn on deb-src on a Debian 12+ machine (deb822 sources). */
export const ENABLE_DEB_SRC = "sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources && apt-get update";

interface AptCommon {
  /** Where the file lands (renamed from a scratch dir beside it). */
  dest: string;
  expect?: ExpectedHashes;
  offline?: boolean;
  signal?: AbortSignal;
  /** Extra apt-get arguments, e.g. `-o Dir::Etc::SourceList=…` for a private apt configuration. */
  aptArgs?: readonly string[];
  /** The apt-get to run; default `apt-get` from PATH. */
  aptGet?: string;
  limiter?: Limiter;
}

export interface DebianSourceOptions extends AptCommon {
  /** Source (or binary) package name, e.g. `musl`. */
  package: string;
  /** The file to keep from the source package, e.g. `musl_1.2.3.orig.tar.gz`. */
  file: string;
  /** Debian version (`1.2.3-1`); default: the one apt's index has now. */
  version?: string;
}

export interface DebianPackageOptions extends AptCommon {
  package: string;
  version: string;
  /** Architecture, e.g. `amd64`; default apt's native one. */
  arch?: string;
}

export interface DebianFetchResult extends FileDigests {
  /** The file name apt gave it, e.g. `musl_1.2.3.orig.tar.gz` or `hello_2.10-3_amd64.deb`. */
  file: string;
}

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const VERSION_RE = /^[A-Za-z0-9.+~:-]+$/;
const ARCH_RE = /^[a-z0-9-]+$/;

function checkArg(what: string, value: string, re: RegExp): void {
  if (!re.test(value)) throw new UkbError("recipe", `invalid Debian ${what} '${value}'`);
}

function checkFileName(file: string): void {
  if (file === "" || file === "." || file === ".." || file.includes("/") || file.includes("\0")) {
    throw new UkbError("recipe", `invalid file name '${file}' for a Debian source package: expected a bare name such as musl_1.2.3.orig.tar.gz`);
  }
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs apt-get with a C locale (so its messages can be recognised), keeping the last 64 KiB of output. */
function runApt(aptGet: string, args: readonly string[], cwd: string, signal?: AbortSignal): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(aptGet, args, {
      cwd,
      env: { ...process.env, LC_ALL: "C", LANG: "C", DEBIAN_FRONTEND: "noninteractive" },
      stdio: ["ignore", "pipe", "pipe"],
      ...(signal ? { signal } : {}),
    });
    let stdout = "";
    let stderr = "";
    const keep = (s: string): string => (s.length > 65536 ? s.slice(-65536) : s);
    child.stdout.on("data", (c: Buffer) => (stdout = keep(stdout + c.toString())));
    child.stderr.on("data", (c: Buffer) => (stderr = keep(stderr + c.toString())));
    child.on("error", (e) => {
      if (signal?.aborted) reject(signal.reason);
      else reject(e);
    });
    child.on("close", (code) => {
      if (signal?.aborted) reject(signal.reason);
      else resolve({ code, stdout, stderr });
    });
  });
}

/** apt's `E:` lines, the part of its output that says what went wrong. */
function aptErrors(stderr: string): string[] {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("E: "))
    .map((l) => l.slice(3).trim());
}

/** One line of `apt-get source --print-uris`: what apt would fetch, with the size and hash from the signed index. */
export interface AptUri {
  uri: string;
  name: string;
  size: number;
  /** Lowercase hex, when apt gives a SHA256 (it does for every current archive). */
  sha256?: string;
}

/** Parses `'URI' NAME SIZE HASHTYPE:HEX` lines; other lines (notices) are skipped. */
export function parsePrintUris(stdout: string): AptUri[] {
  const out: AptUri[] = [];
  for (const line of stdout.split("\n")) {
    const m = /^'([^']+)' (\S+) (\d+) (\S+)\s*$/.exec(line.trim());
    if (!m) continue;
    const [, uri, name, size, hash] = m as unknown as [string, string, string, string, string];
    const sha = /^SHA256:([0-9a-fA-F]{64})$/.exec(hash);
    out.push({ uri, name, size: Number(size), ...(sha ? { sha256: sha[1]!.toLowerCase() } : {}) });
  }
  return out;
}

/** Translates a failed apt-get run into an error that says what to do. */
function aptFailure(what: string, command: string, pkg: string, run: RunResult): UkbError {
  const errors = aptErrors(run.stderr);
  const all = errors.join(" ");
  if (/must put some 'deb-src' URIs/.test(all)) {
    return new UkbError("fetch", `${what}: apt has no deb-src sources, so Debian source packages cannot be fetched`, { hint: ENABLE_DEB_SRC });
  }
  if (/Can not find version|Version '.*' for '.*' was not found|Can't find a source to download version/.test(all)) {
    return new UkbError("fetch", `${what}: ${errors.find((e) => /version/i.test(e)) ?? errors[0]}`, { hint: `\`apt-cache ${command === "source" ? "showsrc" : "policy"} ${pkg}\` lists the versions apt knows` });
  }
  if (/Unable to find a source package for/.test(all)) {
    return new UkbError("fetch", `${what}: apt knows no source package '${pkg}'`, {
      hint: `check the name with \`apt-cache showsrc ${pkg}\`; if deb-src was just enabled, run \`apt-get update\` (${ENABLE_DEB_SRC})`,
    });
  }
  if (/Unable to locate package/.test(all)) {
    return new UkbError("fetch", `${what}: apt knows no package '${pkg}'`, { hint: `check the name with \`apt-cache policy ${pkg}\`, or run \`apt-get update\`` });
  }
  const detail = errors.length > 0 ? errors.join("; ") : run.stderr.trim().split("\n").slice(-2).join("; ") || "no output";
  return new UkbError("fetch", `${what}: apt-get ${command} failed (exit ${run.code}): ${detail}`, {
    hint: "fetch the file another way and run `ukb store add FILE`",
  });
}

/** What apt should produce: a file name, and what the signed index says about it. */
interface Wanted {
  name: string;
  index?: AptUri;
}

/**
 * Runs apt-get in a scratch dir beside dest, then verifies and moves the
 * wanted file. apt fails a whole `source` download when any one of its files
 * is gone from the mirror (seen here: a superseded security .dsc 404s while
 * the .orig.tar.gz, shared by every revision, is there); so a failed run
 * still counts when the wanted file arrived whole — its size and sha256
 * checked against the index. The scratch dir is always removed.
 */
async function aptFetch(
  o: AptCommon,
  what: string,
  args: string[],
  pkg: string,
  choose: (files: string[]) => Wanted | UkbError,
): Promise<DebianFetchResult> {
  const expect = normaliseExpected(o.expect);
  const command = args[0] as "source" | "download";
  if (o.offline) {
    throw new UkbError("fetch", `offline: ${what} needs apt-get ${command} ${args[args.length - 1]} (${describeExpected(expect)})`, {
      hint: "download it on a connected machine and run `ukb store add FILE`, or run without --offline",
    });
  }
  const limiter = o.limiter ?? downloadLimiter;
  const scratch = await mkdtemp(join(dirname(o.dest), `.${basename(o.dest)}.apt-`));
  try {
    const run = await limiter
      .run(() => runApt(o.aptGet ?? "apt-get", [...args.slice(0, -1), "-q", ...(o.aptArgs ?? []), args[args.length - 1]!], scratch, o.signal), o.signal)
      .catch((e: unknown) => {
        throw runError(what, e, o.signal);
      });
    const files = (await readdir(scratch)).sort();
    const wanted = choose(files);
    if (wanted instanceof UkbError) throw run.code !== 0 ? aptFailure(what, command, pkg, run) : wanted;
    const path = join(scratch, wanted.name);
    let digests: FileDigests | undefined;
    if (files.includes(wanted.name)) digests = await hashFile(path, o.signal ? { signal: o.signal } : {});
    const whole = digests !== undefined && (wanted.index === undefined || (digests.size === wanted.index.size && (wanted.index.sha256 === undefined || digests.sha256 === wanted.index.sha256)));
    if (!whole || (run.code !== 0 && wanted.index === undefined)) {
      if (run.code !== 0) throw aptFailure(what, command, pkg, run);
      throw new UkbError("fetch", `${what}: ${wanted.name} is missing or differs from apt's index (size or sha256)`, { hint: "run `apt-get update` and try again" });
    }
    checkDigests(`${what} (${wanted.name})`, expect, digests!, `apt served different bytes: if the recipe's hash is outdated, update it; \`sha256sum\` of the file gives the actual one`);
    // apt does not fsync what it downloads; the store relies on dest being durable.
    const fh = await open(path, "r+");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(path, o.dest);
    await fsyncDir(dirname(o.dest));
    return { file: wanted.name, ...digests! };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

function runError(what: string, e: unknown, signal?: AbortSignal): unknown {
  if (signal?.aborted) return e;
  if ((e as NodeJS.ErrnoException).code === "ENOENT") {
    return new UkbError("fetch", `${what}: apt-get is not available (Debian packages can only be fetched on Debian or Ubuntu)`, {
      hint: "fetch the file another way and run `ukb store add FILE`",
    });
  }
  return new UkbError("fetch", `${what}: cannot run apt-get: ${(e as Error).message}`, { cause: e });
}

/**
 * Obtains `file` from Debian's source package `package` (optionally at
 * `version`) with `apt-get source --download-only`, into `dest`.
 * Needs deb-src sources: see `ENABLE_DEB_SRC`.
 */
export async function fetchDebianSource(o: DebianSourceOptions): Promise<DebianFetchResult> {
  checkArg("package name", o.package, PACKAGE_RE);
  if (o.version !== undefined) checkArg("version", o.version, VERSION_RE);
  checkFileName(o.file);
  const spec = o.version === undefined ? o.package : `${o.package}=${o.version}`;
  const what = `Debian source ${spec}`;
  let index: AptUri[] = [];
  if (!o.offline) {
    // Ask first what the source package holds (no download): a wrong file
    // name fails at once, and the index's size and sha256 vouch for the file.
    const listing = await runApt(o.aptGet ?? "apt-get", ["source", "--print-uris", "-q", ...(o.aptArgs ?? []), spec], dirname(o.dest), o.signal).catch((e: unknown) => {
      throw runError(what, e, o.signal);
    });
    if (listing.code !== 0) throw aptFailure(what, "source", o.package, listing);
    index = parsePrintUris(listing.stdout);
    if (!index.some((u) => u.name === o.file)) {
      throw new UkbError("fetch", `${what}: has no file ${o.file}; it has ${index.map((u) => u.name).join(", ") || "nothing"}`, {
        hint: `set file to one of those (upstream tarballs are named ${o.package}_VERSION.orig.tar.*)`,
      });
    }
  }
  const entry = index.find((u) => u.name === o.file);
  return aptFetch(o, what, ["source", "--download-only", spec], o.package, (files) =>
    files.includes(o.file) || entry ? { name: o.file, ...(entry ? { index: entry } : {}) } : new UkbError("fetch", `${what}: apt did not download ${o.file}`),
  );
}

/** Obtains the binary package `package=version` (a .deb) with `apt-get download`, into `dest`. */
export async function fetchDebianPackage(o: DebianPackageOptions): Promise<DebianFetchResult> {
  checkArg("package name", o.package, PACKAGE_RE);
  checkArg("version", o.version, VERSION_RE);
  if (o.arch !== undefined) checkArg("architecture", o.arch, ARCH_RE);
  const spec = `${o.package}${o.arch ? `:${o.arch}` : ""}=${o.version}`;
  const what = `Debian package ${spec}`;
  return aptFetch(o, what, ["download", spec], o.package, (files) => {
    const debs = files.filter((f) => f.endsWith(".deb"));
    if (debs.length === 1) return { name: debs[0]! };
    return new UkbError("fetch", `${what}: expected one .deb from apt-get download, got ${files.join(", ") || "nothing"}`);
  });
}
