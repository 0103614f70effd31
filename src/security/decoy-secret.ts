import { randomBytes } from "node:crypto";
import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";

const SECRET_BYTES = 32;

/** The secret unknown users' made-up SCRAM salts are derived from (see ScramExchange). */
export type DecoySecret = () => Promise<Buffer>;

/** A node alone: a secret of its own, made at start. */
export function localDecoySecret(): DecoySecret {
  const secret = randomBytes(SECRET_BYTES);
  return async () => secret;
}

/**
 * One secret for the whole cluster, in Redis: the first node to ask writes a random one (SET
 * NX), and every node reads that one, so all nodes answer an unknown user with the same salt
 * and comparing nodes tells a client nothing. Read once per process; a failed read is tried
 * again by the next exchange, which fails meanwhile as a registry lookup does while Redis is
 * away. Whoever can read Redis could tell made-up salts from real ones, but could as well read
 * the registry's devices there.
 */
export function redisDecoySecret(redis: RedisClient): DecoySecret {
  let loaded: Promise<Buffer> | undefined;
  return () => {
    loaded ??= load(redis).catch((error: unknown) => {
      loaded = undefined;
      throw error;
    });
    return loaded;
  };
}

async function load(redis: RedisClient): Promise<Buffer> {
  const key = STATE_KEYS.scramDecoySecret;
  await redis.set(key, randomBytes(SECRET_BYTES).toString("base64"), "NX");
  const secret = Buffer.from((await redis.get(key)) ?? "", "base64");
  if (secret.length !== SECRET_BYTES)
    throw new Error(`${key} in Redis is not a secret Sluice wrote`);
  return secret;
}
