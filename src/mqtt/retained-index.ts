import { Readable } from "node:stream";

interface RetainedPacket {
  topic: string;
  payload: Buffer | Uint8Array | string;
}

/** The two methods of aedes' in-memory persistence this index wraps. */
interface RetainedStore {
  storeRetained(packet: RetainedPacket, ...rest: unknown[]): unknown;
  createRetainedStreamCombi(patterns: string[]): Readable;
}

const isWildcard = (filter: string): boolean => filter.includes("+") || filter.includes("#");

/** A stream of no retained messages: one object, where the store's walk costs several streams. */
function noRetained(): Readable {
  return new Readable({
    objectMode: true,
    read() {
      this.push(null);
    },
  });
}

/**
 * Keeps the set of topics that hold a retained message in aedes' in-memory store (every write
 * goes through `storeRetained`), so that a SUBSCRIBE whose filters can match none of them gets an
 * empty stream at once. The store walks all its retained messages for each filter through two
 * stacked object streams: in a subscribe storm that was the node's largest allocation (and
 * garbage collection its largest cost), for nothing when, as usual, command topics hold no
 * retained message.
 */
export function indexRetained<T>(persistence: T): T {
  const store = persistence as T & RetainedStore;
  const topics = new Set<string>();
  const storeRetained = store.storeRetained.bind(store);
  const createRetainedStreamCombi = store.createRetainedStreamCombi.bind(store);
  store.storeRetained = (packet, ...rest) => {
    // [MQTT-3.3.1-10] an empty retained message deletes the topic's retained message.
    if (packet.payload.length === 0) topics.delete(packet.topic);
    else topics.add(packet.topic);
    return storeRetained(packet, ...rest);
  };
  store.createRetainedStreamCombi = (patterns) => {
    if (topics.size === 0) return noRetained();
    for (const pattern of patterns) {
      if (isWildcard(pattern) || topics.has(pattern)) return createRetainedStreamCombi(patterns);
    }
    return noRetained();
  };
  return persistence;
}
