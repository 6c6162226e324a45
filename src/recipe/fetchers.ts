/**
 * Fixed-output sources: `fetchurl`, `fetchzip`, Debian's archive, local files.
 *
 * A fixed-output derivation is named by the hash of what it must produce, not
 * by where it comes from: any source of the same bytes serves it (an upstream
 * URL, a mirror, Debian's archive, a file added with `ukb store add`), and a
 * changed URL rebuilds nothing downstream.
 */
import fs from "node:fs";
import path from "node:path";
import { RecipeError } from "../errors/index.js";
import type { FixedOutput } from "../graph/index.js";
import { blake3Stream, type Json } from "../graph/index.js";
import { callerLocation } from "./location.js";
import { checkName, makeDerivation, type Derivation } from "./derivation.js";
import { recordDependency } from "./eval-deps.js";

/** A place the bytes of a fetch may come from, besides a plain URL. */
export type Source =
  | { readonly kind: "url"; readonly urls: readonly string[] }
  | { readonly kind: "debian-source"; readonly package: string; readonly file: string; readonly version?: string }
  | { readonly kind: "debian-package"; readonly package: string; readonly version: string; readonly arch?: string };

/** A URL (`https://…`, `mirror://NAME/path`, `file://…`) or a {@link Source}. */
export type SourceLike = string | Source;

/**
 * A file of a Debian source package, fetched with `apt-get source
 * --download-only` (needs `deb-src` in apt's sources). Debian ships many
 * upstream tarballs unchanged as `<package>_<version>.orig.tar.gz`.
 */
export function debianSource(spec: { package: string; file: string; version?: string }): Source {
  if (!spec?.package || !spec.file) throw new RecipeError("debianSource() needs { package, file }", callerLocation());
  return Object.freeze({ kind: "debian-source", package: spec.package, file: spec.file, ...(spec.version ? { version: spec.version } : {}) });
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Accepts `hex`, `algo:hex` or SRI `algo-base64`; returns lowercase hex. */
function parseHash(algo: "sha256" | "blake3", text: unknown, what: string): string {
  if (typeof text !== "string") throw new RecipeError(`${what}: the ${algo} hash must be a string`, callerLocation());
  let t = text.trim();
  if (t.startsWith(`${algo}:`)) t = t.slice(algo.length + 1);
  else if (t.startsWith(`${algo}-`)) t = Buffer.from(t.slice(algo.length + 1), "base64").toString("hex");
  t = t.toLowerCase();
  if (!HEX64.test(t)) throw new RecipeError(`${what}: '${text}' is not a ${algo} hash (64 hex digits, '${algo}:HEX' or SRI '${algo}-BASE64')`, callerLocation());
  return t;
}

function toSources(spec: { url?: SourceLike; urls?: readonly SourceLike[] }, what: string): Source[] {
  const list = [...(spec.url !== undefined ? [spec.url] : []), ...(spec.urls ?? [])];
  if (list.length === 0) throw new RecipeError(`${what} needs url or urls`, callerLocation());
  return list.map((s) => {
    if (typeof s === "string") {
      if (!/^(https?|mirror|file):\/\//.test(s)) throw new RecipeError(`${what}: '${s}' is not an http(s)://, mirror:// or file:// URL`, callerLocation());
      return { kind: "url", urls: [s] };
    }
    if (typeof s === "object" && s && (s.kind === "url" || s.kind === "debian-source" || s.kind === "debian-package")) return s;
    throw new RecipeError(`${what}: a source must be a URL string or debianSource(...)`, callerLocation());
  });
}

function defaultName(sources: Source[], what: string): string {
  for (const s of sources) {
    const base = s.kind === "url" ? decodeURIComponent(s.urls[0]!.split(/[?#]/)[0]!.split("/").pop() ?? "") : s.kind === "debian-source" ? s.file : `${s.package}_${s.version}.deb`;
    const cleaned = base.replace(/[^A-Za-z0-9+._?=-]/g, "_").replace(/^\.+/, "");
    if (cleaned) return cleaned;
  }
  throw new RecipeError(`${what}: cannot derive a name from the URL; give one with name:`, callerLocation());
}

function fixedDerivation(name: string, builder: string, fixed: FixedOutput, sources: Source[], params: Json): Derivation {
  return makeDerivation({
    kind: "fixed",
    name,
    builder,
    args: [],
    env: {},
    outputNames: ["out"],
    fixed,
    params,
    sources: sources as unknown as Json,
  });
}

/** What {@link fetchurl} takes. */
export interface FetchurlSpec {
  url?: SourceLike;
  /** Tried in order; the first that serves the right bytes wins. */
  urls?: readonly SourceLike[];
  /** The hash upstream publishes (hex, `sha256:HEX` or SRI). */
  sha256?: string;
  /** Or a BLAKE3 hash. */
  blake3?: string;
  /** Store name; default the URL's basename. */
  name?: string;
  /** Make the file executable. */
  executable?: boolean;
}

/**
 * A file, fetched from the first source that has it and verified against its
 * hash. Already in the store (fetched before, or `ukb store add`ed): never
 * downloaded again.
 */
export function fetchurl(spec: FetchurlSpec): Derivation {
  const what = "fetchurl";
  const sources = toSources(spec, what);
  const name = checkName(spec.name ?? defaultName(sources, what), what);
  if ((spec.sha256 === undefined) === (spec.blake3 === undefined)) throw new RecipeError(`fetchurl '${name}' needs exactly one of sha256 or blake3`, callerLocation());
  const algo = spec.sha256 !== undefined ? "sha256" : "blake3";
  const hash = parseHash(algo, spec.sha256 ?? spec.blake3, `fetchurl '${name}'`);
  const fixed: FixedOutput = { mode: "flat", algo, hash, ...(spec.executable ? { executable: true } : {}) };
  return fixedDerivation(name, "builtin:fetchurl", fixed, sources, null);
}

/** What {@link fetchzip} takes. */
export interface FetchzipSpec {
  url?: SourceLike;
  urls?: readonly SourceLike[];
  /** The canonical tree hash of the unpacked tree (`blake3:HEX`), as `ukb prefetch --unpack` prints it. */
  hash: string;
  /** Make the archive's single top-level directory the root; default true. */
  stripRoot?: boolean;
  name?: string;
}

/**
 * An unpacked archive (tar.gz, tar.xz, tar.bz2, tar.zst, zip), named by the
 * canonical hash of the tree, so a re-compressed or re-packed archive of the
 * same tree matches (as GitHub's archive tarballs need).
 */
export function fetchzip(spec: FetchzipSpec): Derivation {
  const what = "fetchzip";
  const sources = toSources(spec, what);
  const name = checkName(spec.name ?? defaultName(sources, what).replace(/\.(tar\.(gz|xz|bz2|zst)|tgz|zip|tar)$/, "") + "-source", what);
  const hash = parseHash("blake3", spec.hash, `fetchzip '${name}'`);
  return fixedDerivation(name, "builtin:fetchzip", { mode: "tree", algo: "blake3", hash }, sources, { stripRoot: spec.stripRoot ?? true });
}

/** A Debian binary package (.deb), pinned by sha256 and fetched through apt. */
export function debianPackage(spec: { package: string; version: string; sha256: string; arch?: string; name?: string }): Derivation {
  if (!spec?.package || !spec.version) throw new RecipeError("debianPackage() needs { package, version, sha256 }", callerLocation());
  const source: Source = { kind: "debian-package", package: spec.package, version: spec.version, ...(spec.arch ? { arch: spec.arch } : {}) };
  return fetchurl({ url: source, sha256: spec.sha256, name: spec.name ?? defaultName([source], "debianPackage") });
}

// ---- local files ------------------------------------------------------------

/** Canonical tree hash of a local file or folder, synchronously (recipes are evaluated synchronously). */
function hashLocalTree(root: string): string {
  const h = blake3Stream();
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const u64 = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };
  h.update(Buffer.from("ukb-archive-1\0"));
  const walk = (p: string): void => {
    // Every path, not only files: an added file, a changed link or mode must invalidate the eval cache.
    recordDependency(p);
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) {
      const t = Buffer.from(fs.readlinkSync(p));
      h.update(Buffer.concat([Buffer.from("l"), u32(t.length), t]));
    } else if (st.isFile()) {
      const data = fs.readFileSync(p);
      h.update(Buffer.concat([Buffer.from(st.mode & 0o100 ? "x" : "f"), u64(data.length)]));
      h.update(data);
    } else if (st.isDirectory()) {
      const names = fs.readdirSync(p).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      h.update(Buffer.concat([Buffer.from("d"), u32(names.length)]));
      for (const n of names) {
        const nb = Buffer.from(n);
        h.update(Buffer.concat([u32(nb.length), nb]));
        walk(path.join(p, n));
      }
    } else {
      throw new RecipeError(`${p} is neither a file, a directory nor a symlink`, callerLocation());
    }
  };
  walk(root);
  return h.digestHex();
}

/**
 * Files next to the recipe, added to the store: `local("./nginx")`. The path
 * is relative to the calling recipe; its identity is the tree's content hash.
 */
export function local(relativePath: string, options: { name?: string } = {}): Derivation {
  const where = callerLocation();
  // Relative to the recipe, never to the working folder: that would tie the evaluation to where
  // ukb runs, which the eval cache does not know of.
  if (!where.file && !path.isAbsolute(relativePath)) throw new RecipeError(`local(): cannot tell which recipe file called it; give ${relativePath} as an absolute path (path.join(import.meta.dirname, ...))`);
  const base = where.file ? path.dirname(path.resolve(where.file)) : "/";
  const abs = path.resolve(base, relativePath);
  if (!fs.existsSync(abs)) throw new RecipeError(`local(): ${relativePath} does not exist (looked in ${base})`, where);
  const name = checkName(options.name ?? path.basename(abs).replace(/^\.+/, "") ?? "source", "local");
  const hash = hashLocalTree(abs);
  return fixedDerivation(name, "builtin:local", { mode: "tree", algo: "blake3", hash }, [{ kind: "url", urls: [`file://${abs}`] }], null);
}

