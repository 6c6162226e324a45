/**
 * What a full disk and a used-up quota are called. A quota cannot be made
 * for real here (this kernel's tmpfs has no quota support and there is no
 * loop device), so EDQUOT is an error value as the kernel would return it;
 * full disks are tested for real in core-full-disk.
 */
import test from "ava";
import { NoSpaceError, explainNoSpace, isNoSpace } from "../src/store/space.js";
import { tempDir } from "./helpers/ukb.js";

const errnoError = (code: string, message: string) => Object.assign(new Error(message), { code });

test("over quota: the error says quota, gives no free figure (statfs cannot see quotas) and hints at the quota", (t) => {
  const root = tempDir();
  const err = explainNoSpace(errnoError("EDQUOT", "EDQUOT: disk quota exceeded, write"), root, "building 'nginx'");
  t.true(err instanceof NoSpaceError);
  const e = err as NoSpaceError;
  t.true(e.overQuota);
  t.is(e.message, `disk quota exceeded on the filesystem of the store ${root} while building 'nginx'`);
  t.regex(e.hint ?? "", /larger disk quota/);
  t.true(isNoSpace(e));
  // Wrapped again (a build reporting a substitution's failure, say), it stays a quota error.
  t.true(new NoSpaceError(root, "copying", e).overQuota);
});

test("a full disk: the error says no space, with what is free now", (t) => {
  const root = tempDir();
  const e = explainNoSpace(errnoError("ENOSPC", "ENOSPC: no space left on device, write"), root, "building 'nginx'") as NoSpaceError;
  t.false(e.overQuota);
  t.regex(e.message, new RegExp(`^no space left on the filesystem of the store ${root} while building 'nginx' \\(\\d[\\d.]* (B|KiB|MiB|GiB|TiB) free now\\)$`));
  t.notRegex(e.hint ?? "", /quota/);
});
