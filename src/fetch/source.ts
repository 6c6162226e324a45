/**
 * Source descriptors: where the bytes of a fixed-output derivation may come
 * from. Plain JSON data, so a derivation can serialise them; the pinned hash
 * lives beside the descriptor, not in it, because any source of the same
 * bytes is as good as another.
 */
import { UkbError } from "../errors/index.js";
import type { ExpectedHashes, FileDigests } from "./digest.js";
import { fetchDebianPackage, fetchDebianSource } from "./debian.js";
import { download, type DownloadOptions } from "./download.js";

export type SourceDescriptor =
  /** Upstream URLs, tried in order; `mirror://NAME/path` allowed. */
  | { kind: "url"; urls: readonly string[] }
  /** A file of a Debian source package, e.g. its `.orig.tar.gz`. */
  | { kind: "debian-source"; package: string; file: string; version?: string }
  /** A Debian binary package (.deb). */
  | { kind: "debian-package"; package: string; version: string; arch?: string };

/** Everything a fetch needs beyond the descriptor; the network options apply to URL sources. */
export type FetchSourceOptions = Omit<DownloadOptions, "urls" | "dest" | "expect"> & {
  dest: string;
  expect?: ExpectedHashes;
  /** Extra apt-get arguments for Debian sources. */
  aptArgs?: readonly string[];
};

export interface FetchSourceResult extends FileDigests {
  /** What served the bytes: a URL, or `debian-source:musl=1.2.3-1/musl_1.2.3.orig.tar.gz`. */
  origin: string;
}

/** One line for messages and logs. */
export function describeSource(source: SourceDescriptor): string {
  switch (source.kind) {
    case "url":
      return source.urls[0] ?? "(no URL)";
    case "debian-source":
      return `debian-source:${source.package}${source.version ? `=${source.version}` : ""}/${source.file}`;
    case "debian-package":
      return `debian-package:${source.package}${source.arch ? `:${source.arch}` : ""}=${source.version}`;
  }
}

/** Fetches a source into `dest` and verifies it against `expect`. */
export async function fetchSource(source: SourceDescriptor, options: FetchSourceOptions): Promise<FetchSourceResult> {
  const { aptArgs, ...rest } = options;
  const apt = {
    dest: options.dest,
    ...(options.expect ? { expect: options.expect } : {}),
    ...(options.offline !== undefined ? { offline: options.offline } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.limiter ? { limiter: options.limiter } : {}),
    ...(aptArgs ? { aptArgs } : {}),
  };
  switch (source.kind) {
    case "url": {
      const r = await download({ ...rest, urls: source.urls });
      return { origin: r.url, sha256: r.sha256, blake3: r.blake3, size: r.size };
    }
    case "debian-source": {
      const r = await fetchDebianSource({ ...apt, package: source.package, file: source.file, ...(source.version !== undefined ? { version: source.version } : {}) });
      return { origin: describeSource(source), sha256: r.sha256, blake3: r.blake3, size: r.size };
    }
    case "debian-package": {
      const r = await fetchDebianPackage({ ...apt, package: source.package, version: source.version, ...(source.arch !== undefined ? { arch: source.arch } : {}) });
      return { origin: describeSource(source), sha256: r.sha256, blake3: r.blake3, size: r.size };
    }
  }
}

/** Checks that a value (e.g. read back from a serialised derivation) is a well-formed descriptor. */
export function parseSource(value: unknown): SourceDescriptor {
  const bad = (why: string): UkbError => new UkbError("recipe", `invalid source descriptor ${JSON.stringify(value)}: ${why}`);
  if (typeof value !== "object" || value === null) throw bad("not an object");
  const v = value as Record<string, unknown>;
  const str = (k: string, optional = false): string | undefined => {
    const x = v[k];
    if (x === undefined && optional) return undefined;
    if (typeof x !== "string" || x === "") throw bad(`'${k}' must be a non-empty string`);
    return x;
  };
  switch (v["kind"]) {
    case "url": {
      const urls = v["urls"];
      if (!Array.isArray(urls) || urls.length === 0 || !urls.every((u) => typeof u === "string" && u !== "")) throw bad("'urls' must be a non-empty list of strings");
      return { kind: "url", urls: [...(urls as string[])] };
    }
    case "debian-source": {
      const version = str("version", true);
      return { kind: "debian-source", package: str("package")!, file: str("file")!, ...(version !== undefined ? { version } : {}) };
    }
    case "debian-package": {
      const arch = str("arch", true);
      return { kind: "debian-package", package: str("package")!, version: str("version")!, ...(arch !== undefined ? { arch } : {}) };
    }
    default:
      throw bad("'kind' must be url, debian-source or debian-package");
  }
}
