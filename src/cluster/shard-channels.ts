import calculateSlot from "cluster-key-slot";

/**
 * How many shard channels carry a Redis Cluster's pub/sub. Every node subscribes all of them and
 * publishes each topic to one, so all nodes of a Sluice cluster must use the same number: it is
 * a constant, not a setting. Their 64 slots fall 21/22/21 on three primaries' slot ranges.
 */
export const SHARD_CHANNEL_COUNT = 64;

/** FNV-1a (32 bits) offset basis and prime. */
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * The shard channels of a Redis Cluster's pub/sub, `<keyPrefix>pubsub:{<n>}` for n below
 * SHARD_CHANNEL_COUNT, and which one a topic goes to. The hash tag `{<n>}` puts each channel in
 * its own slot whatever the prefix (unless the prefix has braces of its own), so the channels
 * spread over the primaries; a topic always maps to the same channel, so one node's messages on
 * a topic go through one primary, in order.
 */
export class ShardChannels {
  /** Every channel, by number. */
  readonly all: readonly string[];
  /** Each channel's hash slot, by number. */
  readonly slots: readonly number[];

  constructor(keyPrefix: string) {
    this.all = Array.from({ length: SHARD_CHANNEL_COUNT }, (_, n) => `${keyPrefix}pubsub:{${n}}`);
    this.slots = this.all.map((channel) => calculateSlot(channel));
  }

  /** The channel a message on `topic` is published to. */
  of(topic: string): string {
    return this.all[shardOf(topic)] as string;
  }
}

/** A topic's channel number: FNV-1a over its UTF-16 code units, the same in every node. */
export function shardOf(topic: string): number {
  let hash = FNV_OFFSET;
  for (let i = 0; i < topic.length; i++) {
    hash ^= topic.charCodeAt(i);
    hash = Math.imul(hash, FNV_PRIME);
  }
  return (hash >>> 0) % SHARD_CHANNEL_COUNT;
}
