/**
 * The recipe loader: a recipe and the files it imports are bundled by
 * esbuild and compiled in-process; recipes that need real ES module
 * semantics go through tsx. Either way, what a recipe means must not change.
 */
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { HELLO, ROOT, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const PARTS = (v: string, extra = "") => `import { derivation, hostTools, local } from "ukb";
const t = hostTools(["sh", "cat"]);${extra}
const data = local("./data");
export const parts = derivation({ name: "parts", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/cat \${data}/msg > $out\`], env: { v: "${v}" } });
`;

/** A folder with main.ts, which imports lib/parts.ts, which reads lib/data through local(). */
function splitRecipe(): string {
  const dir = tempDir();
  writeRecipe(dir, "main.ts", `import { parts } from "./lib/parts.js";\nexport default parts;\n`);
  fs.mkdirSync(path.join(dir, "lib/data"), { recursive: true });
  fs.writeFileSync(path.join(dir, "lib/data/msg"), "from lib\n");
  fs.writeFileSync(path.join(dir, "lib/parts.ts"), PARTS("1"));
  return dir;
}

test("a recipe split over files: local() and error lines name the imported file, and editing it invalidates the cached evaluation", async (t) => {
  const dir = splitRecipe();

  const first = await ukb(["realise", "main.ts", "--no-out-link"], { cwd: dir });
  t.is(first.code, 0, first.stderr);
  t.is(fs.readFileSync(first.stdout.trim(), "utf8"), "from lib\n", "local('./data') in lib/parts.ts resolved against another folder");

  // The cached evaluation depends on lib/parts.ts, which main.ts only imports.
  fs.writeFileSync(path.join(dir, "lib/parts.ts"), PARTS("2"));
  const second = await ukb(["realise", "main.ts", "--no-out-link"], { cwd: dir });
  t.is(second.code, 0, second.stderr);
  t.not(second.stdout.trim(), first.stdout.trim());

  // An exception on line 3 of the imported file is reported there.
  fs.writeFileSync(path.join(dir, "lib/parts.ts"), PARTS("3", `\nif (t) throw new Error("broken part");`));
  const broken = await ukb(["realise", "main.ts", "--no-out-link"], { cwd: dir });
  t.is(broken.code, 2, broken.stderr);
  t.regex(broken.stderr, /lib\/parts\.ts:3: broken part/);

  // So is a syntax error, with esbuild's words.
  fs.writeFileSync(path.join(dir, "lib/parts.ts"), PARTS("4", `\nconst = 1;`));
  const syntax = await ukb(["realise", "main.ts", "--no-out-link"], { cwd: dir });
  t.is(syntax.code, 2, syntax.stderr);
  t.regex(syntax.stderr, /lib\/parts\.ts:3: syntax error: /);
});

test("a recipe that needs ES module semantics (top-level await, import.meta) is evaluated through tsx, to the same result", async (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, "package.json"), `{ "type": "module" }\n`);
  const body = (esm: boolean) => `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh"]);
const word = ${esm ? 'await Promise.resolve(new URL("./esm.ts", import.meta.url).pathname.endsWith("esm.ts") ? "same" : "wrong")' : '"same"'};
export default derivation({ name: "word", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${word} > $out\`] });
`;
  writeRecipe(dir, "esm.ts", body(true));
  writeRecipe(dir, "plain.ts", body(false));
  const esm = await ukb(["realise", "esm.ts", "--no-out-link"], { cwd: dir });
  t.is(esm.code, 0, esm.stderr);
  const plain = await ukb(["realise", "plain.ts", "--no-out-link"], { cwd: dir });
  t.is(plain.code, 0, plain.stderr);
  t.is(esm.stdout, plain.stdout);
  t.is(fs.readFileSync(esm.stdout.trim(), "utf8"), "same\n");
});

test("UKB_RECIPE_LOADER=tsx evaluates through tsx: the same graph as the bundled loader", async (t) => {
  const dir = splitRecipe();
  const bundled = await ukb(["show", "main.ts", "--store", "one"], { cwd: dir });
  const viaTsx = await ukb(["show", "main.ts", "--store", "two"], { cwd: dir, env: { ...process.env, UKB_RECIPE_LOADER: "tsx" } });
  t.is(bundled.code, 0, bundled.stderr);
  t.is(viaTsx.code, 0, viaTsx.stderr);
  t.is(bundled.stdout, viaTsx.stdout);
});

test("what only a module loader gives still works: a recipe library requiring 'ukb', an ES-module-only package, a TypeScript package, a helper's own __dirname", async (t) => {
  const dir = tempDir();
  const write = (rel: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  };
  // A CommonJS library of recipes, installed in node_modules, that requires "ukb" itself.
  write("node_modules/recipe-lib/package.json", `{ "name": "recipe-lib", "main": "index.js" }\n`);
  write("node_modules/recipe-lib/index.js", `const { derivation } = require("ukb");\nexports.shout = (tools, word) => derivation({ name: "lib-" + word, builder: tools + "/bin/sh", args: ["-c", "echo " + word + " > $out"] });\n`);
  // A workspace package whose sources are TypeScript.
  write("node_modules/ts-pkg/package.json", `{ "name": "ts-pkg", "main": "index.ts" }\n`);
  write("node_modules/ts-pkg/index.ts", `export const word: string = "typed";\n`);
  // A helper that reads a file next to itself.
  write("sub/word.txt", "beside\n");
  write("sub/helper.ts", `import fs from "node:fs";\nimport path from "node:path";\nexport const beside = fs.readFileSync(path.join(__dirname, "word.txt"), "utf8").trim();\n`);
  const recipes = {
    "lib.ts": `import { hostTools } from "ukb";\nimport { shout } from "recipe-lib";\nexport default shout(\`\${hostTools(["sh"])}\`, "lib");\n`,
    "esm.ts": `import { derivation, hostTools } from "ukb";\nimport { word } from "esm-only";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: word, builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
    "typed.ts": `import { derivation, hostTools } from "ukb";\nimport { word } from "ts-pkg";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: word, builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
    "beside.ts": `import { derivation, hostTools } from "ukb";\nimport { beside } from "./sub/helper.js";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: beside, builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
    // A helper that requires a file by a computed name, relative to itself.
    "resolved.ts": `import { derivation, hostTools } from "ukb";\nimport { found } from "./sub/finder.js";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: found, builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
    // The default export of an ES module package that Node 20.19+ lets require() load (as its namespace).
    "esmdefault.ts": `import { derivation, hostTools } from "ukb";\nimport pkg from "esm-default";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: pkg.shout("x"), builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
    // A recipe that catches a failed require and goes on: it must not get its fallback value.
    "optional.ts": `import { derivation, hostTools } from "ukb";\nlet word = "fallback";\ntry { word = require("ts-pkg").word; } catch {}\nconst t = hostTools(["sh"]);\nexport default derivation({ name: word, builder: \`\${t}/bin/sh\`, args: ["-c", "echo > $out"] });\n`,
  };
  write("sub/finder.ts", `const name = "./data.json";\nexport const found: string = require(name).word;\n`);
  write("sub/data.json", `{ "word": "found" }\n`);
  write("data.json", `{ "word": "wrong" }\n`);
  // esm-only can only be imported by an ES module: that recipe lives in a "type": "module" package.
  write("esm/package.json", `{ "type": "module" }\n`);
  write("esm/node_modules/esm-only/package.json", `{ "name": "esm-only", "type": "module", "exports": { "import": "./index.js" } }\n`);
  write("esm/node_modules/esm-only/index.js", `export const word = "esm";\n`);
  write("esm/node_modules/esm-default/package.json", `{ "name": "esm-default", "type": "module", "exports": "./index.js" }\n`);
  write("esm/node_modules/esm-default/index.js", `export default { shout: (s) => s.toUpperCase() };\n`);
  for (const [name, source] of Object.entries(recipes)) {
    const file = name.startsWith("esm") ? `esm/${name}` : name;
    write(file, source);
    const r = await ukb(["show", file, "--store", `store-${name}`], { cwd: dir });
    t.is(r.code, 0, `${file}: ${r.stderr}`);
    const viaTsx = await ukb(["show", file, "--store", `tsx-${name}`], { cwd: dir, env: { ...process.env, UKB_RECIPE_LOADER: "tsx" } });
    t.is(viaTsx.code, 0, `${file} through tsx: ${viaTsx.stderr}`);
    t.is(r.stdout, viaTsx.stdout, file);
    t.notRegex(r.stdout, /fallback|wrong/, file);
  }
});

const CYCLE_A = `import { derivation, hostTools } from "ukb";
import { b } from "./cb.ts";
const t = hostTools(["sh"]);
export const a = derivation({ name: "a", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${b} > $out\`] });
`;
const CYCLE_B = `import { derivation, hostTools } from "ukb";
import { a } from "./ca.ts";
const t = hostTools(["sh"]);
export const b = derivation({ name: "b", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${a} > $out\`] });
`;

for (const esm of [false, true]) {
  test(`recipe files that import each other in a cycle: the reading line, exit 2, nothing built (${esm ? "ES module" : "CommonJS"} folder)`, async (t) => {
    const dir = tempDir();
    if (esm) fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
    writeRecipe(dir, "ca.ts", CYCLE_A);
    writeRecipe(dir, "cb.ts", CYCLE_B);
    const r = await ukb(["realise", "ca.ts", "--store", "s", "--no-out-link"], { cwd: dir });
    t.is(r.code, 2, r.stderr);
    t.is(r.stdout, "");
    t.regex(r.stderr, /^ukb: error: cb\.ts:4: Cannot access 'a' before initialization \(recipe files import each other in a cycle/m);
    t.false(fs.existsSync(path.join(dir, "s", "store")) && fs.readdirSync(path.join(dir, "s", "store")).length > 0);
  });

  test(`a name imported that no module exports: its line, exit 2 (${esm ? "ES module" : "CommonJS"} folder)`, async (t) => {
    const dir = tempDir();
    if (esm) fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
    writeRecipe(dir, "lib.ts", `export const word = "x";\n`);
    writeRecipe(dir, "api.ts", `import { derivation, hostTools, nosuch } from "ukb";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "m", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${nosuch} > $out\`] });\n`);
    writeRecipe(dir, "own.ts", `import { derivation, hostTools } from "ukb";\nimport { wrod } from "./lib.ts";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "m", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${wrod} > $out\`] });\n`);
    const api = await ukb(["realise", "api.ts", "--store", "s", "--no-out-link"], { cwd: dir });
    t.is(api.code, 2, api.stderr);
    t.regex(api.stderr, /^ukb: error: api\.ts:1: "ukb" has no export named 'nosuch'$/m);
    const own = await ukb(["realise", "own.ts", "--store", "s", "--no-out-link"], { cwd: dir });
    t.is(own.code, 2, own.stderr);
    t.regex(own.stderr, /^ukb: error: own\.ts:2: "lib\.ts" has no export named 'wrod'$/m);
  });
}

test("files that import each other without reading early (functions) still evaluate", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "main.ts", `import { derivation, hostTools } from "ukb";\nimport { shout } from "./util.ts";\nexport const t = hostTools(["sh"]);\nexport const name = "greeting";\nexport default derivation({ name: shout(), builder: \`\${t}/bin/sh\`, args: ["-c", "echo hi > $out"] });\n`);
  writeRecipe(dir, "util.ts", `import { name } from "./main.ts";\nexport function shout(): string { return name.toUpperCase(); }\n`);
  const r = await ukb(["realise", "main.ts", "--store", "s", "--no-out-link"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /-GREETING\n$/);
});

test("ukb init: recipes in a folder of their own type-check with tsc as an editor would (the API's types, Node's), and a mistake is caught", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "hello.ts", HELLO);
  writeRecipe(dir, "files.ts", `import fs from "node:fs";\nimport { derivation, hostTools, local } from "ukb";\nconst t = hostTools(["sh"]);\nexport default derivation({ name: "files", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo \${fs.existsSync("x")} > $out\`], env: { SRC: local("./hello.ts") } });\n`);
  const tsc = (cwd: string) => ukb([path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", cwd], { cwd, command: process.execPath });
  const before = await tsc(dir);
  t.not(before.code, 0, "types found before ukb init: the test proves nothing");
  const init = await ukb(["init"], { cwd: dir });
  t.is(init.code, 0, init.stderr);
  t.is(fs.realpathSync(path.join(dir, "node_modules/ukb")), fs.realpathSync(ROOT));
  const checked = await tsc(dir);
  t.is(checked.code, 0, checked.stdout + checked.stderr);
  writeRecipe(dir, "wrong.ts", `import { derivation } from "ukb";\nexport default derivation({ name: 42, builder: "/bin/sh" });\n`);
  const wrong = await tsc(dir);
  t.not(wrong.code, 0);
  t.regex(wrong.stdout, /wrong\.ts\(2,\d+\): error TS2322/);
  // Again: nothing to do; a tsconfig.json of the user's own is left alone.
  fs.writeFileSync(path.join(dir, "tsconfig.json"), "{}\n");
  const again = await ukb(["init"], { cwd: dir });
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, /already links to/);
  t.is(fs.readFileSync(path.join(dir, "tsconfig.json"), "utf8"), "{}\n");
});

test("every export of the recipe API, and every public member of its classes, has TSDoc (what an editor shows)", async (t) => {
  const { default: ts } = await import("typescript");
  const entry = path.join(ROOT, "src/recipe/index.ts");
  const program = ts.createProgram([entry], { strict: true, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, target: ts.ScriptTarget.ES2022, noEmit: true });
  const checker = program.getTypeChecker();
  const undocumented: string[] = [];
  const documented = (symbol: import("typescript").Symbol) => ts.displayPartsToString(symbol.getDocumentationComment(checker)).trim().length > 0;
  const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!);
  t.true(exports.length > 20, "the API's exports were not found");
  for (const exported of exports) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    if (!documented(symbol)) undocumented.push(exported.name);
    if (!(symbol.flags & ts.SymbolFlags.Class)) continue;
    for (const member of checker.getDeclaredTypeOfSymbol(symbol).getProperties()) {
      const declaration = member.declarations?.[0];
      if (!declaration || ts.getCombinedModifierFlags(declaration) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
      if (!documented(member)) undocumented.push(`${exported.name}.${member.name}`);
    }
  }
  t.deepEqual(undocumented, []);
});
