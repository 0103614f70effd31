import { RedisScripts } from "../engine/redis-scripts.js";
import { CONNECT_LINGER_MS, TurnBatches, type Waiting } from "../engine/turn-batches.js";
import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";
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
   * another node, belongs to another identity; otherwise records the CONNECT (Clean Start
   * discards the stored one [MQTT-3.1.2-4] [MQTT-3.1.2-6]) and says whether a session existed.
   * Call only after authentication, with the connecting client (aedes' own object).
   */
  claim(
    client: ClaimingClient,
    terms: SessionTerms,
    username: string | undefined,
  ): Promise<SessionClaim>;
  /** The session ended (expired, or its connection ended with expiry 0): it exists no more. */
  forget?(clientId: string): void;
}

/** A connecting client, as aedes has it once the CONNECT is read. */
export interface ClaimingClient {
  id: string;
  clean: boolean;
}

/**
 * What a CONNECT says of its session: whether it discards the stored one (MQTT 3.1.1 clean
 * session 1, MQTT 5 Clean Start), whether the session outlives the connection (clean session
 * 0, or a Session Expiry Interval above 0), and MQTT 5's interval (seconds) to keep for the
 * survivors should this node die (undefined: none, as for MQTT 3.1.1 or a session that was
 * never stored).
 */
export interface SessionTerms {
  cleanStart: boolean;
  persists: boolean;
  expirySeconds: number | undefined;
}

/** Reads connecting clients' stored sessions ahead, as their claims go to Redis. */
export interface SessionReadAhead {
  /** Called right after the claims of these clients went to Redis, on the same connection. */
  readAhead(clients: readonly ClaimingClient[]): void;
  /**
   * The claim found no connection of the id, anywhere: nothing but this connection writes its
   * session from now on, and what an earlier one wrote was there for the read to see.
   */
  firstOwner(client: ClaimingClient): void;
  /** Drops the client's delayed wills left with other nodes (its reconnect voids them). */
  dropDelayedWills(clientId: string): Promise<void>;
}

/** The holder as stored: the username, or a marker no username can equal for anonymous. */
function holderOf(username: string | undefined): string {
  return username === undefined ? "\u0000anonymous" : `u:${username}`;
}

/** One node's sessions, in memory (no Redis). Live takeover is aedes' own, on this node. */
export class MemorySessionRegistry implements SessionRegistry {
  private readonly holders = new Map<string, string>();

  async claim(
    { id: clientId }: ClaimingClient,
    { cleanStart, persists }: SessionTerms,
    username: string | undefined,
  ): Promise<SessionClaim> {
    const holder = holderOf(username);
    const previous = this.holders.get(clientId);
    if (previous !== undefined && previous !== holder) return { refused: true };
    if (persists) this.holders.set(clientId, holder);
    else this.holders.delete(clientId);
    return { refused: false, existed: !cleanStart && previous !== undefined };
  }

  forget(clientId: string): void {
    this.holders.delete(clientId);
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
  client: ClaimingClient;
  clientId: string;
  terms: SessionTerms;
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
 * and atomically, with one script reading their stored sessions beside it, so that lookup,
 * claim and ownership cost a CONNECT one round trip. One call is answered at a time: claims
 * made meanwhile go together in the next, so under a connection storm a call carries what came
 * over a round trip. The key prefix applies to every key (ioredis `keyPrefix`).
 */
export class RedisSessionRegistry implements SessionRegistry {
  private readonly leaseKeyPrefix: string;
  private readonly scripts: RedisScripts<ScriptName>;
  private readonly claims = new TurnBatches<ClaimRequest, SessionClaim>(
    (call) => this.claimAll(call),
    { paced: true, lingerMs: CONNECT_LINGER_MS },
  );

  constructor(
    private readonly redis: RedisClient,
    private readonly nodeId: string,
    /** The node lease key's prefix inside Redis: the scripts build other nodes' lease keys. */
    leaseKeyPrefix: string,
    /** The persistence, whose reads of a connecting client go out with its claim. */
    private readonly sessions: SessionReadAhead,
    /** The key of a node's session expiry intervals without the node id (SessionTimers). */
    private readonly intervalsKeyPrefix: string,
  ) {
    this.leaseKeyPrefix = `${redis.options.keyPrefix ?? ""}${leaseKeyPrefix}`;
    this.scripts = new RedisScripts<ScriptName>(redis, SCRIPT_DIR);
  }

  claim(
    client: ClaimingClient,
    terms: SessionTerms,
    username: string | undefined,
  ): Promise<SessionClaim> {
    return this.claims.add("", { client, clientId: client.id, terms, holder: holderOf(username) });
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

  private claimAll(call: Array<Waiting<ClaimRequest, SessionClaim>>): Promise<void> {
    const args: string[] = [this.nodeId, this.leaseKeyPrefix, this.intervalsKeyPrefix];
    for (const { item } of call) {
      const { cleanStart, persists, expirySeconds } = item.terms;
      args.push(item.clientId, cleanStart ? "1" : "0", item.holder, persists ? "1" : "0");
      args.push(expirySeconds === undefined ? "" : String(expirySeconds));
    }
    const keys = [SESSIONS, OWNERS, LAST_EPOCH, STATE_KEYS.sessionTimers, STATE_KEYS.expiryNodes];
    const claimed = this.scripts.run("claimClientIds", keys, args);
    // After the claims, in the same write: a CONNECT waits for one round trip, and the read sees
    // what a connection that owned the id wrote before its owner entry went.
    this.sessions.readAhead(call.map(({ item }) => item.client));
    return unlessRedisUnavailable("the client id claim", claimed).then(
      (reply) => {
        const replies = reply as Array<number | string>;
        call.forEach((waiting, i) => {
          const at = 5 * i;
          const claim = claimOf(replies[at], replies[at + 1], replies[at + 2]);
          if (!claim.refused && Number(replies[at + 4]) === 0) {
            this.sessions.firstOwner(waiting.item.client);
          }
          waiting.resolve(claim);
          // The client is back: a delayed will it left with another node is void.
          if (Number(replies[at + 3]) === 1) {
            this.sessions.dropDelayedWills(waiting.item.clientId).catch(() => {});
          }
        });
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }
}

/** One claim's first three values in claim-client-ids-5.lua's reply. */
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
