/**
 * What the scheduler reports. The terminal UI, the JSON stream and the logs
 * are only listeners of these events.
 */
export type ScheduleEvent =
  | { type: "plan"; valid: number; toBuild: { name: string; path: string }[]; toSubstitute?: { name: string; path: string; cache: string }[] }
  | { type: "start"; name: string; drv: string; path: string }
  /** The builder has exited (its job slot is free); its outputs are being hashed and registered. */
  | { type: "registering"; name: string; drv: string }
  | { type: "waiting"; name: string; drv: string; reason: string }
  | { type: "done"; name: string; drv: string; path: string; ms: number; builtHere: boolean }
  | { type: "failed"; name: string; drv: string; message: string; hint?: string; logFile?: string; logTail?: readonly string[] }
  | { type: "skipped"; name: string; drv: string; reason: string }
  /** Fetching a derivation's outputs from a binary cache. */
  | { type: "substitute-start"; name: string; drv: string; path: string; cache: string }
  /** Fetched, verified and registered; `bytes` is what came over the wire (0 if another process fetched it). */
  | { type: "substituted"; name: string; drv: string; path: string; cache: string; ms: number; bytes: number }
  /** A cache skipped or a path refused; `name`/`drv` when a derivation is built locally instead. */
  | { type: "cache-warning"; cache: string; message: string; name?: string; drv?: string }
  | { type: "progress"; name: string; url: string; bytes: number; total?: number; rate: number }
  | { type: "finish"; built: number; failed: number; skipped: number; ms: number; substituted?: number };

export type Listener = (event: ScheduleEvent) => void;
