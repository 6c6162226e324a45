/**
 * Issue 7's benchmarks: substituting the whole closure of the largest recipe
 * (recipes/nginx-microvm.ts, if its outputs are in ./cache or can be built;
 * else a synthetic closure of the same order of size) from each backend on
 * loopback — a folder, Debian's nginx with WebDAV, Debian's docker-registry —
 * against a plain curl of the same bytes; and the bytes uploaded when one
 * file of a large output changes.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fmt, measure } from "./run.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const UKB = path.join(ROOT, "bin/ukb.cjs");
const WORK = path.join(ROOT, ".bench", "cache");

function ukb(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = measure(process.execPath, [UKB, ...args], { cwd: WORK, env: { XDG_CONFIG_HOME: path.join(WORK, "config"), ...env } });
  if (r.code !== 0) throw new Error(`ukb ${args.join(" ")} failed:\n${r.stderr.slice(-3000)}`);
  return r;
}

function ukbOut(args: string[]): string {
  const r = spawnSync(process.execPath, [UKB, ...args], { cwd: WORK, encoding: "utf8", env: { ...process.env, XDG_CONFIG_HOME: path.join(WORK, "config") }, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`ukb ${args.join(" ")} failed:\n${r.stderr.slice(-3000)}`);
  return r.stdout;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(url: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`${url}: server exited`);
    try {
      const r = await fetch(url);
      await r.body?.cancel();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`${url} did not answer`);
}

async function startNginx(dir: string): Promise<{ url: string; child: ChildProcess }> {
  fs.mkdirSync(path.join(dir, "www"), { recursive: true });
  fs.mkdirSync(path.join(dir, "tmp"), { recursive: true });
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, "nginx.conf"),
    `daemon off; worker_processes 1; ${process.getuid?.() === 0 ? "user root;" : ""} pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 256; }
http { access_log off; client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/p; fastcgi_temp_path ${dir}/tmp/f; uwsgi_temp_path ${dir}/tmp/u; scgi_temp_path ${dir}/tmp/s;
  server { listen 127.0.0.1:${port}; root ${dir}/www; client_max_body_size 0; dav_methods PUT; create_full_put_path on; } }
`,
  );
  const child = spawn("nginx", ["-c", path.join(dir, "nginx.conf"), "-p", dir, "-e", path.join(dir, "error.log")], { stdio: "ignore" });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/`, child);
  return { url, child };
}

async function startRegistry(dir: string): Promise<{ host: string; child: ChildProcess }> {
  fs.mkdirSync(path.join(dir, "storage"), { recursive: true });
  const port = await freePort();
  fs.writeFileSync(path.join(dir, "registry.yml"), `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/storage\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child = spawn("docker-registry", ["serve", path.join(dir, "registry.yml")], { stdio: "ignore" });
  await waitFor(`http://127.0.0.1:${port}/v2/`, child);
  return { host: `127.0.0.1:${port}`, child };
}

function stop(child: ChildProcess): void {
  if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGTERM");
}

/**
 * A synthetic large output, the same bytes on every build: a ~20 MB "kernel",
 * 160 files of ~130 KB and 50 small ones; `changed` alters one file.
 */
function syntheticRecipe(salt: string, changed: string): string {
  return `import { derivation, hostTools } from "ukb";
const t = hostTools(["sh", "head", "mkdir", "printf", "cat", "seq"]);
export default derivation({
  name: "large-output",
  builder: \`\${t}/bin/sh\`,
  env: { salt: ${JSON.stringify(salt)}, changed: ${JSON.stringify(changed)} },
  args: ["-c", \`set -e
    \${t}/bin/mkdir -p $out/lib $out/etc
    \${t}/bin/seq 1 3 9000000 > $out/kernel
    for i in $(\${t}/bin/seq 1 160); do \${t}/bin/seq $((i * 1000000)) 7 $((i * 1000000 + 130000)) > $out/lib/part-$i.o; done
    for i in $(\${t}/bin/seq 1 50); do \${t}/bin/printf 'config %s %s\\\\n' $i "$salt" > $out/etc/conf-$i; done
    \${t}/bin/printf '%s' "$changed" >> $out/lib/part-7.o\`],
});
`;
}

interface Source {
  label: string;
  store: string;
  paths: string[];
}

/**
 * Every output of the nginx micro-VM recipe's graph (what a CI machine built
 * and the team wants), from ./cache (built there if needed), or a synthetic output.
 */
function largestClosure(): Source {
  const recipe = path.join(ROOT, "recipes/nginx-microvm.ts");
  const store = path.join(ROOT, "cache");
  if (fs.existsSync(recipe)) {
    try {
      ukbOut(["realise", recipe, "--store", store, "--no-out-link"]);
      const graph = JSON.parse(ukbOut(["show", recipe])) as { derivations: Record<string, { outputs: Record<string, string> }> };
      const paths = Object.values(graph.derivations)
        .flatMap((d) => Object.values(d.outputs))
        .map((p) => path.basename(p))
        .filter((b) => fs.existsSync(path.join(store, "store", b)));
      return { label: "recipes/nginx-microvm.ts (every output of its graph)", store, paths };
    } catch (err) {
      console.log(`(recipes/nginx-microvm.ts could not be realised here: ${(err as Error).message.split("\n")[0]}; using a synthetic closure)`);
    }
  }
  const file = path.join(WORK, "large.ts");
  fs.writeFileSync(file, syntheticRecipe("bench", "a"));
  const s = path.join(WORK, "source-store");
  return { label: "synthetic large output", store: s, paths: ukbOut(["realise", file, "--store", s, "--no-out-link"]).trim().split("\n") };
}

function curlSeconds(urls: string[]): number {
  const args = urls.flatMap((u) => ["-o", "/dev/null", u]);
  const r = measure("curl", ["-s", "-f", ...args]);
  if (r.code !== 0) throw new Error(`curl failed: ${r.stderr.slice(-500)}`);
  return r.seconds;
}

export async function benchCache(): Promise<void> {
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  const keyFile = path.join(WORK, "bench.sec");
  const pub = ukbOut(["key", "generate", "--name", "bench-1", "--out", keyFile]).trim();
  const source = largestClosure();
  const nginx = await startNginx(path.join(WORK, "nginx"));
  const registry = await startRegistry(path.join(WORK, "registry"));
  try {
    const backends = [
      { name: "file", url: `file://${path.join(WORK, "file-cache")}` },
      { name: "http (nginx WebDAV)", url: `${nginx.url}/cache` },
      { name: "oci (docker-registry)", url: `oci://${registry.host}/bench/cache` },
    ];
    console.log(`\n## cache: substituting the closure of ${source.label} on loopback (ukb copy --from into an empty store, verified), against curl of the same bytes`);
    console.log("| backend | upload s | paths | unpacked MB | on the wire MB | substitute s | MB/s (unpacked) | curl s (same bytes) |");
    console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const b of backends) {
      const up = ukb(["copy", "--to", b.url, "--sign-key", keyFile, "--store", source.store, ...source.paths]);
      const dest = path.join(WORK, `dest-${b.name.split(" ")[0]}`);
      const started = performance.now();
      const out = ukbOut(["copy", "--from", b.url, "--trusted-keys", pub, "--store", dest, "--json", ...source.paths]);
      const seconds = (performance.now() - started) / 1000;
      const fetched = JSON.parse(out.trim().split("\n").pop()!) as { fetched: string[]; bytes: number };
      const infos = fetched.fetched.map((base) => JSON.parse(ukbOut(["store", "info", "--json", "--store", dest, base])) as { size: number });
      const unpacked = infos.reduce((n, i) => n + i.size, 0);
      // The same bytes with curl: every info and blob of those paths.
      let curl: number | undefined;
      if (b.name.startsWith("file") || b.name.startsWith("http")) {
        const dir = path.join(WORK, "file-cache");
        const base = b.name.startsWith("file") ? `file://${dir}` : `${nginx.url}/cache`;
        const urls: string[] = [];
        for (const p of fetched.fetched) {
          const info = JSON.parse(fs.readFileSync(path.join(dir, "info", `${p.slice(0, 32)}.json`), "utf8")) as { manifest: { blake3: string }; blobs: { blake3: string }[] };
          urls.push(`${base}/info/${p.slice(0, 32)}.json`, ...[info.manifest, ...info.blobs].map((x) => `${base}/blob/${x.blake3}.zst`));
        }
        curl = curlSeconds(urls);
      } else {
        const urls: string[] = [];
        for (const p of fetched.fetched) {
          const m = (await (await fetch(`http://${registry.host}/v2/bench/cache/manifests/${p.slice(0, 32)}`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } })).json()) as { config: { digest: string }; layers: { digest: string }[] };
          urls.push(`http://${registry.host}/v2/bench/cache/manifests/${p.slice(0, 32)}`, ...[m.config, ...m.layers].map((l) => `http://${registry.host}/v2/bench/cache/blobs/${l.digest}`));
        }
        curl = curlSeconds(urls);
      }
      console.log(`| ${b.name} | ${fmt(up.seconds)} | ${fetched.fetched.length} | ${fmt(unpacked / 1e6, 1)} | ${fmt(fetched.bytes / 1e6, 1)} | ${fmt(seconds)} | ${fmt(unpacked / 1e6 / seconds, 1)} | ${fmt(curl, 3)} |`);
    }

    console.log("\n## cache: bytes uploaded when one file of a large output changes (~21 MB kernel + 160 files of ~130 KB + 50 small files; compressed sizes)");
    console.log("| backend | first upload MB | after changing lib/part-7.o: uploaded MB | blobs uploaded / already there |");
    console.log("| --- | --- | --- | --- |");
    const file = path.join(WORK, "dedup.ts");
    const store = path.join(WORK, "dedup-store");
    for (const b of backends.slice(1)) {
      const url = b.url.replace(/cache$/, "dedup");
      const sent: { MB: number; blobs: number; present: number }[] = [];
      for (const changed of ["first", "second"]) {
        fs.writeFileSync(file, syntheticRecipe("dedup", changed));
        const out = ukbOut(["realise", file, "--store", store, "--no-out-link"]).trim();
        const r = JSON.parse(ukbOut(["copy", "--to", url, "--sign-key", keyFile, "--store", store, "--json", out]).trim().split("\n").pop()!) as { bytesUploaded: number; blobsUploaded: number; blobsPresent: number };
        sent.push({ MB: r.bytesUploaded / 1e6, blobs: r.blobsUploaded, present: r.blobsPresent });
      }
      console.log(`| ${b.name} | ${fmt(sent[0]!.MB, 2)} | ${fmt(sent[1]!.MB, 3)} | ${sent[1]!.blobs} / ${sent[1]!.present} |`);
    }
  } finally {
    stop(nginx.child);
    stop(registry.child);
  }
}
