/**
 * Errors that no command awaits: a recipe's timer that throws, a promise
 * the recipe left rejected. Node would print a stack trace and end ukb in
 * the middle of its builds; ukb instead tells the command's listeners (a
 * realise cancels its builds, as Ctrl-C does, so nothing half-built is
 * registered; the recipe's cached evaluation is dropped) and reports the
 * error as the command's own.
 */
type Listener = (err: unknown) => void;

/** The command under way: its listeners, and the first stray error once one came. */
interface Scope {
  readonly listeners: Set<Listener>;
  first?: { err: unknown };
}

/** Undefined between commands. */
let current: Scope | undefined;

function tell(listener: Listener, err: unknown): void {
  try {
    listener(err);
  } catch {
    // A listener's own failure (a store already closed) must not hide the error itself.
  }
}

/**
 * Calls `listener` with an error no one awaited, while this command runs (at
 * once if one came already: a recipe's timer may fire before the builds
 * start); returns what stops it.
 */
export function onStrayError(listener: Listener): () => void {
  const scope = current;
  scope?.listeners.add(listener);
  if (scope?.first) tell(listener, scope.first.err);
  return () => scope?.listeners.delete(listener);
}

/** Starts catching stray errors for one command; `stop()` ends it and gives the first one caught. */
export function catchStrayErrors(): { stop: () => Promise<{ err: unknown } | undefined> } {
  const scope: Scope = (current = { listeners: new Set() });
  const caught = (err: unknown) => {
    scope.first ??= { err };
    for (const listener of scope.listeners) tell(listener, err);
  };
  process.on("uncaughtException", caught);
  process.on("unhandledRejection", caught);
  return {
    stop: async () => {
      // A promise rejected in the command's last turn is said to be unhandled only after it.
      await new Promise((resolve) => setImmediate(resolve));
      process.off("uncaughtException", caught);
      process.off("unhandledRejection", caught);
      if (current === scope) current = undefined;
      return scope.first;
    },
  };
}

let lateHandled = false;

/**
 * After the command: an error that comes still (a recipe's timer firing once
 * the builds are done) is told by `report` (one line; it answers the exit
 * code), never Node's stack trace, and the process ends with that code, as
 * Node's own handler would end it. Only the first is told: reporting one must
 * never raise the next (a write to a stderr whose reader is gone).
 */
export function reportLateErrors(report: (err: unknown) => Promise<number>): void {
  if (lateHandled) return;
  lateHandled = true;
  let told = false;
  const onLate = (err: unknown) => {
    if (told) return;
    told = true;
    void report(err)
      .catch(() => 2)
      .then((code) => process.exit(code));
  };
  process.on("uncaughtException", onLate);
  process.on("unhandledRejection", onLate);
}

