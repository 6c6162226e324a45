/** gc over a chain of references deeper than the call stack. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import test from "ava";
import { Store, collectGarbage } from "../src/store/index.js";

test("gc deletes a 30,000-deep chain of references, referrers first, without overflowing the stack", async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "ukb-gc-deep-"));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const store = Store.open(root);
  t.teardown(() => store.close());
  const N = 30_000;
  // Valid-looking basenames (the store's base32 alphabet has no e, o, t, u).
  const base = (i: number) => `${i.toString(32).padStart(32, "0").replace(/[eotu]/g, "a")}-p${i}`;
  const infos = [];
  for (let i = 0; i < N; i++) {
    fs.writeFileSync(store.realPath(base(i)), "x");
    infos.push({ base: base(i), contentHash: "0", size: 1, references: i > 0 ? [base(i - 1)] : [] });
  }
  store.register(infos);
  const report = await collectGarbage(store);
  t.is(report.deleted.length, N);
  t.is(store.allValid().length, 0);
  t.deepEqual(fs.readdirSync(store.storeDir), []);
});
