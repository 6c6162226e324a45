import test from "ava";
import { derivation, hostTools, type Derivation } from "../src/recipe/index.js";
import { canonicalForm, toBase32, topoOrder, CycleError, finishDrv, type DrvRecord } from "../src/graph/index.js";
import { closureOf } from "../src/recipe/derivation.js";

/** The layered graph of BENCH-GRAPH.md, with one node's env changed. */
function layered(n: number, tweak?: number) {
  const tools = hostTools(["sh"]);
  const nodes: Derivation[] = [];
  for (let i = 0; i < n; i++) {
    const l = Math.floor(i / 10);
    const p = i % 10;
    const deps: Derivation[] = l === 0 ? [] : [nodes[10 * (l - 1) + p]!, nodes[10 * (l - 1) + ((p + 1) % 10)]!];
    nodes.push(
      derivation({
        name: `node-${String(i).padStart(4, "0")}`,
        builder: `${tools}/bin/sh`,
        args: ["-c", "echo $name > $out"],
        env: { name: `node-${i}`, deps: deps.join(" "), ...(i === tweak ? { salt: "changed" } : {}) },
      }),
    );
  }
  return nodes;
}

test("identity is a pure function of the inputs", (t) => {
  const a = layered(50);
  const b = layered(50);
  t.deepEqual(a.map((d) => d.hash), b.map((d) => d.hash));
  t.deepEqual(a.map((d) => d.path), b.map((d) => d.path));
  for (const d of a) t.regex(d.path, /^\/ukb\/store\/[0-9a-df-np-sv-z]{32}-node-\d{4}$/);
});

test("changing one input's env changes exactly the hashes downstream of it", (t) => {
  const before = layered(50);
  const after = layered(50, 12);
  const downstream = new Set<number>([12]);
  for (let i = 20; i < 50; i++) {
    const l = Math.floor(i / 10);
    const p = i % 10;
    if (downstream.has(10 * (l - 1) + p) || downstream.has(10 * (l - 1) + ((p + 1) % 10))) downstream.add(i);
  }
  for (let i = 0; i < 50; i++) {
    if (downstream.has(i)) t.not(before[i]!.hash, after[i]!.hash, `node ${i} is downstream`);
    else t.is(before[i]!.hash, after[i]!.hash, `node ${i} is not downstream`);
  }
  t.true(downstream.size > 5);
});

test("interpolation records the dependency, derivations are immutable", (t) => {
  const tools = hostTools(["sh"]);
  const a = derivation({ name: "a", builder: `${tools}/bin/sh`, args: ["-c", "echo > $out"] });
  const b = derivation({ name: "b", builder: `${tools}/bin/sh`, args: ["-c", `cat ${a}/x`] });
  t.deepEqual([...b.drv.inputPaths].sort(), [a.path, tools.path].sort());
  t.deepEqual(Object.keys(b.drv.inputDrvs).sort(), [a.hash, tools.hash].sort());
  t.throws(() => {
    (b.drv.args as string[]).push("x");
  });
  t.true(Object.isFrozen(b));
});

test("multiple outputs each get a path", (t) => {
  const tools = hostTools(["sh"]);
  const k = derivation({ name: "kernel", builder: `${tools}/bin/sh`, args: [], outputs: ["out", "dbg"] });
  t.regex(k.output("dbg").path, /-kernel-dbg$/);
  t.not(k.output("dbg").path, k.path);
  const user = derivation({ name: "user", builder: `${tools}/bin/sh`, args: [`${k.output("dbg")}`] });
  t.deepEqual(user.drv.inputDrvs[k.hash], ["dbg"]);
});

test("host tools are hashed by content", (t) => {
  const sh = hostTools(["sh"]);
  t.is(sh.drv.hostTools!.length, 1);
  t.regex(sh.drv.hostTools![0]!.blake3, /^[0-9a-f]{64}$/);
  const tr = hostTools(["tr"]);
  t.not(sh.hash, tr.hash);
  const err = t.throws(() => hostTools(["surely-not-a-program-ukb"]));
  t.regex(err!.message, /not on the host's PATH/);
});

test("canonical form sorts keys and base32 uses Nix's alphabet", (t) => {
  const tools = hostTools(["sh"]);
  const d = derivation({ name: "x", builder: `${tools}/bin/sh`, env: { b: "2", a: "1" } });
  t.regex(canonicalForm(d.drv), /"env":\{"a":"1","b":"2"\}/);
  t.is(toBase32(Buffer.from([0xff])), "7z");
  t.is(toBase32(new Uint8Array(20)).length, 32);
});

test("bad derivations are refused with the recipe line", (t) => {
  const tools = hostTools(["sh"]);
  const noName = t.throws(() => derivation({ builder: `${tools}/bin/sh` } as never));
  t.regex(noName!.message, /core-identity\.test\.ts:\d+: derivation has no name/);
  const forged = t.throws(() => derivation({ name: "f", builder: "/ukb/store/00000000000000000000000000000000-fake/bin/sh" }));
  t.regex(forged!.message, /not the output of any derivation/);
  const notString = t.throws(() => derivation({ name: "g", builder: `${tools}/bin/sh`, env: { x: {} as never } }));
  t.regex(notString!.message, /env\.x must be a string or a derivation/);
});

test("a cycle in a graph (which the API cannot build) is reported by name", (t) => {
  const base = { kind: "command" as const, builder: "/bin/sh", args: [], env: {}, outputNames: ["out"], inputPaths: [] };
  const a0 = finishDrv({ ...base, name: "a", inputDrvs: {} });
  const b0 = finishDrv({ ...base, name: "b", inputDrvs: { [a0.hash]: ["out"] } });
  const a: DrvRecord = { ...a0, inputDrvs: { [b0.hash]: ["out"] } };
  const err = t.throws(() => topoOrder({ drvs: { [a.hash]: a, [b0.hash]: b0 } }, [a.hash]), { instanceOf: CycleError });
  t.regex(err!.message, /dependency cycle: a -> b -> a/);
  t.is(Object.keys(closureOf([b0])).length >= 1, true);
});
