/**
 * Real servers the tests start on 127.0.0.1: a free port, and Debian's nginx
 * over a temp folder (extra directives for the server block: WebDAV PUT for
 * the HTTP cache, redirects for the fetcher). Stopped by their PID.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { spawn } from "node:child_process";
import { freePort } from "../../src/run/index.js";

// The same free-port probe ukb run uses for QEMU's forwarded port.
export { freePort };

export interface Server {
  url: string;
  port: number;
  /** The folder it serves. */
  root: string;
  pid: number;
  stop(): Promise<void>;
}

/** Debian's nginx serving `dir`/www, with `directives` added to its server block (and `http` to its http block). */
export async function startNginx(dir: string, directives = "", http = ""): Promise<Server> {
  const nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => fs.existsSync(p));
  if (!nginx) throw new Error("nginx not found: apt-get install -y nginx");
  const root = path.join(dir, "www");
  const tmp = path.join(dir, "tmp");
  fs.mkdirSync(root, { recursive: true });
  fs.mkdirSync(tmp, { recursive: true });
  const port = await freePort();
  const conf = `
daemon off;
worker_processes 1;
${process.getuid?.() === 0 ? "user root;" : ""}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  ${http}
  server {
    listen 127.0.0.1:${port};
    root ${root};
    ${directives}
  }
}
`;
  fs.writeFileSync(path.join(dir, "nginx.conf"), conf);
  const child = spawn(nginx, ["-c", path.join(dir, "nginx.conf"), "-p", dir, "-e", path.join(dir, "error.log")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const log = () => `${stderr}${fs.existsSync(path.join(dir, "error.log")) ? fs.readFileSync(path.join(dir, "error.log"), "utf8") : ""}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${log()}`);
    const up = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, "127.0.0.1");
      c.on("connect", () => (c.destroy(), resolve(true)));
      c.on("error", () => resolve(false));
    });
    if (up) break;
    if (i > 400) throw new Error(`nginx did not listen on ${port}: ${log()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    root,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid!, "SIGTERM"); // the master stops its workers
        await exited;
      }
    },
  };
}
