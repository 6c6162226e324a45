/** `npm run bench`: every benchmark, figures printed (no assertions). */
import os from "node:os";
import { benchCore } from "./core.js";

console.log(`# ukb benchmarks — ${new Date().toISOString()} — ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
await benchCore();
