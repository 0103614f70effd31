import type { Redis } from "ioredis";
import { asError } from "../errors.js";
import type { Logger } from "../observability/logger.js";

const MIB = 1024 * 1024;

/**
 * The smallest `client-output-buffer-limit pubsub` hard limit a node needs from Redis. Redis
 * cuts a subscriber connection whose pending output passes the hard limit, and whatever it
 * held is lost. The node's bound on its own subscription's lag (issue 14, item 1: planned at
 * a few MiB, past which it stops reading its publishers) does not hold back the other nodes'
 * publishers, which keep publishing into that lag until their own bounds act, so the limit
 * needs headroom well above one node's bound: 64 MiB. A hard limit of 0 means no limit, which
 * is fine too.
 */
export const REQUIRED_PUBSUB_HARD_LIMIT_BYTES = 64 * MIB;

/** The `client-output-buffer-limit` the docs, the chart's Redis values and the overlay set. */
export const RECOMMENDED_PUBSUB_LIMIT = "pubsub 256mb 64mb 60";

/** One class of `client-output-buffer-limit`: a hard limit, and a soft one held for a time. */
export interface OutputBufferLimit {
  hardBytes: number;
  softBytes: number;
  softSeconds: number;
}

/** Redis' memory units (memtoll): k/m/g are powers of 1000, kb/mb/gb of 1024. */
const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1_000,
  kb: 1024,
  m: 1_000_000,
  mb: MIB,
  g: 1_000_000_000,
  gb: 1024 * MIB,
};

/** Bytes from a Redis memory value ("33554432", "32mb", "1GB"); undefined if it is not one. */
export function parseMemory(text: string): number | undefined {
  const match = /^(\d+)([a-z]*)$/i.exec(text);
  const unit = UNITS[match?.[2]?.toLowerCase() ?? "?"];
  if (!match || unit === undefined) return undefined;
  return Number(match[1]) * unit;
}

/**
 * The pubsub class of a `client-output-buffer-limit` value, as CONFIG GET returns it
 * ("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60") or as redis.conf
 * writes it ("pubsub 32mb 8mb 60"). Undefined when the value has no well-formed pubsub class.
 */
export function pubsubLimit(value: string): OutputBufferLimit | undefined {
  const words = value.trim().split(/\s+/);
  const at = words.findIndex((word) => word.toLowerCase() === "pubsub");
  if (at < 0) return undefined;
  const [hard, soft, seconds] = words.slice(at + 1, at + 4).map((word) => parseMemory(word));
  if (hard === undefined || soft === undefined || seconds === undefined) return undefined;
  return { hardBytes: hard, softBytes: soft, softSeconds: seconds };
}

/** Whether Redis lets a node's subscription lag as far as the node needs (0: no limit). */
export function isEnough(limit: OutputBufferLimit): boolean {
  return limit.hardBytes === 0 || limit.hardBytes >= REQUIRED_PUBSUB_HARD_LIMIT_BYTES;
}

/** "pubsub 32mb 8mb 60": the limit as redis.conf writes it, in whole MiB where it can be. */
export function formatLimit(limit: OutputBufferLimit): string {
  return `pubsub ${formatBytes(limit.hardBytes)} ${formatBytes(limit.softBytes)} ${limit.softSeconds}`;
}

function formatBytes(bytes: number): string {
  if (bytes === 0) return "0";
  if (bytes % MIB === 0) return `${bytes / MIB}mb`;
  if (bytes % 1024 === 0) return `${bytes / 1024}kb`;
  return String(bytes);
}

/** A Redis server to check, and how the log names it. */
export interface LimitTarget {
  address: string;
  connection: Redis;
}

/**
 * Reads `client-output-buffer-limit` on each server (CONFIG GET) and warns, once per server,
 * where the pubsub hard limit is below what a node needs (`redis.output_buffer_limit_low`).
 * Managed Redis often refuses CONFIG (renamed, or not in the ACL user's commands): that is
 * logged once, at info, for every server it happened on, and the node goes on.
 */
export async function checkPubsubOutputLimit(
  targets: readonly LimitTarget[],
  log: Logger,
): Promise<void> {
  const wanted = `a hard limit of at least ${formatBytes(REQUIRED_PUBSUB_HARD_LIMIT_BYTES)}, or 0 (e.g. ${RECOMMENDED_PUBSUB_LIMIT})`;
  const unchecked: Array<{ redis: string; reason: string }> = [];
  await Promise.all(
    targets.map(async ({ address, connection }) => {
      let value: string;
      try {
        const reply = (await connection.config("GET", "client-output-buffer-limit")) as unknown;
        value = Array.isArray(reply) && typeof reply[1] === "string" ? reply[1] : "";
      } catch (error) {
        unchecked.push({ redis: address, reason: asError(error).message });
        return;
      }
      const limit = pubsubLimit(value);
      if (limit === undefined) {
        unchecked.push({ redis: address, reason: `no pubsub class in "${value}"` });
      } else if (!isEnough(limit)) {
        log.warn(
          {
            event: "redis.output_buffer_limit_low",
            redis: address,
            found: formatLimit(limit),
            wanted,
          },
          `Redis cuts a subscriber whose pending output passes client-output-buffer-limit ${formatLimit(limit)}: a burst can cut this node off pub/sub; set ${RECOMMENDED_PUBSUB_LIMIT} (docs/operations.md)`,
        );
      } else {
        log.debug(
          {
            event: "redis.output_buffer_limit_ok",
            redis: address,
            found: formatLimit(limit),
            wanted,
          },
          "Redis' pub/sub output buffer limit leaves this node the room it needs",
        );
      }
    }),
  );
  if (unchecked.length > 0) {
    log.info(
      { event: "redis.output_buffer_limit_unchecked", servers: unchecked },
      `could not read Redis' client-output-buffer-limit (CONFIG refused?): make sure it is ${RECOMMENDED_PUBSUB_LIMIT} or higher`,
    );
  }
}
