/**
 * What the scheduler reports. The terminal UI, the JSON stream and the logs
 * are only listeners of these events.
 */
export type ScheduleEvent =
  | { type: "plan"; valid: number; toBuild: { name: string; path: string }[] }
  | { type: "start"; name: string; drv: string; path: string }
  | { type: "waiting"; name: string; drv: string; reason: string }
  | { type: "done"; name: string; drv: string; path: string; ms: number; builtHere: boolean }
  | { type: "failed"; name: string; drv: string; message: string; hint?: string; logFile?: string; logTail?: readonly string[] }
  | { type: "skipped"; name: string; drv: string; reason: string }
  | { type: "finish"; built: number; failed: number; skipped: number; ms: number };

export type Listener = (event: ScheduleEvent) => void;
