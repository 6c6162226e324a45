/**
 * A cache in a folder (a shared NFS export, a mounted volume):
 *   <dir>/info/<hash part>.json    the path infos
 *   <dir>/blob/<blake3>.zst        the blobs
 * Every file is written beside its final name and renamed: readers see a
 * file whole or not at all, and concurrent writers of the same content race
 * harmlessly.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { CacheBackend } from "./backend.js";
import { cacheError } from "./errors.js";
import { decodeEntry, encodeEntry, type BlobRef, type CacheEntry } from "./info.js";

export class FileBackend implements CacheBackend {
  readonly addressesByDigest = false;
  readonly dir: string;

  constructor(readonly url: string) {
    this.dir = fileURLToPath(new URL(url));
  }

  private infoFile(hashPart: string): string {
    return path.join(this.dir, "info", `${hashPart}.json`);
  }

  private blobFile(ref: BlobRef): string {
    return path.join(this.dir, "blob", `${ref.blake3}.zst`);
  }

  async getEntry(hashPart: string): Promise<CacheEntry | undefined> {
    let bytes: Buffer;
    try {
      bytes = await fs.promises.readFile(this.infoFile(hashPart));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        if (!fs.existsSync(this.dir)) throw cacheError(`${this.url}: ${this.dir} does not exist`);
        return undefined;
      }
      throw cacheError(`${this.url}: cannot read ${this.infoFile(hashPart)}: ${code ?? (err as Error).message}`);
    }
    return decodeEntry(bytes, `${this.url} info/${hashPart}.json`);
  }

  async openBlob(ref: BlobRef): Promise<AsyncIterable<Uint8Array>> {
    const file = this.blobFile(ref);
    try {
      await fs.promises.access(file);
    } catch {
      throw cacheError(`${this.url} has lost the blob ${ref.blake3}`);
    }
    return fs.createReadStream(file, { highWaterMark: 1 << 20 });
  }

  async prepareUpload(): Promise<void> {
    try {
      await fs.promises.mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw cacheError(`${this.url}: cannot create ${this.dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  async blobSize(ref: BlobRef): Promise<number | undefined> {
    try {
      return (await fs.promises.stat(this.blobFile(ref))).size;
    } catch {
      return undefined;
    }
  }

  private async putFile(dest: string, write: (tmp: string) => Promise<void>): Promise<void> {
    await fs.promises.mkdir(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.tmp-${process.pid}-${crypto.randomBytes(4).toString("hex")}`;
    try {
      await write(tmp);
      await fs.promises.rename(tmp, dest);
    } catch (err) {
      await fs.promises.rm(tmp, { force: true });
      throw cacheError(`${this.url}: cannot write ${dest}: ${(err as Error).message}`);
    }
  }

  async putBlob(ref: BlobRef, file: string): Promise<void> {
    await this.putFile(this.blobFile(ref), async (tmp) => {
      await fs.promises.copyFile(file, tmp, fs.constants.COPYFILE_EXCL);
      const fd = await fs.promises.open(tmp, "r");
      try {
        await fd.sync();
      } finally {
        await fd.close();
      }
    });
  }

  async putEntry(entry: CacheEntry): Promise<void> {
    await this.putFile(this.infoFile(entry.base.slice(0, 32)), async (tmp) => {
      const fd = await fs.promises.open(tmp, "wx", 0o644);
      try {
        await fd.write(encodeEntry(entry));
        await fd.sync();
      } finally {
        await fd.close();
      }
    });
  }
}
