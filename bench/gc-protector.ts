/**
 * The other side of bench/gc.ts: a process that protects a new path every
 * 50 ms, as a realise starting does, and prints how long each protect
 * waited for the store's write lock (JSON, one line) when told to stop.
 */
import { Store } from "../src/store/index.js";

const store = Store.open(process.argv[2]!);
const waits: number[] = [];
let stop = false;
process.on("SIGTERM", () => (stop = true));
for (let i = 0; !stop; i++) {
  const started = performance.now();
  store.protect([`${i.toString(32).padStart(32, "0").replace(/[eotu]/g, "a")}-protected`]);
  waits.push(performance.now() - started);
  await new Promise((r) => setTimeout(r, 50));
}
store.close();
process.stdout.write(JSON.stringify(waits) + "\n");
