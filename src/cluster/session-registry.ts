import { RedisScripts } from "../engine/redis-scripts.js";
import { TurnBatches, type Waiting } from "../engine/turn-batches.js";
import type { RedisClient } from "../redis/redis-client.js";
import { unlessRedisUnavailable } from "../redis/redis-unavailable.js";

/** The registry's Lua scripts, next to this module (the build copies them to dist). */
const SCRIPT_DIR = new URL("./lua/", import.meta.url);

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
   * after authentication, with the connecting client (aedes' own object).
   */
  claim(client: ClaimingClient, username: string | undefined): Promise<SessionClaim>;
}

/** A connecting client, as aedes has it once the CONNECT is read. */
export interface ClaimingClient {
  id: string;
  clean: boolean;
}

/** Reads a connecting client's stored session ahead, in the turn of its claim. */
export interface SessionReadAhead {
  readAhead(client: ClaimingClient): void;
}

/** The holder as stored: the username, or a marker no username can equal for anonymous. */
function holderOf(username: string | undefined): string {
  return username === undefined ? "\u0000anonymous" : `u:${username}`;
}

/** One node's sessions, in memory (no Redis). Live takeover is aedes' own, on this node. */
export class MemorySessionRegistry implements SessionRegistry {
  private readonly holders = new Map<string, string>();

  async claim(
    { id: clientId, clean }: ClaimingClient,
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

/** The registry's scripts, in `lua/` here (`<name>-<numberOfKeys>.lua`). */
type ScriptName = "claimClientIds" | "releaseOwner" | "confirmOwners";

interface ClaimRequest {
  clientId: string;
  clean: boolean;
  holder: string;
}

/** A connection this node owns: its client id and the epoch of its claim. */
export interface OwnedConnection {
  clientId: string;
  epoch: number;
  username: string | undefined;
}

/**
 * The cluster's sessions and live owners, in two Redis hashes: a client id is owned by exactly
 * one connection in the cluster, the one with the newest epoch. The claims of one turn of the
 * event loop (every CONNECT authenticated in it) go to Redis as one script, applied in order
 * and atomically; each client's stored session is read ahead in the same turn, so that lookup,
 * claim and ownership cost a CONNECT one round trip. The key prefix applies to every key
 * (ioredis `keyPrefix`).
 */
export class RedisSessionRegistry implements SessionRegistry {
  private readonly leaseKeyPrefix: string;
  private readonly scripts: RedisScripts<ScriptName>;
  private readonly claims = new TurnBatches<ClaimRequest, SessionClaim>((call) =>
    this.claimAll(call),
  );

  constructor(
    private readonly redis: RedisClient,
    private readonly nodeId: string,
    /** The node lease key's prefix inside Redis: the scripts build other nodes' lease keys. */
    leaseKeyPrefix: string,
    /** The persistence, whose reads of a connecting client go out with its claim. */
    private readonly sessions: SessionReadAhead,
  ) {
    this.leaseKeyPrefix = `${redis.options.keyPrefix ?? ""}${leaseKeyPrefix}`;
    this.scripts = new RedisScripts<ScriptName>(redis, SCRIPT_DIR);
  }

  claim(client: ClaimingClient, username: string | undefined): Promise<SessionClaim> {
    this.sessions.readAhead(client);
    return this.claims.add("", {
      clientId: client.id,
      clean: client.clean,
      holder: holderOf(username),
    });
  }

  /** The connection of this epoch ended: its owner entry goes, unless a newer one replaced it. */
  async release(clientId: string, epoch: number): Promise<void> {
    await this.scripts.run("releaseOwner", [OWNERS], [clientId, String(epoch)]);
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
    return (await this.scripts.run("confirmOwners", [OWNERS], args)) as string[];
  }

  private claimAll(call: Array<Waiting<ClaimRequest, SessionClaim>>): void {
    const args: string[] = [this.nodeId, this.leaseKeyPrefix];
    for (const { item } of call) args.push(item.clientId, item.clean ? "1" : "0", item.holder);
    unlessRedisUnavailable(
      "the client id claim",
      this.scripts.run("claimClientIds", [SESSIONS, OWNERS, LAST_EPOCH], args),
    ).then(
      (reply) => {
        const replies = reply as Array<number | string>;
        call.forEach((waiting, i) => {
          waiting.resolve(claimOf(replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]));
        });
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }
}

/** One claim's three values in claim-client-ids-3.lua's reply. */
function claimOf(
  existed: number | string | undefined,
  epochText: number | string | undefined,
  displaced: number | string | undefined,
): SessionClaim {
  if (Number(existed) === -1) return { refused: true };
  const epoch = Number(epochText);
  return {
    refused: false,
    existed: Number(existed) === 1,
    owner: displaced === "" ? { epoch } : { epoch, displacedNode: String(displaced) },
  };
}
