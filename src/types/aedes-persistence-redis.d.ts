/** The parts of aedes-persistence-redis (no types of its own) that Sluice uses. */
declare module "aedes-persistence-redis" {
  interface RedisPersistenceOptions {
    /** An ioredis connection Sluice built (key prefix, retry strategy, Sentinel). */
    conn?: unknown;
    maxSessionDelivery?: number;
  }
  const persistence: (options: RedisPersistenceOptions) => unknown;
  export default persistence;
}
