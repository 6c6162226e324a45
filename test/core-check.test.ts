import test from "ava";
import { tempDir, ukb, writeRecipe, HELLO } from "./helpers/ukb.js";

test("ukb check: a reproducible graph is bit-identical when rebuilt", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  const r = await ukb(["check", "hello.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /identical {2}greeting/);
  t.regex(r.stdout, /identical {2}shout/);
  t.regex(r.stdout, /every rebuilt output is bit-identical/);
});

test("ukb check: a non-deterministic builder is caught with the file and offset", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "random.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "mkdir", "cat"]);
export default derivation({ name: "stamp", builder: \`\${t}/bin/sh\`, args: ["-c", \`
  \${t}/bin/mkdir -p $out/share; echo "same prefix" > $out/share/a; echo "build id:" > $out/share/b
  \${t}/bin/cat /proc/sys/kernel/random/uuid >> $out/share/b\`] });
`,
  );
  const r = await ukb(["check", "random.ts", "--json"], { cwd: dir });
  t.is(r.code, 1);
  const line = JSON.parse(r.stdout.trim().split("\n").pop()!) as { name: string; identical: boolean; difference: { file: string; offset: number } };
  t.is(line.name, "stamp");
  t.false(line.identical);
  t.is(line.difference.file, "share/b");
  t.true(line.difference.offset >= "build id:\n".length);
});
