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
  }
  const persistence: (options: RedisPersistenceOptions) => unknown;
  export default persistence;
}
