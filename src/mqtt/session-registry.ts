import type { Redis } from "ioredis";

export type SessionClaim = { refused: true } | { refused: false; existed: boolean };

/**
 * Which client ids hold a stored session (clean session 0), and for which identity. It lets the
 * CONNACK report a session present even when the session has no subscriptions [MQTT-3.2.2-2]
 * (aedes alone only knows of sessions with subscriptions), and lets only the identity that
 * made a session resume or discard it.
 */
export interface SessionRegistry {
  /**
   * Atomically: refuses when a stored session of this client id belongs to another identity;
   * otherwise records the CONNECT (clean session 1 discards the stored one [MQTT-3.1.2-6]) and
   * says whether a session existed. Call only after authentication.
   */
  claim(clientId: string, clean: boolean, username: string | undefined): Promise<SessionClaim>;
}

/** The holder as stored: the username, or a marker no username can equal for anonymous. */
function holderOf(username: string | undefined): string {
  return username === undefined ? "\u0000anonymous" : `u:${username}`;
}

/** One node's sessions, in memory (no Redis). */
export class MemorySessionRegistry implements SessionRegistry {
  private readonly holders = new Map<string, string>();

  async claim(
    clientId: string,
    clean: boolean,
    username: string | undefined,
  ): Promise<SessionClaim> {
    const holder = holderOf(username);
    const previous = this.holders.get(clientId);
    if (previous !== undefined && previous !== holder) return { refused: true };
    if (clean) {
      this.holders.delete(clientId);
      return { refused: false, existed: false };
    }
    this.holders.set(clientId, holder);
    return { refused: false, existed: previous !== undefined };
  }
}

/** KEYS[1] the sessions hash; ARGV client id, "1" for clean session, holder. */
const CLAIM = `
local previous = redis.call("HGET", KEYS[1], ARGV[1])
if previous and previous ~= ARGV[3] then return -1 end
if ARGV[2] == "1" then
  redis.call("HDEL", KEYS[1], ARGV[1])
  return 0
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
if previous then return 1 end
return 0`;

/** The cluster's sessions, in one Redis hash: the check and the update are one atomic script. */
export class RedisSessionRegistry implements SessionRegistry {
  constructor(private readonly redis: Redis) {}

  async claim(
    clientId: string,
    clean: boolean,
    username: string | undefined,
  ): Promise<SessionClaim> {
    const result = (await this.redis.eval(
      CLAIM,
      1,
      "sessions",
      clientId,
      clean ? "1" : "0",
      holderOf(username),
    )) as number;
    if (result === -1) return { refused: true };
    return { refused: false, existed: result === 1 };
  }
}
