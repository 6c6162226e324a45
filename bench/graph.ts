/**
 * The synthetic layered graph of ../shared/BENCH-GRAPH.md, as a ukb recipe and
 * as a Nix expression, so both tools build the same work.
 */
import fs from "node:fs";
import path from "node:path";

export interface GraphSpec {
  n: number;
  salt: string;
  /** Each builder sleeps 0.2 s first. */
  sleep?: boolean;
}

function deps(i: number): number[] {
  const l = Math.floor(i / 10);
  const p = i % 10;
  return l === 0 ? [] : [10 * (l - 1) + p, 10 * (l - 1) + ((p + 1) % 10)];
}

/** Writes `<dir>/graph.ts`; its default export depends on the last layer. */
export function writeUkbGraph(dir: string, spec: GraphSpec): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const script = spec.sleep ? "`${t}/bin/sleep 0.2; echo $name > $out`" : '"echo $name > $out"';
  const src = `import { derivation, hostTools, type Derivation } from "ukb";
const t = hostTools(["sh"${spec.sleep ? ', "sleep"' : ""}]);
const n: Derivation[] = [];
const deps = ${JSON.stringify(Array.from({ length: spec.n }, (_, i) => deps(i)))};
for (let i = 0; i < ${spec.n}; i++) {
  const d = deps[i]!.map((j) => n[j]!);
  n.push(derivation({
    name: "node-" + String(i).padStart(4, "0"),
    builder: \`\${t}/bin/sh\`,
    args: ["-c", ${script}],
    env: { salt: ${JSON.stringify(spec.salt)}, dep0: d[0] ?? "", dep1: d[1] ?? "" },
  }));
}
export default derivation({ name: "top", builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"], env: { last: n.slice(-10).join(" ") } });
`;
  const file = path.join(dir, "graph.ts");
  fs.writeFileSync(file, src);
  return file;
}

/** Writes `<dir>/default.nix`, the same graph for nix-build. */
export function writeNixGraph(dir: string, spec: GraphSpec): string {
  fs.mkdirSync(dir, { recursive: true });
  const cmd = spec.sleep ? "/bin/sleep 0.2; echo $name > $out" : "echo $name > $out";
  const lines = [`let`, `  mk = name: deps: builtins.derivation ({ inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(cmd)} ]; salt = ${JSON.stringify(spec.salt)}; } // deps);`];
  for (let i = 0; i < spec.n; i++) {
    const d = deps(i);
    const attrs = d.map((j, k) => `dep${k} = n${j};`).join(" ");
    lines.push(`  n${i} = mk "node-${String(i).padStart(4, "0")}" { ${attrs} };`);
  }
  const last = Array.from({ length: 10 }, (_, k) => `n${spec.n - 10 + k}`).join(" ");
  lines.push(`in builtins.derivation { name = "top"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; last = [ ${last} ]; }`);
  const file = path.join(dir, "default.nix");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  return file;
}
