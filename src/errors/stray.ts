/**
 * Errors that no command awaits: a recipe's timer that throws, a promise
 * the recipe left rejected. Node would print a stack trace and end ukb in
 * the middle of its builds; ukb instead tells the command's listeners (a
 * realise cancels its builds, as Ctrl-C does, so nothing half-built is
 * registered; the recipe's cached evaluation is dropped) and reports the
 * error as the command's own.
 */
type Listener = (err: unknown) => void;

/** The listeners of the command under way; undefined between commands. */
let listeners: Set<Listener> | undefined;

/** Calls `listener` with an error no one awaited, while this command runs; returns what stops it. */
export function onStrayError(listener: Listener): () => void {
  const scope = listeners;
  scope?.add(listener);
  return () => scope?.delete(listener);
}

/** Starts catching stray errors for one command; `stop()` ends it and gives the first one caught. */
export function catchStrayErrors(): { stop: () => Promise<{ err: unknown } | undefined> } {
  let first: { err: unknown } | undefined;
  const scope = (listeners = new Set());
  const caught = (err: unknown) => {
    first ??= { err };
    for (const listener of scope) {
      try {
        listener(err);
      } catch {
        // A listener's own failure (a store already closed) must not hide the error itself.
      }
    }
  };
  process.on("uncaughtException", caught);
  process.on("unhandledRejection", caught);
  return {
    stop: async () => {
      // A promise rejected in the command's last turn is said to be unhandled only after it.
      await new Promise((resolve) => setImmediate(resolve));
      process.off("uncaughtException", caught);
      process.off("unhandledRejection", caught);
      if (listeners === scope) listeners = undefined;
      return first;
    },
  };
}
