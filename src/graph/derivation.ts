/**
 * Derivations as pure data.
 *
 * A `DrvRecord` is everything that goes into a build, plus the identity
 * derived from it: its hash (BLAKE3 of the canonical serialisation) and its
 * output paths. Paths are written under the *virtual* store directory
 * `/ukb/store`, the fixed place where every build sees the store, so that
 * identities never depend on where a store lives on disk (as /nix/store does
 * for Nix). The real location is the store's business.
 */
import { canonicalJson, type Json } from "./canonical.js";
import { blake3Hex, storeHash } from "./hash.js";

/** Where every build sees the store, whatever its location on disk. */
export const VIRTUAL_STORE = "/ukb/store";

/** The system every derivation here targets; part of the identity. */
export const SYSTEM = "x86_64-linux";

/** Valid derivation and output names: what is safe inside a path and a shell word. */
export const NAME_PATTERN = /^[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*$/;
/** The longest name: a store path's file name (`<32 chars>-<name>[-<output>]`) must fit the 255 bytes a file name may have. */
export const MAX_NAME = 180;

/** Whether a path has a "." or ".." segment: one that could lead out of where it claims to be (`/ukb/store/../../usr/bin/perl`). */
export function hasDotSegment(p: string): boolean {
  return p.split("/").some((segment) => segment === "." || segment === "..");
}

/** Matches a store path's hash and name anywhere in a string. */
/** A store path's file name (`<hash>-<name>`): the only names ukb makes, or ever removes, in a store folder. */
export const STORE_BASE_PATTERN = /^[0-9a-df-np-sv-z]{32}-[^/]+$/;
export const STORE_PATH_PATTERN = /\/ukb\/store\/([0-9a-df-np-sv-z]{32})-([A-Za-z0-9+._?=-]+)/g;

/** A program taken from the host by `hostTools`: where it was found and what it is. */
export interface HostTool {
  /** The name the build calls it by (`bin/<name>`). */
  readonly name: string;
  /** Where it was found on the host's PATH. */
  readonly path: string;
  /** BLAKE3 of the file it resolves to. */
  readonly blake3: string;
}

/** The hash a fixed-output derivation promises to produce. */
export interface FixedOutput {
  /** `flat`: the output is one file hashed as bytes; `tree`: a directory hashed canonically. */
  readonly mode: "flat" | "tree";
  readonly algo: "sha256" | "blake3";
  /** Lowercase hex. */
  readonly hash: string;
  /** Flat files only: make the file executable. */
  readonly executable?: boolean;
}

export type DrvKind = "command" | "host-tools" | "builtin" | "fixed";

/** The data of a derivation: what is hashed, plus identity and bookkeeping derived from it. */
export interface DrvRecord {
  readonly kind: DrvKind;
  readonly name: string;
  readonly system: string;
  readonly builder: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly outputNames: readonly string[];
  /** Virtual store paths this derivation reads: the outputs of its input derivations. */
  readonly inputPaths: readonly string[];
  readonly hostTools?: readonly HostTool[];
  /**
   * Host tools: the Debian packages that own them and all they depend on or recommend
   * (`name:arch=version`, sorted), where the host has them: what the tools run with.
   */
  readonly hostPackages?: readonly string[];
  readonly fixed?: FixedOutput;
  /** Builtins and fetchers: parameters that are not environment variables. */
  readonly params?: Json;
  /**
   * Fixed outputs: where the content may come from. Part of the derivation's
   * hash (two fetchers of the same content from different places are two
   * derivations) but not of its output path (either serves the other).
   */
  readonly sources?: Json;
  // ---- derived, never hashed ----
  /** BLAKE3 (hex) of the canonical serialisation. */
  readonly hash: string;
  /** Output name → virtual store path. */
  readonly outputs: Readonly<Record<string, string>>;
  /** Input derivation hash → the outputs of it that are used. */
  readonly inputDrvs: Readonly<Record<string, readonly string[]>>;
}

export type DrvDraft = Omit<DrvRecord, "hash" | "outputs" | "system"> & { system?: string };

/** The part of a record that its identity is hashed over. */
export function hashedPart(d: DrvDraft | DrvRecord): Json {
  const part: { [k: string]: Json } = {
    v: 1,
    kind: d.kind,
    name: d.name,
    system: d.system ?? SYSTEM,
    builder: d.builder,
    args: [...d.args],
    env: { ...d.env },
    outputs: [...d.outputNames].sort(),
    inputs: [...d.inputPaths].sort(),
  };
  if (d.hostTools) part.hostTools = d.hostTools.map((t) => ({ name: t.name, path: t.path, blake3: t.blake3 }));
  if (d.hostPackages) part.hostPackages = [...d.hostPackages];
  if (d.fixed) part.fixed = { ...d.fixed } as { [k: string]: Json };
  if (d.params !== undefined) part.params = d.params;
  if (d.sources !== undefined) part.sources = d.sources;
  return part;
}

/** The canonical serialisation that identifies a derivation. */
export function canonicalForm(d: DrvDraft | DrvRecord): string {
  return canonicalJson(hashedPart(d));
}

/** Output path of a derivation; fixed outputs are named by their content hash alone. */
export function outputPath(drvHash: string, name: string, output: string, fixed?: FixedOutput): string {
  const suffix = output === "out" ? "" : `-${output}`;
  const fingerprint = fixed
    ? `fixed:${fixed.mode}:${fixed.algo}:${fixed.hash}:${fixed.executable ? "x" : ""}:${name}`
    : `output:${output}:${drvHash}:${name}`;
  return `${VIRTUAL_STORE}/${storeHash(fingerprint)}-${name}${suffix}`;
}

/** Completes a draft into a record: computes the hash and the output paths. */
export function finishDrv(draft: DrvDraft): DrvRecord {
  const hash = blake3Hex(canonicalForm(draft));
  const outputs: Record<string, string> = {};
  for (const o of draft.outputNames) outputs[o] = outputPath(hash, draft.name, o, draft.fixed);
  return deepFreeze({ ...draft, system: draft.system ?? SYSTEM, hash, outputs });
}

/** The basename of a store path (`<hash>-<name>`), the key the store files it under. */
export function baseName(storePath: string): string {
  const i = storePath.lastIndexOf("/");
  return i < 0 ? storePath : storePath.slice(i + 1);
}

/** The 32-character hash part of a store path or basename. */
export function hashPart(storePath: string): string {
  return baseName(storePath).slice(0, 32);
}

export function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}
