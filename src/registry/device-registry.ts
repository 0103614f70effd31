import { randomBytes } from "node:crypto";
import { SluiceError } from "../errors.js";
import { hashPassword, hashPasswordScram } from "../security/password-hash.js";
import { type DeviceLimits, type DeviceRecord, isScramVerifier } from "./device.js";
import type { DevicePage, DeviceStore } from "./device-store.js";

/** The topic registry changes travel on between nodes (the cluster's pub/sub). */
export const REGISTRY_TOPIC = "$SYS/sluice/registry";

export type DeviceChangeAction = "created" | "updated" | "disabled" | "rotated" | "deleted" | "crl";

/** A change one node made, for every node: evict the cache, close what lost its credentials. */
export interface DeviceChange {
  action: DeviceChangeAction;
  /** Absent for `crl`. */
  id?: string;
  /** The device's credentials as of this change: connections made with older ones go. */
  rotatedAt?: string;
}

export interface RegistryBus {
  /** Sends a change to every node, this one included. */
  publish(change: DeviceChange): void;
}

interface Cached {
  record: DeviceRecord | undefined;
  at: number;
}

/** Devices cached per node: enough for a large site's fleet, bounded all the same. */
const CACHE_ENTRIES = 200_000;
/**
 * Cached entries are read again after this even without a change message: a safety net for a
 * message lost in a way the pub/sub gap detection did not see.
 */
const CACHE_TTL_MS = 60_000;
/** Random bytes in a generated device password: 192 bits, base64url. */
const PASSWORD_BYTES = 24;

/**
 * How a device's password credential is set: a verifier made elsewhere (validated by the
 * caller), or a generated password kept as a SCRAM-SHA-256 verifier (`scram`) or scrypt hash.
 */
export interface PasswordChoice {
  scram?: boolean | undefined;
  scramVerifier?: string | undefined;
}

export class DeviceExistsError extends SluiceError {
  constructor(message: string) {
    super("DEVICE_EXISTS", message);
  }
}

/**
 * The device registry as nodes use it: records in a store shared by the cluster, a cache per
 * node in front (CONNECTs must not wait on Redis for every device), and change messages over
 * the cluster's pub/sub that empty every node's cache entry for the device within
 * milliseconds. Credentials never leave here in plain text except a generated password,
 * returned once to whoever created or rotated it.
 */
export class DeviceRegistry {
  private readonly cache = new Map<string, Cached>();
  private readonly loading = new Map<string, Promise<DeviceRecord | undefined>>();

  constructor(
    readonly store: DeviceStore,
    private readonly bus: RegistryBus,
    private readonly now: () => number = Date.now,
  ) {}

  /** The device for a CONNECT: from the cache when fresh, else one store read shared by all. */
  lookup(id: string): Promise<DeviceRecord | undefined> {
    const cached = this.cache.get(id);
    if (cached !== undefined && this.now() - cached.at < CACHE_TTL_MS) {
      return Promise.resolve(cached.record);
    }
    const pending = this.loading.get(id);
    if (pending !== undefined) return pending;
    const load = this.store.get(id).then(
      (record) => {
        if (this.loading.get(id) === load) {
          this.loading.delete(id);
          this.remember(id, record);
        }
        return record;
      },
      (error: unknown) => {
        if (this.loading.get(id) === load) this.loading.delete(id);
        throw error;
      },
    );
    this.loading.set(id, load);
    return load;
  }

  /** A change message arrived (from any node): the next lookup reads the store. */
  changed(change: DeviceChange): void {
    if (change.id === undefined) return;
    this.cache.delete(change.id);
    this.loading.delete(change.id);
  }

  /** Change messages may have been missed (the pub/sub connection dropped): forget all. */
  forgetAll(): void {
    this.cache.clear();
    this.loading.clear();
  }

  /**
   * Creates a device with a generated password, returned this once, or with the SCRAM verifier
   * given (no password then), or with neither (`password: false`, certificate only).
   */
  async create(
    input: {
      id: string;
      groups: string[];
      enabled: boolean;
      limits?: DeviceLimits | undefined;
      password: boolean;
    } & PasswordChoice,
  ): Promise<{ record: DeviceRecord; password?: string }> {
    const at = new Date(this.now()).toISOString();
    const { password, passwordHash } =
      input.password || input.scramVerifier !== undefined
        ? await credential(input)
        : { password: undefined, passwordHash: undefined };
    const record: DeviceRecord = {
      id: input.id,
      enabled: input.enabled,
      ...(passwordHash === undefined ? {} : { passwordHash }),
      certificates: [],
      groups: input.groups,
      ...(input.limits === undefined ? {} : { limits: input.limits }),
      createdAt: at,
      rotatedAt: at,
      updatedAt: at,
    };
    if (!(await this.store.create(record)))
      throw new DeviceExistsError(`device ${input.id} exists`);
    this.announce({ action: "created", id: record.id, rotatedAt: record.rotatedAt });
    return password === undefined ? { record } : { record, password };
  }

  async get(id: string): Promise<DeviceRecord | undefined> {
    return this.store.get(id);
  }

  list(after: string | undefined, limit: number): Promise<DevicePage> {
    return this.store.list(after, limit);
  }

  /** Changes enabled, groups or limits; disabling closes the device's connections everywhere. */
  async update(
    id: string,
    patch: {
      enabled?: boolean | undefined;
      groups?: string[] | undefined;
      limits?: DeviceLimits | null | undefined;
    },
  ): Promise<DeviceRecord | undefined> {
    const at = new Date(this.now()).toISOString();
    let disabled = false;
    const record = await this.store.update(id, (current) => {
      disabled = current.enabled && patch.enabled === false;
      const { limits: _, ...rest } = current;
      const limits = patch.limits === null ? undefined : (patch.limits ?? current.limits);
      return {
        ...rest,
        ...(limits === undefined ? {} : { limits }),
        enabled: patch.enabled ?? current.enabled,
        groups: patch.groups ?? current.groups,
        updatedAt: at,
      };
    });
    if (record !== undefined) {
      this.announce({ action: disabled ? "disabled" : "updated", id, rotatedAt: record.rotatedAt });
    }
    return record;
  }

  /**
   * Replaces the device's password with a new one, returned this once (kept as the old one was,
   * SCRAM verifier or scrypt hash, unless `scram` says), or with the SCRAM verifier given; live
   * connections made with the old one are closed on every node.
   */
  async rotate(
    id: string,
    choice: PasswordChoice = {},
  ): Promise<{ record: DeviceRecord; password?: string } | undefined> {
    const scram =
      choice.scram ??
      (choice.scramVerifier === undefined &&
        isScramVerifier((await this.store.get(id))?.passwordHash));
    const { password, passwordHash } = await credential({ ...choice, scram });
    const at = new Date(this.now()).toISOString();
    const record = await this.store.update(id, (current) => ({
      ...current,
      passwordHash,
      rotatedAt: at,
      updatedAt: at,
    }));
    if (record === undefined) return undefined;
    this.announce({ action: "rotated", id, rotatedAt: at });
    return password === undefined ? { record } : { record, password };
  }

  /** Records a certificate issued to the device (its serial is what TLS clients present). */
  async addCertificate(
    id: string,
    certificate: { serial: string; notAfter: string },
    replace: boolean,
  ): Promise<DeviceRecord | undefined> {
    const at = new Date(this.now()).toISOString();
    const record = await this.store.update(id, (current) => ({
      ...current,
      // Newest last; at most 16, the oldest dropped (they are revoked by whoever replaces them).
      certificates: [...(replace ? [] : current.certificates), certificate].slice(-16),
      ...(replace ? { rotatedAt: at } : {}),
      updatedAt: at,
    }));
    if (record !== undefined) {
      this.announce({
        action: replace ? "rotated" : "updated",
        id,
        rotatedAt: record.rotatedAt,
      });
    }
    return record;
  }

  /** Removes a device; its connections are closed on every node. */
  async delete(id: string): Promise<boolean> {
    const removed = await this.store.delete(id);
    if (removed) this.announce({ action: "deleted", id });
    return removed;
  }

  /** Tells every node the CA's revocation list changed. */
  crlChanged(): void {
    this.bus.publish({ action: "crl" });
  }

  private announce(change: DeviceChange): void {
    // This node's cache first: the caller may read its own write before the message loops back.
    this.changed(change);
    this.bus.publish(change);
  }

  private remember(id: string, record: DeviceRecord | undefined): void {
    if (this.cache.size >= CACHE_ENTRIES) {
      // Maps iterate in insertion order: the oldest entry goes.
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(id, { record, at: this.now() });
  }
}

/** The credential to store, and the generated password to show once (none for a verifier). */
async function credential(
  choice: PasswordChoice,
): Promise<{ password: string | undefined; passwordHash: string }> {
  if (choice.scramVerifier !== undefined) {
    return { password: undefined, passwordHash: choice.scramVerifier };
  }
  const password = generatePassword();
  const passwordHash = choice.scram
    ? await hashPasswordScram(password)
    : await hashPassword(password);
  return { password, passwordHash };
}

export function generatePassword(): string {
  return randomBytes(PASSWORD_BYTES).toString("base64url");
}

/** Reads a change message; anything malformed is ignored (it came over a shared channel). */
export function parseDeviceChange(payload: Buffer): DeviceChange | undefined {
  try {
    const value = JSON.parse(payload.toString("utf8")) as Partial<DeviceChange>;
    const actions: DeviceChangeAction[] = [
      "created",
      "updated",
      "disabled",
      "rotated",
      "deleted",
      "crl",
    ];
    if (
      typeof value !== "object" ||
      value === null ||
      !actions.includes(value.action as DeviceChangeAction)
    ) {
      return undefined;
    }
    if (value.id !== undefined && typeof value.id !== "string") return undefined;
    if (value.rotatedAt !== undefined && typeof value.rotatedAt !== "string") return undefined;
    return value as DeviceChange;
  } catch {
    return undefined;
  }
}
