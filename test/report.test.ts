/** `ukb report`: text, JSON, and an HTML page that renders in a real browser. */
import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { HELLO, IMAGE, tempDir, ukb, writeRecipe } from "./helpers/ukb.js";

test("report compares two images: sizes, derivations, build times, critical path", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "a.ts", IMAGE);
  writeRecipe(dir, "b.ts", IMAGE.replace("head -c 4096", "head -c 65536").replace('tag: "latest"', 'tag: "big"'));
  const json = await ukb(["report", "a.ts", "b.ts", "--json"], { cwd: dir });
  t.is(json.code, 0, json.stderr);
  const reports = JSON.parse(json.stdout) as { kernelBytes: number; initrdBytes: number; imageBytes: number; derivations: { name: string; critical: boolean; buildMs?: number }[]; criticalPathMs: number }[];
  t.is(reports.length, 2);
  t.is(reports[0]!.kernelBytes, 7 + 4096);
  t.is(reports[1]!.kernelBytes, 7 + 65536);
  t.true(reports[0]!.initrdBytes > 0);
  t.true(reports[0]!.imageBytes > reports[0]!.kernelBytes / 10);
  t.true(reports[0]!.derivations.some((d) => d.name === "nginx-image" && d.critical), "the image is on the critical path");
  t.true(reports[0]!.derivations.every((d) => d.buildMs !== undefined));
  const text = await ukb(["report", "a.ts", "b.ts"], { cwd: dir });
  t.regex(text.stdout, /kernel +4\.1 kB +65\.5 kB/);
  t.regex(text.stdout, /critical path/);
});

test("the HTML report renders in headless Chromium without errors", async (t) => {
  const dir = tempDir();
  writeRecipe(dir, "a.ts", IMAGE);
  writeRecipe(dir, "hello.ts", HELLO);
  const html = path.join(dir, "report.html");
  const r = await ukb(["report", "a.ts", "--html", html], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", `--user-data-dir=${path.join(dir, "chrome")}`];
  const dom = execFileSync(chromium[0]!, [...chromium.slice(1), "--dump-dom", `file://${html}`], { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "ignore"] });
  t.regex(dom, /data-rendered="true"/, "the page's script ran to the end");
  t.regex(dom, /<table id="comparison">/);
  t.regex(dom, /class="critical"/);
  const shot = path.join(dir, "report.png");
  execFileSync(chromium[0]!, [...chromium.slice(1), `--screenshot=${shot}`, "--window-size=1000,700", `file://${html}`], { timeout: 60_000, stdio: "ignore" });
  t.true(fs.statSync(shot).size > 5000);
  if (process.env.UKB_KEEP_REPORT) fs.copyFileSync(shot, process.env.UKB_KEEP_REPORT);
});
