import test from "ava";
import { chmod, mkdir, readdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { writeCpio, writeRootfsTree } from "../src/artifacts/index.js";
import { UkbError } from "../src/errors/index.js";
import { makeFixtureTree, snapshot, tempDir } from "./artifacts-helpers.js";

test("rootfs: builds the tree from a map, with normalised modes and created parents", async (t) => {
  const dir = await tempDir(t);
  const host = path.join(dir, "host");
  await mkdir(host);
  await writeFile(path.join(host, "nginx.conf"), "events {}\n");
  await chmod(path.join(host, "nginx.conf"), 0o600); // a host mode that must not leak
  await writeFile(path.join(host, "run.sh"), "#!/bin/sh\n");
  await chmod(path.join(host, "run.sh"), 0o700);
  await makeFixtureTree(path.join(host, "tree"));
  await symlink("nginx.conf", path.join(host, "link-to-conf"));

  const out = path.join(dir, "rootfs");
  const result = await writeRootfsTree({
    out,
    files: {
      "/nginx/conf/nginx.conf": { file: path.join(host, "nginx.conf") },
      "/nginx/html/index.html": { text: "<h1>hi</h1>\n" },
      "/nginx/logs": { mkdir: true },
      "/bin/run": { file: path.join(host, "run.sh") },
      "/bin/conf": { file: path.join(host, "link-to-conf"), mode: 0o640 },
      "/etc/motd": { symlink: "/nginx/html/index.html" },
      "/data": { dir: path.join(host, "tree") },
      "/data/extra.txt": { text: "added beside a copied tree" },
      "/secret": { mkdir: true, mode: 0o700 },
    },
  });
  t.is(result.paths[0], "bin");
  t.true(result.paths.includes("data/nginx/conf/nginx.conf"));

  const snap = await snapshot(out);
  t.like(snap, {
    bin: { type: "dir", perm: 0o755 },
    "bin/run": { type: "file", perm: 0o755, data: Buffer.from("#!/bin/sh\n").toString("base64") },
    "bin/conf": { type: "file", perm: 0o640 },
    nginx: { type: "dir", perm: 0o755 },
    "nginx/conf/nginx.conf": { type: "file", perm: 0o644, data: Buffer.from("events {}\n").toString("base64") },
    "nginx/html/index.html": { type: "file", perm: 0o644 },
    "nginx/logs": { type: "dir", perm: 0o755 },
    "etc/motd": { type: "symlink", data: "/nginx/html/index.html" },
    "data/bin/tool": { type: "file", perm: 0o755 },
    "data/bin/suid": { type: "file", perm: 0o755 },
    "data/bin/conf-link": { type: "symlink", data: "../nginx/conf/nginx.conf" },
    "data/nginx/html": { type: "dir", perm: 0o755 },
    "data/café.txt": { type: "file", perm: 0o644 },
    "data/extra.txt": { type: "file" },
    secret: { type: "dir", perm: 0o700 },
  });

  // The tree is a fine cpio root, and two builds of it give the same archive.
  const out2 = path.join(dir, "rootfs2");
  await writeRootfsTree({ out: out2, files: { "/a/b": { text: "x" }, "/a/c": { mkdir: true } } });
  const again = path.join(dir, "rootfs3");
  await writeRootfsTree({ out: again, files: { "/a/c": { mkdir: true }, "/a/b": { text: "x" } } });
  const c2 = await writeCpio({ root: out2, out: path.join(dir, "2.cpio"), mtime: 0 });
  const c3 = await writeCpio({ root: again, out: path.join(dir, "3.cpio"), mtime: 0 });
  t.deepEqual(c2, c3);
});

test("rootfs: default modes can be changed", async (t) => {
  const dir = await tempDir(t);
  const out = path.join(dir, "r");
  await writeRootfsTree({ out, files: { "/x/y": { text: "" } }, mode: { dir: 0o750, file: 0o600 } });
  t.like(await snapshot(out), { x: { perm: 0o750 }, "x/y": { perm: 0o600 } });
});

test("rootfs: bad paths, conflicts and missing sources are refused before anything is written", async (t) => {
  const dir = await tempDir(t);
  const host = path.join(dir, "host");
  await mkdir(path.join(host, "etc"), { recursive: true });
  await writeFile(path.join(host, "etc/passwd"), "root:x:0:0::/:/bin/sh\n");
  const out = path.join(dir, "out");
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["relative path", { "etc/passwd": { text: "" } }, /"etc\/passwd" must be absolute/],
    ["dot-dot", { "/etc/../../x": { text: "" } }, /contains "\.\."/],
    ["dot", { "/./x": { text: "" } }, /contains "\."/],
    ["double slash", { "/a//b": { text: "" } }, /empty component/],
    ["trailing slash", { "/a/": { mkdir: true } }, /must not end with \//],
    ["root", { "/": { mkdir: true } }, /is the root itself/],
    ["newline in name", { "/a\nb": { text: "" } }, /control characters/],
    ["file under a file", { "/a": { text: "" }, "/a/b": { text: "" } }, /\/a\/b .* is inside \/a, which is a file/],
    ["file under a symlink", { "/a": { symlink: "/x" }, "/a/b": { text: "" } }, /inside \/a, which is a symlink/],
    ["declared twice via a copied dir", { "/etc": { dir: path.join(host, "etc") }, "/etc/passwd": { text: "" } }, /\/etc\/passwd is declared twice/],
    ["missing host file", { "/x": { file: path.join(host, "nope") } }, /host path .*nope does not exist/],
    ["host dir given as file", { "/x": { file: path.join(host, "etc") } }, /is not a regular file/],
    ["host file given as dir", { "/x": { dir: path.join(host, "etc/passwd") } }, /is not a directory/],
    ["two kinds at once", { "/x": { text: "", file: "/etc/hostname" } }, /exactly one of text, file, dir, symlink, mkdir; got text, file/],
    ["no kind", { "/x": {} }, /got none/],
    ["setuid mode", { "/x": { text: "", mode: 0o4755 } }, /no setuid/],
    ["empty symlink", { "/x": { symlink: "" } }, /symlink target must be a non-empty string/],
    ["mode on a symlink", { "/x": { symlink: "y", mode: 0o644 } }, /mode applies to text, file and mkdir/],
  ];
  for (const [name, files, message] of cases) {
    const err = await t.throwsAsync(writeRootfsTree({ out, files: files as never }), undefined, name);
    t.true(err instanceof UkbError, name);
    t.is((err as UkbError).exitCode, 2, name);
    t.regex(err!.message, message, name);
  }
  t.deepEqual(await readdir(dir), ["host"]);

  await mkdir(out);
  await t.throwsAsync(writeRootfsTree({ out, files: { "/x": { text: "" } } }), { message: /already exists/ });
});
