import type { DeviceRecord } from "./device.js";

/** A page of devices in id order; `next` is the id to continue after, if there are more. */
export interface DevicePage {
  devices: DeviceRecord[];
  next?: string;
}

/** A revoked certificate, for the CA's revocation list. */
export interface RevokedCertificate {
  serial: string;
  revokedAt: string;
}

/**
 * Where the device registry lives: Redis in a cluster (every node reads the same records), a
 * JSON file on a single node. Writes are atomic per device; the cache and the change
 * notifications are the registry's, not the store's.
 */
export interface DeviceStore {
  get(id: string): Promise<DeviceRecord | undefined>;
  list(after: string | undefined, limit: number): Promise<DevicePage>;
  /** Stores a new device; false when the id is taken. */
  create(record: DeviceRecord): Promise<boolean>;
  /**
   * Replaces a device's record with `change(current)`, atomically against concurrent writers;
   * undefined when there is no such device. `change` may run more than once.
   */
  update(
    id: string,
    change: (current: DeviceRecord) => DeviceRecord,
  ): Promise<DeviceRecord | undefined>;
  /** Removes a device; false when there was none. */
  delete(id: string): Promise<boolean>;
  /** Records a connection time; best effort. */
  touch(id: string, at: string): Promise<void>;
  lastSeen(id: string): Promise<string | undefined>;

  /** A one-time enrollment token, stored by its SHA-256 only, expiring by itself. */
  saveEnrollmentToken(digest: string, deviceId: string, ttlSeconds: number): Promise<void>;
  /** The device a token was for, exactly once: the token is gone after this, used or not. */
  consumeEnrollmentToken(digest: string): Promise<string | undefined>;

  addRevoked(entry: RevokedCertificate): Promise<void>;
  revoked(): Promise<RevokedCertificate[]>;
  /** The CA's current CRL (PEM), shared so that every node's TLS listeners load the same. */
  saveCrl(pem: string): Promise<void>;
  crl(): Promise<string | undefined>;
}

/** Devices per page at most. */
export const MAX_PAGE = 1000;

/**
 * The ids of one page: those after `after` in sorted `ids` (sorted in place), at most `limit`
 * (and MAX_PAGE), and the id to continue after when more follow.
 */
export function pageOfIds(
  ids: string[],
  after: string | undefined,
  limit: number,
): { ids: string[]; next?: string } {
  ids.sort();
  const start = after === undefined ? 0 : upperBound(ids, after);
  const size = Math.min(limit, MAX_PAGE);
  const page = ids.slice(start, start + size);
  const last = page[page.length - 1];
  return start + size < ids.length && last !== undefined
    ? { ids: page, next: last }
    : { ids: page };
}

/** The index of the first id greater than `after` in sorted `ids`. */
function upperBound(ids: readonly string[], after: string): number {
  let low = 0;
  let high = ids.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if ((ids[mid] as string) <= after) low = mid + 1;
    else high = mid;
  }
  return low;
}
