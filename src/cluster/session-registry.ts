import type { RedisClient } from "../redis/redis-client.js";
import { unlessRedisUnavailable } from "../redis/redis-unavailable.js";

/**
 * The outcome of a CONNECT's claim on its client id. In a cluster, an accepted claim also makes
 * this node the id's owner under a new `epoch` (a fencing token: larger is newer), and names
 * the live node that owned it before, which must close its connection.
 */
export type SessionClaim =
  | { refused: true }
  | { refused: false; existed: boolean; owner?: { epoch: number; displacedNode?: string } };

/**
 * Which client ids hold a stored session (clean session 0), and for which identity. It lets the
 * CONNACK report a session present even when the session has no subscriptions [MQTT-3.2.2-2]
 * (aedes alone only knows of sessions with subscriptions), and lets only the identity that
 * made a session resume or discard it.
 */
export interface SessionRegistry {
  /**
   * Atomically: refuses when a stored session of this client id, or its live connection on
   * another node, belongs to another identity; otherwise records the CONNECT (clean session 1
   * discards the stored one [MQTT-3.1.2-6]) and says whether a session existed. Call only
   * after authentication.
   */
  claim(clientId: string, clean: boolean, username: string | undefined): Promise<SessionClaim>;
}

/** The holder as stored: the username, or a marker no username can equal for anonymous. */
function holderOf(username: string | undefined): string {
  return username === undefined ? "\u0000anonymous" : `u:${username}`;
}

/** One node's sessions, in memory (no Redis). Live takeover is aedes' own, on this node. */
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

/** A live connection's entry: which node holds the client id, since which epoch (µs). */
export interface OwnerEntry {
  clientId: string;
  node: string;
  epoch: number;
}

function parseOwner(clientId: string, text: string): OwnerEntry | undefined {
  const match = /^(\d+)\|([^|]*)\|/.exec(text);
  return match ? { clientId, node: match[2] as string, epoch: Number(match[1]) } : undefined;
}

const SESSIONS = "sessions";
const OWNERS = "owners";
const LAST_EPOCH = "owner-epoch";

/**
 * KEYS sessions, owners, last epoch; ARGV client id, "1" for clean session, holder, node id,
 * the key of a node lease without the node id. An owner entry is "epoch|node|holder". Epochs
 * start from Redis' clock in microseconds, so they keep growing even after Redis lost its data.
 */
const CLAIM = `
local owner = redis.call("HGET", KEYS[2], ARGV[1])
local displaced = ""
if owner then
  local _, node, holder = string.match(owner, "^(%d+)|([^|]*)|(.*)$")
  if node and node ~= ARGV[4] and redis.call("EXISTS", ARGV[5] .. node) == 1 then
    if holder ~= ARGV[3] then return {-1, 0, ""} end
    displaced = node
  end
end
local previous = redis.call("HGET", KEYS[1], ARGV[1])
if previous and previous ~= ARGV[3] then return {-1, 0, ""} end
local existed = 0
if ARGV[2] == "1" then
  redis.call("HDEL", KEYS[1], ARGV[1])
else
  redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
  if previous then existed = 1 end
end
local now = redis.call("TIME")
local epoch = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call("GET", KEYS[3]) or "0")
if epoch <= last then epoch = last + 1 end
-- Lua 5.1 numbers are doubles: written with %d, not "..", which would round them to 14 digits
local text = string.format("%d", epoch)
redis.call("SET", KEYS[3], text)
redis.call("HSET", KEYS[2], ARGV[1], text .. "|" .. ARGV[4] .. "|" .. ARGV[3])
return {existed, text, displaced}`;

/** KEYS owners; ARGV client id, epoch: drops the entry only if that epoch still owns it. */
const RELEASE = `
local owner = redis.call("HGET", KEYS[1], ARGV[1])
if owner and string.sub(owner, 1, #ARGV[2] + 1) == ARGV[2] .. "|" then
  return redis.call("HDEL", KEYS[1], ARGV[1])
end
return 0`;

/**
 * KEYS owners; ARGV pairs of client id and owner entry. Returns the client ids owned by a newer
 * entry; entries Redis lost (restart without data) are written back, since nobody claimed them.
 */
const CONFIRM = `
local lost = {}
for i = 1, #ARGV, 2 do
  local current = redis.call("HGET", KEYS[1], ARGV[i])
  if not current then
    redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1])
  elseif current ~= ARGV[i + 1] then
    lost[#lost + 1] = ARGV[i]
  end
end
return lost`;

/** A connection this node owns: its client id and the epoch of its claim. */
export interface OwnedConnection {
  clientId: string;
  epoch: number;
  username: string | undefined;
}

/**
 * The cluster's sessions and live owners, in two Redis hashes, each claim one atomic script:
 * a client id is owned by exactly one connection in the cluster, the one with the newest
 * epoch. The key prefix applies to every key (ioredis `keyPrefix`).
 */
export class RedisSessionRegistry implements SessionRegistry {
  private readonly leaseKeyPrefix: string;

  constructor(
    private readonly redis: RedisClient,
    private readonly nodeId: string,
    /** The node lease key's prefix inside Redis: the scripts build other nodes' lease keys. */
    leaseKeyPrefix: string,
  ) {
    this.leaseKeyPrefix = `${redis.options.keyPrefix ?? ""}${leaseKeyPrefix}`;
  }

  async claim(
    clientId: string,
    clean: boolean,
    username: string | undefined,
  ): Promise<SessionClaim> {
    const [existed, epochText, displaced] = (await unlessRedisUnavailable(
      "the client id claim",
      this.redis.eval(
        CLAIM,
        3,
        SESSIONS,
        OWNERS,
        LAST_EPOCH,
        clientId,
        clean ? "1" : "0",
        holderOf(username),
        this.nodeId,
        this.leaseKeyPrefix,
      ),
    )) as [number, string | number, string];
    if (existed === -1) return { refused: true };
    const epoch = Number(epochText);
    return {
      refused: false,
      existed: existed === 1,
      owner: displaced === "" ? { epoch } : { epoch, displacedNode: displaced },
    };
  }

  /** The connection of this epoch ended: its owner entry goes, unless a newer one replaced it. */
  async release(clientId: string, epoch: number): Promise<void> {
    await this.redis.eval(RELEASE, 1, OWNERS, clientId, String(epoch));
  }

  /** The live connections' owner entries, up to `limit`: client id, node, epoch (µs). */
  async owners(limit: number): Promise<{ owners: OwnerEntry[]; truncated: boolean }> {
    const owners: OwnerEntry[] = [];
    let cursor = "0";
    do {
      const [next, flat] = await this.redis.hscan(OWNERS, cursor, "COUNT", 1000);
      cursor = next;
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const entry = parseOwner(flat[i] as string, flat[i + 1] as string);
        if (entry === undefined) continue;
        if (owners.length === limit) return { owners, truncated: true };
        owners.push(entry);
      }
    } while (cursor !== "0");
    return { owners, truncated: false };
  }

  /** Who holds a client id's connection now, if anyone. */
  async ownerOf(clientId: string): Promise<OwnerEntry | undefined> {
    const text = await this.redis.hget(OWNERS, clientId);
    return text === null ? undefined : parseOwner(clientId, text);
  }

  /**
   * Which of these connections another node has taken over since (their takeover message may
   * have been lost while this node's Redis subscription was down). One script per batch.
   */
  async takenOver(owned: readonly OwnedConnection[]): Promise<string[]> {
    const args: string[] = [];
    for (const { clientId, epoch, username } of owned) {
      args.push(clientId, `${epoch}|${this.nodeId}|${holderOf(username)}`);
    }
    return (await this.redis.eval(CONFIRM, 1, OWNERS, ...args)) as string[];
  }
}
