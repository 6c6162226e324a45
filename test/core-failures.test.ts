import test from "ava";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { UKB, events, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

const header = `import { derivation, hostTools } from "ukb";\nconst t = hostTools(["sh", "bash", "cat", "touch", "sleep"]);\n`;
const sh = (name: string, script: string) => `derivation({ name: "${name}", builder: \`\${t}/bin/sh\`, args: ["-c", ${JSON.stringify(script)}] })`;

async function storeIsClean(t: import("ava").ExecutionContext, dir: string) {
  const v = await ukb(["store", "verify"], { cwd: dir });
  t.is(v.code, 0, v.stdout + v.stderr);
  t.regex(v.stdout, /all valid/);
}

test("a failing builder: name, exit status and the log's last lines; exit 1; nothing registered", async (t) => {
  const dir = tempDir();
  const lines = Array.from({ length: 40 }, (_, i) => `echo line-${i}`).join("; ");
  writeRecipe(dir, "fail.ts", `${header}export default ${sh("broken", `${lines}; echo partial > $out; exit 3`)};\n`);
  const r = await ukb(["realise", "fail.ts"], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /build of 'broken' failed: exit status 3/);
  t.regex(r.stderr, /last 25 log lines/);
  t.regex(r.stderr, /line-39/);
  t.notRegex(r.stderr, /line-14\n/);
  t.false(fs.existsSync(path.join(dir, "result")));
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")).filter((n) => n.endsWith("-broken")), []);
  await storeIsClean(t, dir);
});

test("a builder that writes nothing to $out fails clearly", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "empty.ts", `${header}export default ${sh("lazy", "echo did nothing")};\n`);
  const r = await ukb(["realise", "empty.ts"], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /build of 'lazy' failed: the builder succeeded but did not create its output 'out'/);
  await storeIsClean(t, dir);
});

test("an output the store cannot keep (a name that is not UTF-8, a named pipe) fails the build, named, with nothing registered", async (t) => {
  const dir = tempDir();
  const tools = `const m = hostTools(["sh", "mkdir", "mkfifo", "printf", "ln"]);\n`;
  writeRecipe(
    dir,
    "odd.ts",
    `${header}${tools}export const names = derivation({ name: "names", builder: \`\${m}/bin/sh\`, args: ["-c", \`\${m}/bin/mkdir -p $out/sub; echo x > "$out/sub/$(\${m}/bin/printf 'a\\\\377')"\`] });
export const link = derivation({ name: "link", builder: \`\${m}/bin/sh\`, args: ["-c", \`\${m}/bin/mkdir $out; \${m}/bin/ln -s "$(\${m}/bin/printf 'b\\\\376')" $out/l\`] });
export const fifo = derivation({ name: "fifo", builder: \`\${m}/bin/sh\`, args: ["-c", \`\${m}/bin/mkdir $out; \${m}/bin/mkfifo $out/p\`] });
`,
  );
  const names = await ukb(["realise", "odd.ts", "-A", "names"], { cwd: dir });
  t.is(names.code, 1, names.stderr);
  t.regex(names.stderr, /^ukb: error: build of 'names' failed: its output 'out' holds a file name that is not UTF-8, 'a\\xff' in sub\/: the store keeps UTF-8 names only$/m);
  t.notRegex(names.stderr, /\n\s+at /, "no stack trace");
  const link = await ukb(["realise", "odd.ts", "-A", "link"], { cwd: dir });
  t.is(link.code, 1, link.stderr);
  t.regex(link.stderr, /^ukb: error: build of 'link' failed: its output 'out' holds a symlink whose target is not UTF-8, 'b\\xfe' \(l\): the store keeps UTF-8 names only$/m);
  const fifo = await ukb(["realise", "odd.ts", "-A", "fifo"], { cwd: dir });
  t.is(fifo.code, 1, fifo.stderr);
  t.regex(fifo.stderr, /^ukb: error: build of 'fifo' failed: its output 'out' holds a named pipe, p: the store keeps files, folders and symlinks only$/m);
  await storeIsClean(t, dir);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")).filter((n) => !n.endsWith("-host-tools")), []);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/tmp")), []);
});

test("a killed builder is reported as killed", async (t) => {
  // Killed from outside, as the OOM killer would: the builder is PID 1 of its sandbox (as in
  // Nix's), which its own "kill -9 $$" cannot kill.
  const dir = tempDir();
  const marker = `${process.pid}${Date.now() % 100000}`;
  const victim = `derivation({ name: "victim", builder: \`\${t}/bin/sh\`, args: ["-c", \`echo x > $out; exec \${t}/bin/sleep 600.${marker}\`] })`;
  writeRecipe(dir, "killed.ts", `${header}export default ${victim};\n`);
  const r = ukb(["realise", "killed.ts"], { cwd: dir });
  let pid: number | undefined;
  for (let i = 0; i < 600 && pid === undefined; i++) {
    await new Promise((res) => setTimeout(res, 100));
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(`\u0000600.${marker}`)) pid = Number(entry);
      } catch {
        // gone meanwhile
      }
    }
  }
  t.truthy(pid, "the builder never started");
  process.kill(pid!, "SIGKILL");
  const result = await r;
  t.is(result.code, 1);
  t.regex(result.stderr, /build of 'victim' failed: (killed by SIGKILL|exit status 137)/);
  await storeIsClean(t, dir);
});

test("--keep-going builds what does not depend on the failure", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "partial.ts",
    `${header}const bad = ${sh("bad", "exit 1")};
const good = ${sh("good", "sleep 0.3; echo ok > $out")};
export default derivation({ name: "top", builder: \`\${t}/bin/sh\`, args: ["-c", \`cat \${bad} \${good} > $out\`] });
`,
  );
  const r = await ukb(["realise", "partial.ts", "--keep-going", "--json"], { cwd: dir });
  t.is(r.code, 1);
  const ev = events(r.stderr);
  t.truthy(ev.find((e) => e.type === "done" && e.name === "good"));
  t.truthy(ev.find((e) => e.type === "failed" && e.name === "bad"));
  t.truthy(ev.find((e) => e.type === "skipped" && e.name === "top"));
});

test("on a terminal: a live status line (built, running, waiting, failed, skipped, the names running, the time), redrawn in place; the failure and a summary on lines of their own", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "tty.ts",
    `${header}const step = (name: string, script: string) => derivation({ name, builder: \`\${t}/bin/sh\`, args: ["-c", script] });
const bad = step("bad", \`\${t}/bin/sleep 0.3; exit 1\`);
const slow1 = step("slow1", \`\${t}/bin/sleep 0.6; echo 1 > $out\`);
const slow2 = step("slow2", \`\${t}/bin/sleep 0.6; echo 2 > $out\`);
const after = step("after", \`\${t}/bin/cat \${bad} > $out\`);
export default step("top", \`\${t}/bin/cat \${slow1} \${slow2} \${after} > $out\`);
`,
  );
  // util-linux's script gives ukb a pseudo-terminal for stdout and stderr, and keeps what it wrote.
  const typescript = path.join(dir, "typescript");
  const command = `${process.execPath} ${UKB} realise tty.ts --keep-going --jobs 2 --no-out-link`;
  const r = await ukb(["-qfec", command, typescript], { cwd: dir, command: "script" });
  t.is(r.code, 1, r.stderr);
  const screen = fs.readFileSync(typescript, "latin1");
  const statuses = screen.split("\r\x1b[2K").map((s) => s.split("\n")[0]!).filter((s) => s.startsWith("["));
  t.true(statuses.length >= 3, screen);
  // (host-tools, bad, slow1, slow2, after, top: six to build; host-tools first, then two at a time.)
  const twoRunning = statuses.filter((s) => /^\[1\/6 built, 2 running, 3 waiting\] \d+\.\ds (bad|slow1|slow2) (bad|slow1|slow2)$/.test(s));
  // Redrawn while nothing happens: the time goes on.
  t.true(new Set(twoRunning.map((s) => /\] (\S+)/.exec(s)![1])).size >= 2, statuses.join("\n"));
  t.true(statuses.some((s) => /^\[\d\/6 built, \d running, \d waiting, 1 failed, 2 skipped\] /.test(s)), statuses.join("\n"));
  t.false(statuses.some((s) => / (\d) waiting, 1 failed, 2 skipped/.test(s) && Number(/(\d) waiting/.exec(s)![1]) > 1), "skipped ones still counted as waiting");
  t.regex(screen, /build of 'bad' failed: exit status 1/);
  t.regex(screen, /built 3, 1 failed, 2 skipped in \d+\.\ds\r?\n/);
});

test("bad recipes: one line naming the file (and line), exit 2, nothing built", async (t) => {
  const dir = tempDir();
  const cases: Array<[string, string, RegExp]> = [
    ["syntax.ts", `${header}export default derivation({ name: "x", builder: \n`, /syntax\.ts:\d+: syntax error/],
    ["noname.ts", `${header}\n\nexport default derivation({ builder: \`\${t}/bin/sh\` } as any);\n`, /noname\.ts:5: derivation has no name/],
    ["forged.ts", `${header}export default derivation({ name: "f", builder: "/ukb/store/0000000000000000000000000000000a-x/bin/sh" });\n`, /forged\.ts:3: .*not the output of any derivation/],
    ["notdrv.ts", `${header}export default derivation({ name: "n", builder: \`\${t}/bin/sh\`, args: [{ not: "a derivation" } as any] });\n`, /notdrv\.ts:3: derivation 'n': args\[0\] must be a string or a derivation/],
    ["throws.ts", `${header}const x: any = undefined;\nexport default x.nope;\n`, /throws\.ts:4: Cannot read properties of undefined/],
    ["noexport.ts", `${header}export const only = ${sh("only", "echo > $out")};\n`, /noexport\.ts: has no default export \(exports: only\)/],
    ["nul.ts", `${header}export default derivation({ name: "z", builder: \`\${t}/bin/sh\`, args: ["-c", "echo a\\u0000b > $out"] });\n`, /nul\.ts:3: derivation 'z': args\[1\] holds a NUL byte/],
    ["hostbuilder.ts", `${header}export default derivation({ name: "h", builder: "/usr/bin/python3", args: ["-c", "pass"] });\n`, /hostbuilder\.ts:3: derivation 'h': builder '\/usr\/bin\/python3' is not in the store; host programs reach a build through hostTools/],
    ["dotdot.ts", `${header}export default derivation({ name: "d", builder: \`\${t}/../../usr/bin/perl\` });\n`, /dotdot\.ts:3: derivation 'd': builder '\/ukb\/store\/.*\/\.\.\/\.\.\/usr\/bin\/perl' is not in the store/],
    ["sparse.ts", `${header}export default derivation({ name: "s", builder: \`\${t}/bin/sh\`, args: ["-c", , "x"] as any });\n`, /sparse\.ts:3: derivation 's': args\[1\] must be a string or a derivation, not undefined/],
    ["outeq.ts", `${header}export default derivation({ name: "o", builder: \`\${t}/bin/sh\`, outputs: ["a=b"] });\n`, /outeq\.ts:3: derivation 'o': an output cannot be named 'a=b'/],
    ["outhome.ts", `${header}export default derivation({ name: "o", builder: \`\${t}/bin/sh\`, outputs: ["out", "HOME"] });\n`, /outhome\.ts:3: derivation 'o': an output cannot be named 'HOME'/],
    ["longout.ts", `${header}export default derivation({ name: "n".repeat(180), builder: \`\${t}/bin/sh\`, outputs: ["out", "l".repeat(100)] });\n`, /longout\.ts:3: .*makes a store path's file name 314 characters long; at most 255 fit/],
    ["longname.ts", `${header}export default derivation({ name: "x".repeat(100000), builder: \`\${t}/bin/sh\` });\n`, /longname\.ts:3: derivation name 'x{77}\.\.\.' is 100000 characters long; at most 180/],
    ["proto.ts", `${header}export default derivation({ name: "p", builder: \`\${t}/bin/sh\`, env: JSON.parse('{"__proto__": "x"}') });\n`, /proto\.ts:3: derivation 'p': '__proto__' is not a valid environment variable name/],
    ["epoch.ts", `${header}export default derivation({ name: "e", builder: \`\${t}/bin/sh\`, env: { SOURCE_DATE_EPOCH: "1e300" } });\n`, /epoch\.ts:3: derivation 'e': env\.SOURCE_DATE_EPOCH must be whole seconds since 1970/],
    ["promise.ts", `${header}export default Promise.resolve(${sh("p", "echo > $out")});\n`, /promise\.ts: export 'default' is a Promise, not a derivation \(await it/],
  ];
  for (const [file, source, pattern] of cases) {
    writeRecipe(dir, file, source);
    const r = await ukb(["realise", file], { cwd: dir });
    t.is(r.code, 2, `${file}: ${r.stderr}`);
    t.regex(r.stderr, pattern, file);
    t.true(r.stderr.trim().split("\n").length <= 2, `${file}: short message:\n${r.stderr}`);
  }
  const missingAttr = await ukb(["realise", "noexport.ts", "-A", "other"], { cwd: dir });
  t.is(missingAttr.code, 2);
  t.regex(missingAttr.stderr, /has no derivation export 'other' \(exports: only\)/);
  // Names every object has are no exports of a recipe.
  for (const attr of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    for (const command of ["realise", "show", "log"]) {
      const r = await ukb([command, "noexport.ts", "-A", attr], { cwd: dir });
      t.is(r.code, 2, `${command} -A ${attr}: ${r.stderr}`);
      t.regex(r.stderr, new RegExp(`has no derivation export '${attr}' \\(exports: only\\)`), `${command} -A ${attr}`);
    }
  }
  const missingFile = await ukb(["realise", "nope.ts"], { cwd: dir });
  t.is(missingFile.code, 2);
  t.regex(missingFile.stderr, /nope\.ts: no such recipe file/);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")), []);
});

test("an error no one awaits (a recipe's timer, a promise it left rejected): the builds are cancelled, the recipe's line named, exit 2, every run", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "timer.ts", `${header}setTimeout(() => { throw new Error("late boom"); }, 300);\nexport default derivation({ name: "slow", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 60; echo > $out\`] });\n`);
  const started = Date.now();
  const late = await ukb(["realise", "timer.ts"], { cwd: dir });
  t.is(late.code, 2, late.stderr);
  t.regex(late.stderr, /ukb: error: timer\.ts:3: late boom \(an error no one awaited/);
  t.notRegex(late.stderr, /\n\s+at /, "no stack trace");
  t.true(Date.now() - started < 30_000, "the 60 s build was cancelled");
  // A timer that fires before any build has started (at once, or on a loaded machine): none starts.
  writeRecipe(dir, "early.ts", `${header}setTimeout(() => { throw new Error("early boom"); }, 0);\nexport default derivation({ name: "slow", builder: \`\${t}/bin/sh\`, args: ["-c", \`\${t}/bin/sleep 60; echo > $out\`] });\n`);
  // One that fires once the builds are done: said in one line all the same, exit 2.
  writeRecipe(dir, "after.ts", `${header}setTimeout(() => { throw new Error("after boom"); }, 1500);\nexport default ${sh("quick", "echo > $out")};\n`);
  const after = await ukb(["realise", "after.ts", "--no-out-link"], { cwd: dir });
  t.is(after.code, 2, after.stderr);
  t.regex(after.stderr, /ukb: error: after\.ts:3: after boom \(an error no one awaited/);
  t.notRegex(after.stderr, /\n\s+at /, "no stack trace");
  const early = await ukb(["realise", "early.ts"], { cwd: dir });
  t.is(early.code, 2, early.stderr);
  t.regex(early.stderr, /ukb: error: early\.ts:3: early boom \(an error no one awaited/);
  writeRecipe(dir, "rejected.ts", `${header}Promise.reject(new Error("left rejected"));\nexport default ${sh("r", "echo > $out")};\n`);
  for (const run of [1, 2]) {
    const r = await ukb(["realise", "rejected.ts"], { cwd: dir });
    t.is(r.code, 2, `run ${run}: ${r.stderr}`);
    t.regex(r.stderr, /ukb: error: rejected\.ts:3: left rejected/, `run ${run}`);
  }
  await storeIsClean(t, dir);
  t.deepEqual(fs.readdirSync(path.join(dir, "cache/store")).filter((n) => !n.endsWith("-host-tools") && !n.endsWith("-quick")), []);
});

test("a build cannot reach the network, the host or its inputs", async (t) => {
  const dir = tempDir();
  const server = net.createServer((s) => s.end("reached\n"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  t.teardown(() => server.close());
  const hostFile = path.join(dir, "host-secret");
  fs.writeFileSync(hostFile, "secret");
  writeRecipe(
    dir,
    "escape.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["bash", "cat", "touch"]);
const input = derivation({ name: "input", builder: \`\${t}/bin/bash\`, args: ["-c", "echo data > $out"] });
export default derivation({ name: "prober", builder: \`\${t}/bin/bash\`, args: ["-c", \`
  try() { if "$@" 2>/dev/null; then echo "$1 $2 $3: allowed"; else echo "$1 $2 $3: denied"; fi; }
  {
    try \${t}/bin/bash -c "echo hi > /dev/tcp/127.0.0.1/${port}"
    try \${t}/bin/cat ${hostFile}
    try \${t}/bin/touch \${input}
    try \${t}/bin/touch /usr/ukb-escape
    try \${t}/bin/touch /ukb-root-file
    try \${t}/bin/cat /etc/passwd
    echo "PATH=$PATH HOME=$HOME TZ=$TZ LC_ALL=$LC_ALL SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH UKB_CORES=$UKB_CORES PWD=$(pwd)"
    echo "USER=[$USER] LEAK=[$UKB_TEST_LEAK]"
  } > $out\`] });
`,
  );
  const r = await ukb(["realise", "escape.ts", "--cores", "3"], { cwd: dir, env: { USER: "someone", UKB_TEST_LEAK: "leaked" } });
  t.is(r.code, 0, r.stderr);
  const report = fs.readFileSync(r.stdout.trim(), "utf8");
  t.notRegex(report, /allowed/, report);
  t.is((report.match(/denied/g) ?? []).length, 6, report);
  t.regex(report, /PATH=\/path-not-set HOME=\/homeless-shelter TZ=UTC LC_ALL=C SOURCE_DATE_EPOCH=1 UKB_CORES=3 PWD=\/build/);
  t.regex(report, /USER=\[\] LEAK=\[\]/);
  t.false(fs.existsSync("/usr/ukb-escape"));
});

test("outputs are normalised: fixed mtimes, read-only, no setuid", async (t) => {
  const dir = tempDir();
  writeRecipe(
    dir,
    "modes.ts",
    `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "mkdir", "chmod", "ln"]);
export default derivation({ name: "tree", builder: \`\${t}/bin/sh\`, args: ["-c", \`
  \${t}/bin/mkdir -p $out/bin $out/share
  echo x > $out/share/data; \${t}/bin/chmod 4777 $out/share/data
  echo '#!/bin/sh' > $out/bin/tool; \${t}/bin/chmod 755 $out/bin/tool
  \${t}/bin/ln -s ../share/data $out/bin/link\`] });
`,
  );
  const r = await ukb(["realise", "modes.ts"], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const out = r.stdout.trim();
  const data = fs.statSync(path.join(out, "share/data"));
  t.is(data.mode & 0o7777, 0o555, "exec bit kept, setuid and writes dropped");
  t.is(fs.statSync(path.join(out, "bin/tool")).mode & 0o7777, 0o555);
  t.is(fs.statSync(path.join(out, "share")).mode & 0o7777, 0o555);
  t.is(data.mtimeMs, 1000);
  t.is(fs.lstatSync(path.join(out, "bin/link")).mtimeMs, 1000);
  t.is(fs.readlinkSync(path.join(out, "bin/link")), "../share/data");
});

test("a failing builder's log tail is fit for a terminal: long lines cut, escape sequences shown, not sent", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "noisy.ts", `${header}export default ${sh("noisy", "i=0; while [ $i -lt 500 ]; do printf 'xxxxxxxxxx'; i=$((i+1)); done; echo; printf '\\033]0;pwned\\007\\033[2Jcleared\\n'; exit 3")};\n`);
  const r = await ukb(["realise", "noisy.ts"], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /build of 'noisy' failed: exit status 3/);
  t.false(r.stderr.includes("\x1b"), "no raw escape reaches the terminal");
  t.regex(r.stderr, /\\x1b\]0;pwned\\x07\\x1b\[2Jcleared/);
  t.regex(r.stderr, /x{300}… \(4700 more characters\)/);
  t.true(r.stderr.split("\n").every((l) => l.length < 400), "every line is short");
});

test("small mistakes of usage: one line, exit 2, nothing made", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "exits.ts", `import { derivation } from "ukb";\nconsole.log("evaluating");\nprocess.exit(0);\n`);
  writeRecipe(dir, "ok.ts", `${header}export default ${sh("ok", "echo ok > $out")};\n`);
  const exits = await ukb(["realise", "exits.ts"], { cwd: dir });
  t.is(exits.code, 2, exits.stderr);
  t.regex(exits.stderr, /^ukb: error: exits\.ts:3: called process\.exit\(0\) while being evaluated/m);
  // With --json every line of stderr is an event, the error that ends the command too.
  const asJson = await ukb(["realise", "exits.ts", "--json"], { cwd: dir });
  t.is(asJson.code, 2);
  const lines = asJson.stderr.trim().split("\n");
  t.is(lines.length, 2, asJson.stderr);
  // What the recipe printed as it was evaluated is an event too, not a stray line.
  t.like(JSON.parse(lines[0]!), { type: "log", text: "evaluating" });
  t.like(JSON.parse(lines[1]!), { type: "error", kind: "recipe", file: "exits.ts", line: 3, exitCode: 2 });
  t.is(asJson.stdout, "");
  const both = await ukb(["realise", "ok.ts", "--out-link", "x", "--no-out-link"], { cwd: dir });
  t.is(both.code, 2);
  t.regex(both.stderr, /--out-link and --no-out-link contradict each other/);
  // An out-link in the way is said before anything is built.
  fs.mkdirSync(path.join(dir, "in-the-way"));
  const blocked = await ukb(["realise", "ok.ts", "--out-link", "in-the-way"], { cwd: dir });
  t.is(blocked.code, 2);
  t.regex(blocked.stderr, /in-the-way exists and is not a symlink/);
  t.notRegex(blocked.stderr, /building ok/);
  const log = await ukb(["log", "not-a-path"], { cwd: dir });
  t.is(log.code, 2);
  t.regex(log.stderr, /not-a-path is neither a recipe \(\.ts\) nor a path of the store at /);
  for (const sub of ["verify", "gc", "info"]) {
    const r = await ukb(["store", sub, ...(sub === "info" ? ["x"] : []), "--store", path.join(dir, "typo")], { cwd: dir });
    t.is(r.code, 2, `${sub}: ${r.stderr}`);
    t.regex(r.stderr, /there is no store at .*typo \(no ukb\.sqlite\)/);
  }
  t.false(fs.existsSync(path.join(dir, "typo")));
  // No store is made by a command that has nothing to do with one.
  const empty = tempDir();
  for (const args of [["store"], ["store", "verfy"], ["store", "--store", "x"], ["realise", "missing.ts"], ["check", "missing.ts"]]) {
    const r = await ukb(args, { cwd: empty });
    t.is(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    t.regex(r.stderr, /^ukb: error: (ukb store needs a command|unknown store command|missing\.ts: no such recipe file)/, args.join(" "));
  }
  t.deepEqual(fs.readdirSync(empty), []);
  // --help on a command: its usage, exit 0, nothing run.
  for (const name of ["realise", "store", "show", "push"]) {
    const r = await ukb([name, "--help"], { cwd: empty });
    t.is(r.code, 0, `${name}: ${r.stderr}`);
    t.regex(r.stdout, new RegExp(`^usage:\n  ukb ${name} `), name);
  }
  t.deepEqual(fs.readdirSync(empty), []);
  // A recipe's console.log goes to stderr: stdout is the output paths alone.
  writeRecipe(dir, "noisy.ts", `${header}console.log("hello from the recipe");\nexport default ${sh("noisy", "echo > $out")};\n`);
  const noisy = await ukb(["realise", "noisy.ts", "--no-out-link"], { cwd: dir });
  t.is(noisy.code, 0, noisy.stderr);
  t.regex(noisy.stdout, /^\/\S+-noisy\n$/);
  t.regex(noisy.stderr, /^hello from the recipe$/m);
  fs.writeFileSync(path.join(dir, "a-file"), "");
  const notFolder = await ukb(["realise", "ok.ts", "--store", "a-file"], { cwd: dir });
  t.is(notFolder.code, 2);
  t.regex(notFolder.stderr, /cannot open the store at .*a-file: it is not a folder/);
});
