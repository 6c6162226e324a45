/** `npm run bench`: every benchmark, figures printed (no assertions). */
import os from "node:os";
import { benchCore, benchEditLoop } from "./core.js";
import { hasCommand } from "./run.js";
import { benchFetch } from "./fetch.js";
import { benchCache } from "./cache.js";
import { benchGc } from "./gc.js";

console.log(`# ukb benchmarks — ${new Date().toISOString()} — ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
const only = process.argv[2];
if (!only || only === "core") await benchCore();
// The edit loop alone (benchCore runs it too).
if (only === "edit") benchEditLoop(hasCommand("nix-build"));
if (!only || only === "fetch") await benchFetch();
if (!only || only === "cache") await benchCache();
if (!only || only === "gc") await benchGc();
