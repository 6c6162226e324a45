// Builds the CLI bundle, dist/bundle/ukb.cjs: one CommonJS file (no ES
// module loader on the no-op path), dependencies left in node_modules; and
// dist/bundle/api.cjs, the recipe API (`import … from "ukb"`) alone, which
// the CLI requires only when it evaluates a recipe, so that a no-op realise
// does not read and deserialise it.
//
// One rewrite after esbuild: a default or namespace import of a Node builtin
// (`import fs from "node:fs"`) goes through esbuild's __toESM, which copies
// every property of the module into a new object — 30 builtins, 6 ms of a
// 145 ms no-op realise here. An object whose prototype is the module and
// whose `default` is the module answers the same reads at once.
import fs from "node:fs";
import path from "node:path";
import { build } from "esbuild";

/** An esbuild plugin: bare imports stay external, but for the packages `inside`. */
function packagesOutsideBut(inside) {
  return {
    name: "packages-outside-but",
    setup(b) {
      b.onResolve({ filter: /^[^./]/ }, (args) => {
        const name = args.path.startsWith("@") ? args.path.split("/").slice(0, 2).join("/") : args.path.split("/")[0];
        return inside.includes(name) ? undefined : { path: args.path, external: true };
      });
    },
  };
}

const root = path.resolve(import.meta.dirname, "..");
const outDir = path.join(root, "dist/bundle");
fs.rmSync(outDir, { recursive: true, force: true });

for (const [entry, name] of [["src/cli/main.ts", "ukb.cjs"], ["src/recipe/index.ts", "api.cjs"]]) {
  const outfile = path.join(outDir, name);
  const result = await build({
    entryPoints: [path.join(root, entry)],
    bundle: true,
    platform: "node",
    format: "cjs",
    // Packages stay in node_modules, except better-sqlite3's JavaScript (not its addon): every
    // command opens the store, and resolving, reading and compiling its ten files took ~6 ms of
    // a 150 ms no-op; inside the bundle they come from the V8 code cache.
    plugins: [packagesOutsideBut(["better-sqlite3"])],
    target: "node20",
    write: false,
    outfile,
    logLevel: "warning",
    // An ASCII source is a one-byte string to V8: read and checked against the code cache in half
    // the time of a two-byte one, which a single non-ASCII character in a kept comment forces.
    // Whitespace and comments go (a fifth of the bytes); names stay, for readable stack traces.
    charset: "ascii",
    minifyWhitespace: true,
    // import.meta.url, in a CommonJS file: the bundle's own URL.
    define: { "import.meta.url": "__ukb_meta_url" },
    banner: {
      js: [
        'const __ukb_meta_url = require("node:url").pathToFileURL(__filename).href;',
        "const __ukb_builtin = (m) => Object.create(m, { default: { value: m, enumerable: true } });",
      ].join("\n"),
    },
  });

  let text = result.outputFiles[0].text;
  const before = text;
  text = text.replace(/__toESM\((require\("node:[a-z_/]+"\))(?:, ?1)?\)/g, "__ukb_builtin($1)");
  if (text === before) throw new Error(`bundle ${name}: no builtin import was rewritten; has esbuild's output changed?`);
  if (/[^\x00-\x7f]/.test(text)) throw new Error(`bundle ${name}: not ASCII; has esbuild's output changed?`);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(outfile, text);
}

// What the eval cache's key names ukb's code by: the bytes of both bundles, not their times (a copy
// of ukb that sets every time to 1, as a Nix store does, must not take another copy's evaluations).
const { createHash } = await import("node:crypto");
const id = createHash("sha256");
for (const name of ["ukb.cjs", "api.cjs"]) id.update(fs.readFileSync(path.join(outDir, name)));
fs.writeFileSync(path.join(outDir, "build-id"), `${id.digest("hex")}\n`);
