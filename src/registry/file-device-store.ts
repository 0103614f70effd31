import { readFile } from "node:fs/promises";
import { z } from "zod";
import { replaceFile } from "../files/replace-file.js";
import { type DeviceRecord, deviceRecordSchema } from "./device.js";
import {
  type DevicePage,
  type DeviceStore,
  pageOfIds,
  type RevokedCertificate,
} from "./device-store.js";

const fileSchema = z.strictObject({
  version: z.literal(1),
  devices: z.record(z.string(), deviceRecordSchema),
  lastSeen: z.record(z.string(), z.string()).default({}),
  tokens: z
    .record(z.string(), z.strictObject({ deviceId: z.string(), expiresAt: z.number() }))
    .default({}),
  revoked: z.array(z.strictObject({ serial: z.string(), revokedAt: z.string() })).default([]),
  crl: z.string().optional(),
});
type RegistryFile = z.output<typeof fileSchema>;

/**
 * The registry of a single node without Redis, in one JSON file (mode 0600: it holds password
 * hashes). Every change rewrites the file through a temporary file and a rename, so a crash
 * leaves the old or the new file, never half of one; changes are applied one at a time.
 * Last-seen times are kept in memory and written with the next change.
 */
export class FileDeviceStore implements DeviceStore {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly path: string,
    private data: RegistryFile,
  ) {}

  /** Opens the file, or starts an empty registry when there is none yet. */
  static async open(path: string): Promise<FileDeviceStore> {
    let text: string | undefined;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    if (text === undefined) return new FileDeviceStore(path, emptyFile());
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new Error(`device registry ${path} is not JSON: ${(error as Error).message}`);
    }
    const parsed = fileSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(
        `device registry ${path} is not a Sluice registry: ${issue?.path.join(".")}: ${issue?.message}`,
      );
    }
    return new FileDeviceStore(path, parsed.data);
  }

  async get(id: string): Promise<DeviceRecord | undefined> {
    return Object.hasOwn(this.data.devices, id) ? this.data.devices[id] : undefined;
  }

  async list(after: string | undefined, limit: number): Promise<DevicePage> {
    const page = pageOfIds(Object.keys(this.data.devices), after, limit);
    const devices = page.ids.map((id) => this.data.devices[id] as DeviceRecord);
    return page.next === undefined ? { devices } : { devices, next: page.next };
  }

  create(record: DeviceRecord): Promise<boolean> {
    return this.change((data) => {
      if (Object.hasOwn(data.devices, record.id)) return false;
      data.devices[record.id] = record;
      return true;
    });
  }

  update(
    id: string,
    change: (current: DeviceRecord) => DeviceRecord,
  ): Promise<DeviceRecord | undefined> {
    return this.change((data) => {
      const current = Object.hasOwn(data.devices, id) ? data.devices[id] : undefined;
      if (current === undefined) return undefined;
      const next = change(current);
      data.devices[id] = next;
      return next;
    });
  }

  delete(id: string): Promise<boolean> {
    return this.change((data) => {
      if (!Object.hasOwn(data.devices, id)) return false;
      delete data.devices[id];
      delete data.lastSeen[id];
      return true;
    });
  }

  async touch(id: string, at: string): Promise<void> {
    this.data.lastSeen[id] = at;
  }

  async lastSeen(id: string): Promise<string | undefined> {
    return Object.hasOwn(this.data.lastSeen, id) ? this.data.lastSeen[id] : undefined;
  }

  saveEnrollmentToken(digest: string, deviceId: string, ttlSeconds: number): Promise<void> {
    return this.change((data) => {
      const now = Date.now();
      for (const [key, token] of Object.entries(data.tokens)) {
        if (token.expiresAt <= now) delete data.tokens[key];
      }
      data.tokens[digest] = { deviceId, expiresAt: now + ttlSeconds * 1000 };
    });
  }

  consumeEnrollmentToken(digest: string): Promise<string | undefined> {
    return this.change((data) => {
      const token = Object.hasOwn(data.tokens, digest) ? data.tokens[digest] : undefined;
      if (token === undefined) return undefined;
      delete data.tokens[digest];
      return token.expiresAt > Date.now() ? token.deviceId : undefined;
    });
  }

  addRevoked(entry: RevokedCertificate): Promise<void> {
    return this.change((data) => {
      if (!data.revoked.some((r) => r.serial === entry.serial)) data.revoked.push(entry);
    });
  }

  async revoked(): Promise<RevokedCertificate[]> {
    return [...this.data.revoked];
  }

  saveCrl(pem: string): Promise<void> {
    return this.change((data) => {
      data.crl = pem;
    });
  }

  async crl(): Promise<string | undefined> {
    return this.data.crl;
  }

  /**
   * Applies a change to a copy and makes it current only once the file holds it: a failed
   * write changes nothing, in memory or on disk.
   */
  private change<T>(apply: (data: RegistryFile) => T): Promise<T> {
    const run = async (): Promise<T> => {
      const next = structuredClone(this.data);
      const result = apply(next);
      await replaceFile(this.path, `${JSON.stringify(next, null, 2)}\n`, 0o600);
      this.data = next;
      return result;
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => {});
    return result;
  }
}

function emptyFile(): RegistryFile {
  return { version: 1, devices: {}, lastSeen: {}, tokens: {}, revoked: [] };
}
