import type { RedisClient } from "../redis/redis-client.js";
import { type DeviceRecord, parseRecord } from "./device.js";
import {
  type DevicePage,
  type DeviceStore,
  pageOfIds,
  type RevokedCertificate,
} from "./device-store.js";

const DEVICES = "devices";
const LAST_SEEN = "devices-seen";
const REVOKED = "ca-revoked";
const CRL = "ca-crl";
const TOKEN = "enroll-token:";

/** KEYS devices; ARGV id, expected JSON, new JSON: writes only if nobody wrote in between. */
const COMPARE_AND_SET = `
if redis.call("HGET", KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0`;

/** Attempts of an update that loses races to other writers before it gives up. */
const UPDATE_ATTEMPTS = 10;

/**
 * The registry in Redis under the node's key prefix: one hash of device records (id → JSON),
 * one of last-seen times, one of revoked serials, and one key per enrollment token. Each
 * script touches one key, so it also runs on Redis Cluster.
 */
export class RedisDeviceStore implements DeviceStore {
  constructor(private readonly redis: RedisClient) {}

  async get(id: string): Promise<DeviceRecord | undefined> {
    return parseRecord(await this.redis.hget(DEVICES, id));
  }

  async list(after: string | undefined, limit: number): Promise<DevicePage> {
    // HSCAN gives no order; ids are sorted so pages are stable. Fine for the registry's size
    // (thousands to a few hundred thousand devices), read by operators, not per packet.
    const page = pageOfIds(await this.redis.hkeys(DEVICES), after, limit);
    const texts = page.ids.length > 0 ? await this.redis.hmget(DEVICES, ...page.ids) : [];
    const devices = texts
      .map((t) => parseRecord(t))
      .filter((r): r is DeviceRecord => r !== undefined);
    return page.next === undefined ? { devices } : { devices, next: page.next };
  }

  async create(record: DeviceRecord): Promise<boolean> {
    return (await this.redis.hsetnx(DEVICES, record.id, JSON.stringify(record))) === 1;
  }

  async update(
    id: string,
    change: (current: DeviceRecord) => DeviceRecord,
  ): Promise<DeviceRecord | undefined> {
    for (let attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
      const text = await this.redis.hget(DEVICES, id);
      const current = parseRecord(text);
      if (text === null || current === undefined) return undefined;
      const next = change(current);
      const written = await this.redis.eval(
        COMPARE_AND_SET,
        1,
        DEVICES,
        id,
        text,
        JSON.stringify(next),
      );
      if (written === 1) return next;
    }
    throw new Error(`device ${id} is being changed by others: try again`);
  }

  async delete(id: string): Promise<boolean> {
    const [[, removed]] = (await this.redis
      .multi()
      .hdel(DEVICES, id)
      .hdel(LAST_SEEN, id)
      .exec()) as [[Error | null, number]];
    return removed === 1;
  }

  async touch(id: string, at: string): Promise<void> {
    await this.redis.hset(LAST_SEEN, id, at);
  }

  async lastSeen(id: string): Promise<string | undefined> {
    return (await this.redis.hget(LAST_SEEN, id)) ?? undefined;
  }

  async saveEnrollmentToken(digest: string, deviceId: string, ttlSeconds: number): Promise<void> {
    await this.redis.set(`${TOKEN}${digest}`, deviceId, "EX", ttlSeconds);
  }

  async consumeEnrollmentToken(digest: string): Promise<string | undefined> {
    return (await this.redis.getdel(`${TOKEN}${digest}`)) ?? undefined;
  }

  async addRevoked(entry: RevokedCertificate): Promise<void> {
    await this.redis.hsetnx(REVOKED, entry.serial, entry.revokedAt);
  }

  async revoked(): Promise<RevokedCertificate[]> {
    const all = await this.redis.hgetall(REVOKED);
    return Object.entries(all).map(([serial, revokedAt]) => ({ serial, revokedAt }));
  }

  async saveCrl(pem: string): Promise<void> {
    await this.redis.set(CRL, pem);
  }

  async crl(): Promise<string | undefined> {
    return (await this.redis.get(CRL)) ?? undefined;
  }
}
