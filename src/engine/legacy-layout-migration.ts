import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Cluster, type Redis } from "ioredis";
import msgpack from "msgpack-lite";
import type { Logger } from "../observability/logger.js";
import { LEGACY_KEYS, PersistenceKeys } from "../redis/redis-keys.js";

/** What the marker key holds once the store is in Sluice's own layout. */
const LAYOUT_VERSION = "sluice-1";
/** Long enough for a large migration's steps; a crashed migrator's lock expires after it. */
const LOCK_MS = 60_000;
const LOCK_POLL_MS = 250;
const BATCH = 500;

export interface MigrationReport {
  sessions: number;
  queued: number;
  incoming: number;
  wills: number;
}

/**
 * Brings a store written by aedes-persistence-redis 11 (the engine's persistence in earlier
 * Sluice versions) into Sluice's own layout, once: a node starting on a store without the
 * layout marker takes a lock, converts subscriptions, queues (with their packet identifiers and
 * PUBRELs), inbound QoS 2 packets and wills, deletes the old keys, and sets the marker; other
 * nodes starting meanwhile wait for the marker. Retained messages keep their keys. Each
 * session is rebuilt from the old keys (new keys cleared first), so a migration interrupted by
 * a crash is run again whole by the next node. Old nodes must all be stopped first: what they
 * write after the marker is set is not read (docs/operations.md).
 */
export async function migrateLegacyLayout(
  db: Redis | Cluster,
  log: Logger,
): Promise<MigrationReport | undefined> {
  const keys = new PersistenceKeys(db.options.keyPrefix ?? "");
  const token = randomBytes(8).toString("hex");
  for (;;) {
    if ((await db.get(keys.layoutMarker)) !== null) return undefined;
    if ((await db.set(keys.migrationLock, token, "PX", LOCK_MS, "NX")) === "OK") break;
    await sleep(LOCK_POLL_MS);
  }
  try {
    if ((await db.get(keys.layoutMarker)) !== null) return undefined;
    const report = await new Migration(db, keys).run();
    await db.set(keys.layoutMarker, LAYOUT_VERSION);
    if (report.sessions + report.incoming + report.wills > 0) {
      log.warn(
        { event: "persistence.migrated", ...report },
        "converted the stored sessions of aedes-persistence-redis to Sluice's layout",
      );
    }
    return report;
  } finally {
    if ((await db.get(keys.migrationLock)) === token) await db.del(keys.migrationLock);
  }
}

class Migration {
  private readonly prefix: string;

  constructor(
    private readonly db: Redis | Cluster,
    private readonly keys: PersistenceKeys,
  ) {
    this.prefix = db.options.keyPrefix ?? "";
  }

  async run(): Promise<MigrationReport> {
    const report: MigrationReport = { sessions: 0, queued: 0, incoming: 0, wills: 0 };
    const clientIds = await this.db.smembers(LEGACY_KEYS.clients);
    for (let start = 0; start < clientIds.length; start += BATCH) {
      const batch = clientIds.slice(start, start + BATCH);
      const queued = await Promise.all(batch.map((clientId) => this.session(clientId)));
      report.sessions += batch.length;
      report.queued += queued.reduce((sum, count) => sum + count, 0);
    }
    report.incoming = await this.incoming();
    report.wills = await this.wills();
    // Packets only queues named, and PUBREL copies: every queue is converted by now.
    for (const pattern of ["packet:", "outgoing:"]) {
      for await (const batch of this.scan(pattern)) await this.unlink(batch);
    }
    await this.db.del(LEGACY_KEYS.clients);
    return report;
  }

  /** One session: subscriptions, then its queue. Returns the messages queued. */
  private async session(clientId: string): Promise<number> {
    const db = this.db;
    const old = await db.hgetallBuffer(LEGACY_KEYS.subscriptions(clientId));
    const fields: Array<string | Buffer> = [];
    for (const [topic, value] of Object.entries(old)) {
      // Version 8 stored the QoS digit alone.
      fields.push(
        topic,
        value.length === 1 ? msgpack.encode({ topic, qos: Number(value) }) : value,
      );
    }
    if (fields.length > 0) {
      await db.sadd(this.keys.subscribedClients, clientId);
      await db.hset(this.keys.subscriptions(clientId), ...fields);
    }
    const queued = await this.queue(clientId);
    await this.unlink([LEGACY_KEYS.subscriptions(clientId), LEGACY_KEYS.queue(clientId)]);
    return queued;
  }

  /**
   * Queue entries name a shared packet (`packet:<broker>:<counter>`, holding the id of its last
   * delivery) or, after PUBREC, the client's PUBREL copy (`outgoing:<client>:<broker>:<counter>`).
   */
  private async queue(clientId: string): Promise<number> {
    const db = this.db;
    const queue = this.keys.queue(clientId);
    const packets = this.keys.packets(clientId);
    const messageIds = this.keys.messageIds(clientId);
    await db.del(queue, packets, messageIds);
    const entries = await db.lrange(LEGACY_KEYS.queue(clientId), 0, -1);
    const values = await Promise.all(entries.map((entry) => db.getBuffer(entry)));
    let queued = 0;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i] as string;
      const value = values[i];
      if (value === null || value === undefined) continue;
      const packet = msgpack.decode(value) as { messageId?: number | null };
      const [broker, counter] = entry.split(":").slice(-2);
      const ref = `${broker}:${counter}`;
      const released = !entry.startsWith("packet:");
      const queueEntry = released ? `rel:${ref}` : ref;
      await db.hset(packets, ref, value);
      await db.rpush(queue, queueEntry);
      if (typeof packet.messageId === "number") {
        await db.hset(messageIds, packet.messageId, queueEntry);
      }
      queued++;
    }
    return queued;
  }

  /** `incoming:<client>:<id>` keys (and the patched version's `incoming-ids:<client>` sets). */
  private async incoming(): Promise<number> {
    let count = 0;
    for await (const batch of this.scan("incoming")) {
      const packets = batch.filter((key) => key.startsWith("incoming:"));
      const values = await Promise.all(packets.map((key) => this.db.getBuffer(key)));
      for (let i = 0; i < packets.length; i++) {
        const value = values[i];
        const parts = (packets[i] as string).split(":");
        if (value === null || value === undefined || parts.length !== 3) continue;
        const clientId = decodeURIComponent(parts[1] as string);
        await this.db.hset(this.keys.incoming(clientId), parts[2] as string, value);
        count++;
      }
      await this.unlink(batch);
    }
    return count;
  }

  /** The `will` list names `will:<broker>:<client>` keys. */
  private async wills(): Promise<number> {
    const entries = await this.db.lrange(LEGACY_KEYS.wills, 0, -1);
    let count = 0;
    for (const entry of new Set(entries)) {
      const value = await this.db.getBuffer(entry);
      const colon = entry.lastIndexOf(":");
      const brokerId = entry.slice(entry.indexOf(":") + 1, colon);
      const clientId = decodeURIComponent(entry.slice(colon + 1));
      if (value !== null) {
        await this.db.sadd(this.keys.willIndex, this.keys.willIndexEntry(brokerId, clientId));
        await this.db.hset(this.keys.wills(clientId), brokerId, value);
        count++;
      }
      await this.unlink([entry]);
    }
    await this.db.del(LEGACY_KEYS.wills);
    return count;
  }

  /** Keys starting with `literal` (unprefixed), in batches; SCAN on every primary of a Cluster. */
  private async *scan(literal: string): AsyncGenerator<string[]> {
    const match = this.keys.pattern(literal);
    const nodes = this.db instanceof Cluster ? this.db.nodes("master") : [this.db];
    for (const node of nodes) {
      for await (const chunk of node.scanStream({ match, count: 1000 })) {
        const found = (chunk as string[]).map((key) => key.slice(this.prefix.length));
        if (found.length > 0) yield found;
      }
    }
  }

  /** One DEL per key: on a Cluster the keys sit in different slots. */
  private async unlink(keys: readonly string[]): Promise<void> {
    await Promise.all(keys.map((key) => this.db.del(key)));
  }
}
