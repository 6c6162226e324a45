/**
 * Files an evaluation depended on: recipe modules, host tools, local files.
 * The loader keys its cache of evaluated graphs on them, so a recipe is
 * evaluated again exactly when one of them changes.
 */
const files: Set<string> = ((globalThis as Record<symbol, unknown>)[Symbol.for("ukb.evalDeps")] ??= new Set<string>()) as Set<string>;

export function recordDependency(file: string): void {
  files.add(file);
}

/** Starts a new recording and returns a function that ends it with the files seen. */
export function startRecording(): () => string[] {
  files.clear();
  return () => [...files].sort();
}
