/** The parts of aedes-persistence-redis (no types of its own) that Sluice uses. */
declare module "aedes-persistence-redis" {
  interface RedisPersistenceOptions {
    /** An ioredis connection Sluice built (key prefix, retry strategy, Sentinel). */
    conn?: unknown;
    /**
     * Cluster mode: retained messages as one key per topic, no multi-key commands. An array of
     * nodes makes the persistence build its own Cluster; `true` uses `conn` (Sluice's).
     */
    cluster?: true;
    maxSessionDelivery?: number;
    /** Sluice's patch: each session's stored queue holds at most this many messages. */
    maxQueuedPerClient?: number;
    /** Sluice's patch: the oldest `dropped` messages of a client's queue were dropped. */
    onQueueFull?(clientId: string, dropped: number): void;
  }
  const persistence: (options: RedisPersistenceOptions) => unknown;
  export default persistence;
}
