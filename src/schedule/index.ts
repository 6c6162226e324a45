export { makePlan, type Plan } from "./plan.js";
export { execute, type ExecuteOptions, type ExecuteResult } from "./execute.js";
export type { ScheduleEvent, Listener } from "./events.js";
