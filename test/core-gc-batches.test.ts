/**
 * gc deletes in batches, each decided again: what another process protects
 * or comes to refer to between two batches stays, with its closure.
 */
import fs from "node:fs";
import path from "node:path";
import test from "ava";
import { Store, collectGarbage, verifyStore } from "../src/store/index.js";
import { hashTree } from "../src/store/archive.js";
import { tempDir, ukb } from "./helpers/ukb.js";

/** Valid-looking basenames (the store's base32 alphabet has no e, o, t, u). */
const base = (i: number) => `${i.toString(32).padStart(32, "0").replace(/[eotu]/g, "a")}-p${i}`;

/**
 * A store of `n` dead paths in a chain: p(i) refers to p(i-1), so gc deletes
 * them from the top of the chain down, p(n-1) first.
 */
async function chainStore(t: { teardown(fn: () => void): void }, n: number): Promise<{ root: string; store: Store }> {
  const root = tempDir("ukb-gc-batches-");
  const store = Store.open(root);
  t.teardown(() => store.close());
  const infos = [];
  for (let i = 0; i < n; i++) {
    fs.writeFileSync(store.realPath(base(i)), `content ${i}`);
    const { blake3, size } = await hashTree(store.realPath(base(i)));
    infos.push({ base: base(i), contentHash: blake3, size, references: i > 0 ? [base(i - 1)] : [] });
  }
  store.register(infos);
  return { root, store };
}

test("a path another process protects between two gc batches stays, with everything it refers to", async (t) => {
  const { root, store } = await chainStore(t, 40);
  const other = Store.open(root);
  t.teardown(() => other.close());
  const progress: number[] = [];
  const report = await collectGarbage(store, {
    batchSize: 10,
    onProgress: (_batch, gone) => {
      progress.push(gone);
      // After the first batch (p39..p30 gone), a realise protects p25: p25..p0 must stay.
      if (gone === 10) other.protect([base(25)]);
    },
  });
  t.deepEqual(progress, [10, 14]);
  t.is(report.deleted.length, 14);
  t.is(report.kept, 26);
  for (let i = 0; i < 40; i++) {
    t.is(store.isValid(base(i)), i <= 25, `p${i}`);
    t.is(fs.existsSync(store.realPath(base(i))), i <= 25, `files of p${i}`);
  }
  t.deepEqual((await verifyStore(store)).problems, []);
});

test("a path registered between two gc batches that refers to a dead one keeps it: no dangling reference", async (t) => {
  const { store, root } = await chainStore(t, 40);
  const other = Store.open(root);
  t.teardown(() => other.close());
  const newcomer = `${"z".repeat(32)}-newcomer`;
  const report = await collectGarbage(store, {
    batchSize: 10,
    onProgress: (_batch, gone) => {
      if (gone !== 10) return;
      // A maker that did not protect what it refers to (every ukb path does; this one stands
      // for one that did not): gc must not leave it pointing at a deleted path.
      fs.writeFileSync(other.realPath(newcomer), "x");
      other.register([{ base: newcomer, contentHash: "0", size: 1, references: [base(20)] }]);
    },
  });
  // The newcomer was not in gc's plan, so it stays; the next batch (p29..p20) would have
  // deleted p20 under it: p20 stays, with what it refers to.
  t.true(store.isValid(newcomer));
  for (let i = 0; i < 40; i++) t.is(store.isValid(base(i)), i <= 20, `p${i}`);
  t.is(report.deleted.length, 19);
  for (const b of store.allValid()) for (const r of store.info(b)!.references) t.true(store.isValid(r), `${b} refers to ${r}`);
});

test("two collections at once: one waits for the other; every path deleted once, none reported twice", async (t) => {
  const { store, root } = await chainStore(t, 40);
  const other = Store.open(root);
  t.teardown(() => other.close());
  const slow = { batchSize: 5, onProgress: () => new Promise<void>((r) => setTimeout(r, 10)) };
  const [a, b] = await Promise.all([collectGarbage(store, slow), collectGarbage(other, slow)]);
  t.is(a.deleted.length + b.deleted.length, 40);
  t.is(new Set([...a.deleted, ...b.deleted]).size, 40);
  t.deepEqual(store.allValid(), []);
  t.deepEqual(fs.readdirSync(store.storeDir), []);
});

test("two ukb store gc processes at once: both succeed, each path deleted by one of them", async (t) => {
  const { root } = await chainStore(t, 3000);
  const [a, b] = await Promise.all([ukb(["store", "gc", "--store", root]), ukb(["store", "gc", "--store", root])]);
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  const deleted = (r: { stdout: string }) => r.stdout.split("\n").filter((l) => l.startsWith("deleted "));
  const all = [...deleted(a), ...deleted(b)];
  t.is(all.length, 3000);
  t.is(new Set(all).size, 3000);
  t.deepEqual(fs.readdirSync(path.join(root, "store")), []);
});
