/**
 * Every Redis key of Sluice's persistence, built in one place (the cluster's own keys are in
 * STATE_KEYS, below, and the legacy layout's in LEGACY_KEYS). Names are relative to the
 * connection's key prefix (ioredis adds it to every command's keys); `pattern()` adds it where
 * ioredis does not (SCAN patterns).
 *
 * A client's keys carry its id as a hash tag, `client:{<id>}:...`, so that on a Redis Cluster
 * they share one slot and a script may touch all of them. The id is URI-encoded: an id holding
 * `{` or `}` would otherwise end the tag early, or make it empty (then each key hashes whole).
 * Global indexes (`persistence:*`) sit in slots of their own and are written by separate
 * commands. docs/clustering.md ("Storage layout") describes each key.
 */
export class PersistenceKeys {
  /** Clients with stored subscriptions (raw client ids): read at start into the trie. */
  readonly subscribedClients = "persistence:subscribed";
  /** Wills stored, as `<brokerId>:<encoded client id>`: what streamWill walks. */
  readonly willIndex = "persistence:wills";
  /** Present once the store is in this layout (written at start, after any migration). */
  readonly layoutMarker = "persistence:layout";
  /** Held by the node migrating an older layout. */
  readonly migrationLock = "persistence:migration-lock";
  /** Retained messages on a single Redis: topic -> packet. */
  readonly retainedHash = "retained";

  constructor(private readonly keyPrefix: string) {}

  /** Hash: filter -> subscription (msgpack). */
  subscriptions(clientId: string): string {
    return clientKey(clientId, "subs");
  }

  /** List: the session's queue, oldest first; entries `<ref>`, or `rel:<ref>` once PUBREC'd. */
  queue(clientId: string): string {
    return clientKey(clientId, "queue");
  }

  /** Hash: `<ref>` -> the queued packet (msgpack); `<ref>` is `<brokerId>:<brokerCounter>`. */
  packets(clientId: string): string {
    return clientKey(clientId, "packets");
  }

  /** Hash: packet identifier -> the queue entry of the delivery sent with it. */
  messageIds(clientId: string): string {
    return clientKey(clientId, "msgids");
  }

  /**
   * List, newest first (capped): the refs of the session's latest shared deliveries PUBREC'd
   * (their group entries are not sent to the session again) and, as `@<origin>`, the origins of
   * its inbound QoS 2 deliveries PUBREC'd (their later attempts skip it): pubrel-4.lua.
   */
  sharedReleased(clientId: string): string {
    return clientKey(clientId, "shared-released");
  }

  /** Hash: packet identifier -> an inbound QoS 2 packet awaiting its PUBREL. */
  incoming(clientId: string): string {
    return clientKey(clientId, "incoming");
  }

  /** Hash: brokerId -> the will the client left with that broker (msgpack). */
  wills(clientId: string): string {
    return clientKey(clientId, "wills");
  }

  /** A retained message on a Redis Cluster: one key per topic, spread over the slots. */
  retainedTopic(topic: string): string {
    return `${RETAINED_TOPIC}${encodeURIComponent(topic)}`;
  }

  /** The topic of a key `retainedTopic()` built, as SCAN returns it (with the prefix). */
  topicOfRetainedKey(prefixedKey: string): string {
    return decodeURIComponent(prefixedKey.slice(this.keyPrefix.length + RETAINED_TOPIC.length));
  }

  /** A SCAN pattern: the prefix added, glob characters of `literal` escaped, then `glob`. */
  pattern(literal: string, glob = "*"): string {
    return `${escapeGlob(this.keyPrefix + literal)}${glob}`;
  }

  willIndexEntry(brokerId: string, clientId: string): string {
    return `${brokerId}:${encodeURIComponent(clientId)}`;
  }

  parseWillIndexEntry(entry: string): { brokerId: string; clientId: string } {
    const colon = entry.lastIndexOf(":");
    return {
      brokerId: entry.slice(0, colon),
      clientId: decodeURIComponent(entry.slice(colon + 1)),
    };
  }
}

const RETAINED_TOPIC = "retained:";

function clientKey(clientId: string, part: string): string {
  return `client:{${encodeURIComponent(clientId)}}:${part}`;
}

/** A literal for a SCAN or HSCAN MATCH pattern. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, "\\$&");
}

/**
 * Sluice's cluster keys on the state connection (its prefix is `<keyPrefix>{state}:` on a
 * Cluster, one slot, since scripts touch several at once). The session registry, the device
 * store, connection counts and limiters keep their names next to their scripts.
 */
export const STATE_KEYS = {
  /** `node:<nodeId>`: a node's lease; scripts build other nodes' from the prefix. */
  nodeLeasePrefix: "node:",
  /** `node-server:<nodeId>`: the run id of the Redis server a node's connections are on. */
  nodeServerPrefix: "node-server:",
  /** Taken by the one survivor that publishes a dead node's will. */
  willClaim: (brokerId: string, clientId: string) =>
    `will-claim:${brokerId}:${encodeURIComponent(clientId)}`,
  /** Sorted set: `s|<client id>` (session expiry), `w|<client id>` (delayed will) -> due, ms. */
  sessionTimers: "session-timers",
  /** `session-expiry:<nodeId>`: hash of the MQTT 5 sessions connected there -> expiry, s. */
  expiryIntervalsPrefix: "session-expiry:",
  /** Set: the nodes that have a `session-expiry:<nodeId>` hash. */
  expiryNodes: "session-expiry-nodes",
  /** Set, with a short expiry, while a node does not read its subscription. */
  readingPaused: (nodeId: string) => `reading-paused:${nodeId}`,
  /** String: the cluster's secret for unknown users' made-up SCRAM salts (base64, 32 bytes). */
  scramDecoySecret: "scram-decoy-secret",
  /** Set: the devices of an edge node with a DBIRTH certificate (src/sparkplug/). */
  sparkplugDeviceCertificates: (group: string, edge: string) => `sparkplug-dbirth:${group}/${edge}`,
} as const;

/** The keys of aedes-persistence-redis 11 (what an upgrade migrates from). */
export const LEGACY_KEYS = {
  clients: "clients",
  subscriptions: (clientId: string) => `client:${encodeURIComponent(clientId)}`,
  queue: (clientId: string) => `outgoing:${encodeURIComponent(clientId)}`,
  incomingIds: (clientId: string) => `incoming-ids:${encodeURIComponent(clientId)}`,
  incoming: (clientId: string, messageId: string) =>
    `incoming:${encodeURIComponent(clientId)}:${messageId}`,
  wills: "will",
  /** Queue entries and will list entries name keys without the prefix. */
  packet: (ref: string) => `packet:${ref}`,
  packetCount: (ref: string) => `packet:${ref}:offlineCount`,
} as const;
