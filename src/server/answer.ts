/**
 * The one question the server answers itself: is this `ukb realise` a
 * no-op, and if so, what does it print? Everything else (a recipe to
 * evaluate, anything to build, an error to report) is the CLI's: the
 * outcome is then a fallback with its reason, and whether the server's
 * started CLI may run it in the launcher's place (./warm.ts), or only the
 * launcher's own Node CLI may. The no-op runs the same code as the CLI's
 * (parse, eval cache, validity, out-link), with the client's working folder
 * and PATH in place of the server's.
 */
import fs from "node:fs";
import path from "node:path";
import { Store, processOwner } from "../store/index.js";
import { parseRealiseArgs, realiseResult, type RealiseArgs, type RealiseResult } from "../cli/realise.js";
import { loadWithCache, pickOutputs, storeRoot } from "../cli/context.js";
import { fileIdentity, ownProcessContext, type Request } from "./protocol.js";

/** Thrown from the eval cache's onEvaluate: the recipe or what it read changed, the CLI evaluates it. */
class NeedsEvaluation extends Error {}

/**
 * What the server does with a launch: answers it, or leaves it to the CLI,
 * saying why (for its log and status). `runnable`: the launcher is this
 * server's user, sees its files, has its capabilities and names its store,
 * so the server's started CLI may run the command for it.
 */
export type LaunchOutcome = { readonly answer: RealiseResult } | { readonly fallback: string; readonly runnable: boolean };

/**
 * The answer for the store at `root` to a launcher of the ukb in
 * `packageRoot` (a launcher of another ukb install falls back: its code may
 * differ): the out-link to make and what to print, or a fallback saying
 * why the Node CLI must run the command.
 */
export async function answerLaunch(request: Extract<Request, { kind: "launch" }>, root: string, packageRoot: string): Promise<LaunchOutcome> {
  const onlyLauncher = (why: string): LaunchOutcome => ({ fallback: why, runnable: false });
  if (!sameAsServer(request)) return onlyLauncher("the launcher is another user, or sees other files");
  if (realpathOr(request.packageRoot) !== realpathOr(packageRoot)) return onlyLauncher(`the launcher is another ukb's (${request.packageRoot})`);
  const [command, ...rest] = request.argv;
  if (command !== "realise" && command !== "build") return onlyLauncher(`'${command}' is the CLI's`);
  // Past this point the launcher is the server's user and sees its files: whatever the CLI must
  // do, the started CLI may do for it, if it also has the server's rights. (Looked at only for a
  // launch the server does not answer: a no-op pays nothing for it.)
  const fallback = (why: string): LaunchOutcome => {
    const notRunnable = whyNotRunnable(request);
    return notRunnable === undefined ? { fallback: why, runnable: true } : { fallback: `${why}; ${notRunnable}`, runnable: false };
  };
  let args: RealiseArgs;
  try {
    args = parseRealiseArgs(rest);
  } catch {
    return fallback("its arguments are wrong (the CLI says how)");
  }
  if (args.values["dry-run"] || args.values["no-eval-cache"]) return fallback("--dry-run and --no-eval-cache are the CLI's");
  // The same text, not only the same folder: output paths and out-links are spelled from it, and
  // gc matches roots by their text. (The started CLI keeps sandboxes for this store only.)
  if (storeRoot(args.values.store, request.env, request.cwd) !== root) return onlyLauncher("it names another store");
  // No store here any more: the CLI makes one.
  if (!fs.existsSync(path.join(root, "ukb.sqlite"))) return onlyLauncher("the store is gone");
  // Opened for this answer and closed after it (about 0.5 ms): a database held open would keep its
  // WAL files on disk, which a user restoring or deleting ukb.sqlite alone does not expect.
  const store = Store.open(root);
  try {
    const recipe = await loadWithCache(store, path.resolve(request.cwd, args.recipe), {
      onEvaluate: (why) => {
        throw new NeedsEvaluation(`${args.recipe} needs an evaluation: ${why}`);
      },
      env: request.env,
      cwd: request.cwd,
    });
    const { outputs } = pickOutputs(recipe, args.values.attr);
    // Protected before it is checked, for as long as the launcher lives: it makes the out-link
    // after this answer, and until then the root registered below points at nothing gc can see.
    const launcher = processOwner(request.pid);
    store.protect(Object.values(outputs), launcher);
    const launchers = launchersOf(root);
    launchers.add(launcher);
    const alive = new Set(store.dropDeadTempRoots(launchers));
    for (const owner of launchers) if (!alive.has(owner)) launchers.delete(owner);
    if (!Object.values(outputs).every((p) => store.isValid(p))) return fallback("something is to be built");
    // One deleted by hand: the CLI says so.
    try {
      store.assertPresent(Object.values(outputs));
    } catch {
      return fallback("an output is missing from the store folder");
    }
    // The root is registered here; the launcher makes the link itself, with its own rights, in its
    // own view (a root whose link never comes is forgotten by gc).
    const result = realiseResult(store, outputs, args.values, request.cwd);
    if (result.link) store.addRoot(result.link, launcher);
    return { answer: result };
  } catch (err) {
    // NeedsEvaluation, or an error the CLI will report in its own words.
    return fallback(err instanceof NeedsEvaluation ? err.message : `the CLI reports: ${(err as Error)?.message ?? String(err)}`);
  } finally {
    store.close();
  }
}

/** Launchers whose temp roots this server registered, by store: each answer forgets those that have exited. */
const launcherOwners = new Map<string, Set<string>>();
function launchersOf(root: string): Set<string> {
  let set = launcherOwners.get(root);
  if (!set) launcherOwners.set(root, (set = new Set()));
  return set;
}

/**
 * Whether the server may act for this client as the client itself would:
 * the same user, group and supplementary groups (out-links are made with the
 * server's credentials; root may connect to any socket), and the same view
 * of the files (the same mount namespace, `/` and working folder: a client
 * in a container or a chroot sees other recipes, tools and folders), in
 * the same PID namespace (its PID keeps its paths from gc).
 */
function sameAsServer(request: Extract<Request, { kind: "launch" }>): boolean {
  const sorted = (ids: number[]) => [...new Set(ids)].sort((a, b) => a - b).join(",");
  if (request.uid !== process.geteuid!() || request.gid !== process.getegid!()) return false;
  // Node's getgroups() adds the effective group, which getgroups(2) may leave out: both sets get it.
  if (sorted([...request.groups, request.gid]) !== sorted([...process.getgroups!(), process.getegid!()])) return false;
  let mountNamespace: string;
  let pidNamespace: string;
  try {
    mountNamespace = fs.readlinkSync("/proc/self/ns/mnt");
    pidNamespace = fs.readlinkSync("/proc/self/ns/pid");
  } catch {
    return false;
  }
  // The PID names the launcher only in our PID namespace (it protects the answer's paths from gc).
  return request.mountNamespace === mountNamespace && request.pidNamespace === pidNamespace && request.rootIdentity === fileIdentity("/") && request.cwdIdentity === fileIdentity(request.cwd);
}

/**
 * Why the server's started CLI may not run this launch in the launcher's
 * place, or undefined when it may: it would run with the server's rights,
 * its node, and its own descriptors and /proc entry.
 */
function whyNotRunnable(request: Extract<Request, { kind: "launch" }>): string | undefined {
  const context = ownProcessContext();
  if (context === undefined || request.processContext !== context) return "the launcher's capabilities, no_new_privs or seccomp are not the server's";
  // /dev/fd/N, /dev/stdin, /dev/tty or /proc/self/… name the launcher's own descriptors, terminal and
  // process, which the started CLI does not have: `ukb realise <(generate-recipe)`.
  const paths = [request.cwd, ...request.argv, request.env.UKB_STORE ?? ""];
  if (paths.some((arg) => LAUNCHERS_OWN.test(path.resolve(request.cwd, arg)))) return "it names the launcher's own descriptors, terminal or /proc entry";
  // What Node reads once, as it starts (the locale ICU formats with, NODE_OPTIONS, libuv's pool):
  // the started CLI began with the server's, and setting the launcher's later changes nothing.
  const startup = Object.keys({ ...process.env, ...request.env }).find((k) => (STARTUP_LOCALE.has(k) || /^(NODE|UV)_/.test(k)) && process.env[k] !== request.env[k]);
  if (startup !== undefined) return `the launcher's ${startup} is not the server's, and Node reads it only as it starts`;
  // The launcher would run the `node` its PATH finds: only that very program may run its command.
  const node = nodeOnPath(request.env.PATH, request.cwd);
  if (node === undefined || fileIdentity(node) !== fileIdentity(process.execPath)) return `the launcher's node (${node ?? "none on its PATH"}) is not the server's (${process.execPath})`;
  return undefined;
}

/** The variables ICU takes its default locale from, once, when Node starts. */
const STARTUP_LOCALE = new Set(["LANG", "LC_ALL", "LC_MESSAGES"]);

/** Paths that name a process's own descriptors, terminal or /proc entry: another process opening them gets its own. */
const LAUNCHERS_OWN = /^\/(dev\/(fd|stdin|stdout|stderr|tty)|proc\/(self|thread-self|\d+))(\/|$)/;

/**
 * The `node` the launcher's execvp would run: the first executable file of
 * that name in its PATH (an empty entry is its folder; no PATH is glibc's
 * default, /bin:/usr/bin).
 */
function nodeOnPath(envPath: string | undefined, cwd: string): string | undefined {
  for (const dir of (envPath ?? "/bin:/usr/bin").split(":")) {
    const candidate = path.resolve(cwd, dir, "node");
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function realpathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}
