/**
 * The `ukb` command: parse, dispatch, print errors. Commands are loaded on
 * demand so that each pays only for the modules it uses.
 */
import { catchStrayErrors, ExitCode, isUkbError, permissionDenied, RecipeError, reportLateErrors, UkbError, UsageError } from "../errors/index.js";
import { isNoSpace, NO_SPACE_HINT } from "../store/space.js";
import { damagedDbError, isDamagedDb } from "../store/damage.js";
import { renderError } from "../ui/index.js";
import { writeStdout } from "../ui/stdout.js";
import { takeLauncherNote } from "./launcher-note.js";

const HELP = `ukb — declarative, content-addressed builds of unikernels

usage:
  ukb realise <recipe.ts> [-A attr]   build an export, print its output paths, link ./result
  ukb show <recipe.ts> [-A attr]      print the canonical derivation graph as JSON
  ukb check <recipe.ts> [-A attr]     rebuild what is valid and compare, bit for bit
  ukb log PATH | <recipe.ts> [-A a]   print a build's log
  ukb run <recipe.ts|oci-dir> [-A a]  boot an image in QEMU as urunc would; print the URL once it answers
  ukb push <recipe.ts|oci-dir> REF    push an image to a registry, or REF = oci-archive:FILE
  ukb report <recipe.ts>... [--boot N] [--json | --html F]   compare images: sizes, builds, boot times
  ukb prefetch URL [--unpack]         download, add to the store, print the hash to pin
  ukb store add FILE|DIR [--name N]   put content in the store (fetches with its hash use it)
  ukb store verify | gc | info PATH | repair   check the store, collect garbage, describe a path, remake a damaged database
  ukb copy --to URL [--sign-key F] <recipe.ts|PATH...>   upload paths and their closures to a binary cache
  ukb copy --from URL <recipe.ts|PATH...>                download them from one, verified
  ukb key generate --name N --out F   make a signing key; print the public key to trust
  ukb server start | stop | status    the store's server (bin/ukb starts it): a no-op realise then takes milliseconds
  ukb init [DIR]                      make a folder's recipes type-check in an editor (node_modules/ukb, tsconfig.json)

common options: --store DIR (default ./cache, or $UKB_STORE), --json
binary caches (realise): --substituters URL... ($UKB_SUBSTITUTERS), --trusted-keys NAME:KEY... ($UKB_TRUSTED_KEYS),
  --no-verify; or ~/.config/ukb/config.json {"substituters": [...], "trustedKeys": [...]}
  URL: file:///dir, http(s)://host/prefix, oci://registry/repository
exit codes: 0 ok, 1 a build failed, 2 bad recipe or usage`;

const commands: Record<string, () => Promise<(argv: string[]) => Promise<number>>> = {
  realise: async () => (await import("./realise.js")).realiseCommand,
  build: async () => (await import("./realise.js")).realiseCommand,
  show: async () => (await import("./show.js")).showCommand,
  log: async () => (await import("./log.js")).logCommand,
  store: async () => (await import("./store.js")).storeCommand,
  prefetch: async () => (await import("./prefetch.js")).prefetchCommand,
  push: async () => (await import("./push.js")).pushCommand,
  check: async () => (await import("./check.js")).checkCommand,
  run: async () => (await import("./run.js")).runCommand,
  report: async () => (await import("./report.js")).reportCommand,
  copy: async () => (await import("./copy.js")).copyCommand,
  key: async () => (await import("./key.js")).keyCommand,
  server: async () => (await import("./server.js")).serverCommand,
  init: async () => (await import("./init.js")).initCommand,
};

export async function main(argv: string[]): Promise<number> {
  takeLauncherNote();
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    writeStdout(`${HELP}\n`);
    return name ? ExitCode.ok : ExitCode.badInput;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`ukb: error: unknown command '${name}'\n${HELP}\n`);
    return ExitCode.badInput;
  }
  // `ukb realise --help`: that command's lines of the help, and the common options; nothing run.
  if (rest.includes("--help") || rest.includes("-h")) {
    const lines = HELP.split("\n");
    const own = lines.filter((l) => l.startsWith(`  ukb ${name} `) || l === `  ukb ${name}`);
    const common = lines.slice(lines.findIndex((l) => l.startsWith("common options")));
    writeStdout(`usage:\n${own.join("\n")}\n\n${common.join("\n")}\n`);
    return ExitCode.ok;
  }
  // Not for `ukb server`: it lives as long as its server, which must end on an error of its own,
  // not go on half broken (its started CLI runs each launcher's command through main again).
  if (name === "server") return runCommand(load, rest);
  const stray = catchStrayErrors();
  const exitCode = await runCommand(load, rest);
  // An error no one awaited (a recipe's timer) cancelled the command: it is what the user must fix.
  const strayError = await stray.stop();
  // One that comes after (a timer still pending once the builds are done): said in a line too, and the exit code is a bad recipe's.
  reportLateErrors(async (err) => report(await strayReport(err), rest));
  return strayError ? report(await strayReport(strayError.err), rest) : exitCode;
}

/** Runs a command; an error that ends it is printed, and its exit code returned. */
async function runCommand(load: () => Promise<(argv: string[]) => Promise<number>>, rest: string[]): Promise<number> {
  try {
    return await (await load())(rest);
  } catch (err) {
    const parseError = err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS");
    const shown =
      parseError ? new UsageError(err.message)
      : isUkbError(err) ? err
      : isNoSpace(err) ? noSpace(err)
      : isDamagedDb(err) ? damagedDbError(err)
      : (permissionDenied(err) ?? err);
    return report(shown, rest);
  }
}

/** An error no one awaited, as ukb reports it: the recipe's, with its line, where its stack says so. */
async function strayReport(err: unknown): Promise<UkbError> {
  const { recipeErrorOf } = await import("../recipe/load.js");
  return recipeErrorOf(err, "(an error no one awaited: a timer's, or a promise's left rejected)") ?? new UkbError("internal", `an error no one awaited: ${(err as Error)?.stack ?? String(err)}`);
}

/** Prints the error that ends a command; returns the exit code it calls for. */
function report(shown: unknown, rest: readonly string[]): number {
  const exitCode = isUkbError(shown) ? shown.exitCode : ExitCode.buildFailed;
  // With --json, stderr is one JSON event a line: the error that ends the command is one too.
  if (rest.includes("--json")) process.stderr.write(`${JSON.stringify(errorEvent(shown, exitCode))}\n`);
  else process.stderr.write(`${renderError(shown)}\n`);
  return exitCode;
}

/** The error that ends a command, as a JSON event (`--json`). */
function errorEvent(err: unknown, exitCode: number): Record<string, unknown> {
  if (isUkbError(err)) {
    const where = err instanceof RecipeError && err.file ? { file: err.file, ...(err.line ? { line: err.line } : {}) } : {};
    return { type: "error", kind: err.kind, message: err.message, ...where, ...(err.hint ? { hint: err.hint } : {}), exitCode, time: Date.now() };
  }
  return { type: "error", kind: "internal", message: (err as Error)?.stack ?? String(err), exitCode, time: Date.now() };
}

/** A full disk that no store operation explained (a log, a report, an image written elsewhere): still one line, not a stack. */
function noSpace(err: unknown): UkbError {
  return new UkbError("store", `no space left on device: ${(err as Error).message}`, { hint: NO_SPACE_HINT, cause: err });
}
