import { ReplyError } from "ioredis";
import { RedisUnavailableError } from "../errors.js";

/**
 * Awaits a Redis command that a client's request depends on. A command Redis answered with an
 * error (a script's bug, a wrong type) stays what it is; one that got no answer (connection
 * down, retries used up, a failover in progress) becomes a RedisUnavailableError, which the
 * client hears as "server unavailable" and which the outage's own log line already explains.
 */
export async function unlessRedisUnavailable<T>(what: string, command: Promise<T>): Promise<T> {
  try {
    return await command;
  } catch (error) {
    if (error instanceof ReplyError) throw error;
    throw new RedisUnavailableError(`Redis did not answer: ${what}`, { cause: error });
  }
}
