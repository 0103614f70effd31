import type { Cluster, Redis } from "ioredis";

/** A connection to a single Redis (direct or through Sentinel) or to a Redis Cluster. */
export type RedisClient = Redis | Cluster;
