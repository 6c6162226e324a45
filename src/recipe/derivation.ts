/**
 * The recipe-facing derivation value.
 *
 * `derivation()` is pure: it validates its arguments, finds the other
 * derivations it mentions (interpolating a derivation into a string yields its
 * output path, and the path is how the dependency is recorded, as Nix's string
 * context does) and returns an immutable `Derivation` whose identity is known
 * at once. Because a derivation can only mention derivations that already
 * exist, a recipe cannot build a cycle.
 */
import { RecipeError } from "../errors/index.js";
import {
  finishDrv,
  hasDotSegment,
  MAX_NAME,
  NAME_PATTERN,
  STORE_HASH_CHARS,
  STORE_PATH_PATTERN,
  type DrvDraft,
  type DrvRecord,
  VIRTUAL_STORE,
} from "../graph/index.js";
import { callerLocation } from "./location.js";

const BRAND = Symbol.for("ukb.derivation");
const OUTPUT_BRAND = Symbol.for("ukb.output");

interface Registry {
  /** Store-path hash part → the record and output it names. */
  byPathHash: Map<string, { drv: DrvRecord; output: string; path: string }>;
  /** Derivation hash → record. */
  byHash: Map<string, DrvRecord>;
}

/** One registry per process, shared by every copy of this module that may be loaded. */
const registry: Registry = ((globalThis as Record<symbol, unknown>)[Symbol.for("ukb.registry")] ??= {
  byPathHash: new Map(),
  byHash: new Map(),
}) as Registry;

/** One output of a derivation; interpolates to its store path. */
export class OutputRef {
  /** Marks an output reference, for {@link isOutputRef}. */
  readonly [OUTPUT_BRAND] = true;
  constructor(
    /** The derivation that produces this output. */
    readonly derivation: Derivation,
    /** The output's name (`out`, `dbg`, …). */
    readonly name: string,
  ) {
    Object.freeze(this);
  }
  /** The output's store path, as the build sees it. */
  get path(): string {
    return this.derivation.drv.outputs[this.name]!;
  }
  /** The output's store path: what `` `${ref}` `` gives, recording the dependency. */
  toString(): string {
    return this.path;
  }
}

/** An immutable build step; interpolating it into a string yields its main output's path. */
export class Derivation {
  /** Marks a derivation, for {@link isDerivation}. */
  readonly [BRAND] = true;
  /** The derivation's data and identity. */
  readonly drv: DrvRecord;
  /** Every output by name. */
  readonly outputs: Readonly<Record<string, OutputRef>>;

  constructor(drv: DrvRecord) {
    this.drv = drv;
    const outputs: Record<string, OutputRef> = {};
    for (const o of drv.outputNames) outputs[o] = new OutputRef(this, o);
    this.outputs = Object.freeze(outputs);
    registry.byHash.set(drv.hash, drv);
    for (const [output, path] of Object.entries(drv.outputs)) {
      registry.byPathHash.set(path.slice(path.lastIndexOf("/") + 1, path.lastIndexOf("/") + 33), { drv, output, path });
    }
    Object.freeze(this);
  }
  /** The derivation's name. */
  get name(): string {
    return this.drv.name;
  }
  /** BLAKE3 of the canonical serialisation: the derivation's identity. */
  get hash(): string {
    return this.drv.hash;
  }
  /** The main output's store path (`out`, or the first output). */
  get path(): string {
    return this.drv.outputs.out ?? this.drv.outputs[this.drv.outputNames[0]!]!;
  }
  /** One named output. */
  output(name: string): OutputRef {
    const ref = this.outputs[name];
    if (!ref) throw new RecipeError(`derivation '${this.name}' has no output '${name}' (it has ${this.drv.outputNames.join(", ")})`, callerLocation());
    return ref;
  }
  /** The main output's store path: what `` `${drv}` `` gives, recording the dependency. */
  toString(): string {
    return this.path;
  }
}

/**
 * Whether `value` is a derivation (from any copy of the recipe API in the
 * process: the check is by brand, not by class).
 */
export function isDerivation(value: unknown): value is Derivation {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}

/** Whether `value` is one output of a derivation (`drv.output("dbg")`), by brand as {@link isDerivation}. */
export function isOutputRef(value: unknown): value is OutputRef {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[OUTPUT_BRAND] === true;
}

/** A value a recipe may put in a builder, an argument or an environment variable. */
export type StringLike = string | number | boolean | Derivation | OutputRef;

/** What `derivation()` takes. */
export interface DerivationSpec {
  /** A name for people: letters, digits and `+-._?=`, not starting with a dot. */
  name: string;
  /** The program to run: usually `` `${tools}/bin/sh` `` from {@link hostTools}. */
  builder: StringLike;
  /** Its arguments. */
  args?: readonly StringLike[];
  /** Its environment, on top of the variables every build gets (`out`, `SOURCE_DATE_EPOCH`, `TZ`, …). */
  env?: Readonly<Record<string, StringLike>>;
  /** Output names; default `["out"]`. Each is an environment variable holding its path. */
  outputs?: readonly string[];
}

/** Environment variables every build gets from ukb and that a recipe may not set. */
const RESERVED_ENV = new Set(["UKB_CORES", "UKB_BUILD_TOP", "HOME", "PWD", "TMPDIR", "NIX_BUILD_TOP"]);

function stringify(value: unknown, where: string): string {
  if (typeof value === "string") {
    // An argument or a variable is a C string to the builder: said here, with the recipe's line, not at build time.
    if (value.includes("\0")) throw new RecipeError(`${where} holds a NUL byte, which no program can be given`, callerLocation());
    return value;
  }
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (isDerivation(value) || isOutputRef(value)) return value.toString();
  const got = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
  throw new RecipeError(`${where} must be a string or a derivation, not ${got}`, callerLocation());
}

/** Finds the derivation outputs a string mentions. */
function collectInputs(text: string, where: string, into: Map<string, { drv: DrvRecord; output: string; path: string }>): void {
  for (const m of text.matchAll(STORE_PATH_PATTERN)) {
    const found = registry.byPathHash.get(m[1]!);
    if (!found) {
      throw new RecipeError(`${where} mentions ${m[0]}, which is not the output of any derivation`, callerLocation());
    }
    into.set(found.path, found);
  }
}

/** Completes a draft whose strings may mention other derivations: fills the inputs, hashes, registers. */
export function makeDerivation(draft: Omit<DrvDraft, "inputPaths" | "inputDrvs">, extraInputs: readonly (Derivation | OutputRef)[] = []): Derivation {
  const inputs = new Map<string, { drv: DrvRecord; output: string; path: string }>();
  collectInputs(draft.builder, "builder", inputs);
  draft.args.forEach((a, i) => collectInputs(a, `args[${i}]`, inputs));
  for (const [k, v] of Object.entries(draft.env)) collectInputs(v, `env.${k}`, inputs);
  // Builtins carry store paths in their parameters (a rootfs entry `${nginx}/bin/nginx`).
  if (draft.params !== undefined && draft.params !== null) collectInputs(JSON.stringify(draft.params), "a parameter", inputs);
  for (const ref of extraInputs) {
    const path = ref.toString();
    const drv = isDerivation(ref) ? ref.drv : ref.derivation.drv;
    inputs.set(path, { drv, output: isDerivation(ref) ? (drv.outputs.out ? "out" : drv.outputNames[0]!) : ref.name, path });
  }
  const inputDrvs: Record<string, string[]> = {};
  for (const { drv, output } of inputs.values()) {
    const list = (inputDrvs[drv.hash] ??= []);
    if (!list.includes(output)) list.push(output);
  }
  for (const list of Object.values(inputDrvs)) list.sort();
  return new Derivation(finishDrv({ ...draft, inputPaths: [...inputs.keys()].sort(), inputDrvs }));
}

export function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || name === "") throw new RecipeError(`${what} has no name`, callerLocation());
  if (name.length > MAX_NAME) throw new RecipeError(`${what} name '${shorten(name)}' is ${name.length} characters long; at most ${MAX_NAME} fit in a store path`, callerLocation());
  if (!NAME_PATTERN.test(name)) {
    throw new RecipeError(`${what} name '${shorten(name)}' may hold only letters, digits and +-._?= and must not start with a dot`, callerLocation());
  }
  return name;
}

/** A name as an error message shows it: whole up to 80 characters (a line stays a line). */
const shorten = (name: string) => (name.length > 80 ? `${name.slice(0, 77)}...` : name);
/** The largest SOURCE_DATE_EPOCH (9999-12-31T23:59:59Z): a file's time must be one the filesystem can set. */
const MAX_EPOCH = 253402300799;

/**
 * Declares a build step: run `builder` with `args` in a sandbox whose
 * environment is `env` plus what ukb sets (`out` and one variable per output,
 * `SOURCE_DATE_EPOCH`, `TZ=UTC`, `LC_ALL=C`, `HOME=/homeless-shelter`,
 * `UKB_CORES`). Pure: it does no I/O and returns an immutable value.
 *
 * @example
 * const tools = hostTools(["sh"]);
 * export default derivation({ name: "hello", builder: `${tools}/bin/sh`, args: ["-c", "echo hi > $out"] });
 */
export function derivation(spec: DerivationSpec): Derivation {
  if (typeof spec !== "object" || spec === null) throw new RecipeError("derivation() takes an object { name, builder, args?, env?, outputs? }", callerLocation());
  const name = checkName(spec.name, "derivation");
  const what = `derivation '${name}'`;
  if (spec.builder === undefined) throw new RecipeError(`${what} has no builder`, callerLocation());
  const builder = stringify(spec.builder, `${what}: builder`);
  // A host program named directly would run (the system folders are visible) without its
  // contents in any hash: upgrading it would change no output's path.
  // Path segments "." and ".." are refused too: "/ukb/store/../../usr/bin/perl" is a host program.
  if (!builder.startsWith(`${VIRTUAL_STORE}/`) || hasDotSegment(builder)) {
    throw new RecipeError(`${what}: builder '${builder}' is not in the store; host programs reach a build through hostTools, e.g. builder: \`\${hostTools(["sh"])}/bin/sh\``, callerLocation());
  }
  if (spec.args !== undefined && !Array.isArray(spec.args)) throw new RecipeError(`${what}: args must be an array`, callerLocation());
  // Array.from, not map: a hole in a sparse array (`[, "x"]`) is an undefined argument, refused, not skipped.
  const args = Array.from(spec.args ?? [], (a, i) => stringify(a, `${what}: args[${i}]`));
  const outputNames = Array.from(spec.outputs ?? ["out"], (o) => o);
  if (outputNames.length === 0) throw new RecipeError(`${what} declares no outputs`, callerLocation());
  for (const o of outputNames) {
    checkName(o, `${what}: an output`);
    // Each output is also a variable of the builder's environment, which cannot hold "=" in its name
    // nor take the place of one ukb sets.
    if (o.includes("=") || RESERVED_ENV.has(o)) throw new RecipeError(`${what}: an output cannot be named '${o}' (the builder gets each output's path in a variable of that name)`, callerLocation());
    const fileName = STORE_HASH_CHARS + 1 + name.length + (o === "out" ? 0 : o.length + 1);
    if (fileName > 255) throw new RecipeError(`${what}: output '${shorten(o)}' makes a store path's file name ${fileName} characters long; at most 255 fit`, callerLocation());
  }
  if (new Set(outputNames).size !== outputNames.length) throw new RecipeError(`${what} declares an output twice`, callerLocation());
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    // "__proto__" (an own key from JSON.parse or ["__proto__"]) would set env's prototype, not a variable.
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || k === "__proto__") throw new RecipeError(`${what}: '${k}' is not a valid environment variable name`, callerLocation());
    if (RESERVED_ENV.has(k) || outputNames.includes(k)) throw new RecipeError(`${what}: env.${k} is set by ukb and cannot be set by a recipe`, callerLocation());
    env[k] = stringify(v, `${what}: env.${k}`);
  }
  const epoch = env.SOURCE_DATE_EPOCH;
  if (epoch !== undefined && !(/^\d{1,12}$/.test(epoch) && Number(epoch) <= MAX_EPOCH)) {
    throw new RecipeError(`${what}: env.SOURCE_DATE_EPOCH must be whole seconds since 1970, from 0 to ${MAX_EPOCH}, not '${shorten(epoch)}'`, callerLocation());
  }
  return makeDerivation({ kind: "command", name, builder, args, env, outputNames });
}

/** All records reachable from the given derivations, keyed by hash. */
export function closureOf(roots: readonly DrvRecord[]): Record<string, DrvRecord> {
  const out: Record<string, DrvRecord> = {};
  const todo = [...roots];
  while (todo.length > 0) {
    const d = todo.pop()!;
    if (out[d.hash]) continue;
    out[d.hash] = d;
    for (const h of Object.keys(d.inputDrvs)) {
      const input = registry.byHash.get(h);
      if (input) todo.push(input);
    }
  }
  return out;
}
