import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";

/**
 * Which devices of each edge node have a DBIRTH certificate, so that an NBIRTH clears exactly
 * those (a few exact reads) instead of scanning every retained message for them.
 */
export interface DeviceCertificateIndex {
  /** Records that `device` of the edge node is about to have a DBIRTH certificate. */
  add(group: string, edge: string, device: string): Promise<void>;
  /**
   * The edge node's devices with a certificate, forgotten as they are taken (the NBIRTH clears
   * them); undefined when the index cannot tell (certificates it did not record may exist).
   */
  take(group: string, edge: string): Promise<readonly string[] | undefined>;
}

/** A node alone: the index lives, and dies, with the in-memory retained store it describes. */
export class MemoryDeviceCertificateIndex implements DeviceCertificateIndex {
  private readonly devices = new Map<string, Set<string>>();

  async add(group: string, edge: string, device: string): Promise<void> {
    const key = `${group}/${edge}`;
    const known = this.devices.get(key) ?? new Set<string>();
    known.add(device);
    this.devices.set(key, known);
  }

  async take(group: string, edge: string): Promise<readonly string[]> {
    const key = `${group}/${edge}`;
    const known = this.devices.get(key);
    this.devices.delete(key);
    return [...(known ?? [])];
  }
}

/** No MQTT topic level holds U+0000, so no device id is this. */
const COMPLETE = "\u0000complete";

/**
 * The cluster's index, one Redis set per edge node beside the retained store it describes. A
 * set says it is complete once an NBIRTH took it: before that (certificates stored by a version
 * without the index, then DBIRTHs), `take` answers undefined and the caller scans once.
 */
export class RedisDeviceCertificateIndex implements DeviceCertificateIndex {
  constructor(private readonly redis: RedisClient) {}

  async add(group: string, edge: string, device: string): Promise<void> {
    await this.redis.sadd(STATE_KEYS.sparkplugDeviceCertificates(group, edge), device);
  }

  async take(group: string, edge: string): Promise<readonly string[] | undefined> {
    const key = STATE_KEYS.sparkplugDeviceCertificates(group, edge);
    const replies = await this.redis.multi().smembers(key).del(key).sadd(key, COMPLETE).exec();
    const [error, members] = replies?.[0] ?? [new Error("MULTI discarded"), undefined];
    if (error) throw error;
    const devices = members as string[];
    return devices.includes(COMPLETE) ? devices.filter((d) => d !== COMPLETE) : undefined;
  }
}
