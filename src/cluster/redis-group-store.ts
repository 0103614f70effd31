import { createHash } from "node:crypto";
import { sharedField } from "../engine/inbound-qos2.js";
import { RedisScripts } from "../engine/redis-scripts.js";
import type { RedisClient } from "../redis/redis-client.js";
import type {
  Assignment,
  Delivery,
  GroupState,
  JoinResult,
  LeaveResult,
  ReservedMessage,
  SharedGroupStore,
} from "../shared-subscriptions/group-store.js";
import type { GroupLimits } from "../shared-subscriptions/memory-group-store.js";

const SCRIPT_DIR = new URL("./share-lua/", import.meta.url);

type ScriptName = "shareAssign" | "shareJoin" | "shareLeave";

/** Hash: group id -> group name (`<share name>/<filter>`). */
const GROUPS = "share:groups";

/**
 * The shared groups of a cluster, in Redis, on the state connection (one slot on a Cluster, so
 * a script may touch a group's keys and the node leases). A group's keys carry a short hash of
 * its name: `share:<id>:members`, `:registered`, `:backlog`, `:q:<client id>` (a stream per
 * member: entries are acknowledged by deleting them). Scripts: share-lua/.
 * docs/shared-subscriptions.md.
 */
export class RedisGroupStore implements SharedGroupStore {
  private readonly scripts: RedisScripts<ScriptName>;
  private readonly keyPrefix: string;
  private readonly leasePrefix: string;
  private readonly ids = new Map<string, string>();

  constructor(
    private readonly redis: RedisClient,
    private readonly limits: GroupLimits,
    /** The node lease key's prefix, relative to the connection's key prefix. */
    leaseKeyPrefix: string,
  ) {
    this.keyPrefix = redis.options.keyPrefix ?? "";
    this.leasePrefix = `${this.keyPrefix}${leaseKeyPrefix}`;
    this.scripts = new RedisScripts<ScriptName>(redis, SCRIPT_DIR);
  }

  async snapshot(): Promise<GroupState[]> {
    const groups = await this.redis.hgetall(GROUPS);
    const ids = Object.keys(groups);
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) {
      pipeline.hgetall(groupKey(id, "members"));
      pipeline.xlen(groupKey(id, "backlog"));
    }
    const replies = (await pipeline.exec()) ?? [];
    const states: GroupState[] = [];
    ids.forEach((id, index) => {
      const name = groups[id] as string;
      this.ids.set(name, id);
      const [membersError, members] = replies[index * 2] ?? [];
      const [backlogError, backlog] = replies[index * 2 + 1] ?? [];
      if (membersError || backlogError) throw membersError ?? backlogError;
      const list = Object.entries((members ?? {}) as Record<string, string>)
        .map(([clientId, token]) => ({ clientId, token }))
        .sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0));
      states.push({ name, members: list, backlog: Number(backlog ?? 0) });
    });
    return states;
  }

  async join(name: string, clientId: string, token: string): Promise<JoinResult> {
    const id = this.idOf(name);
    const reply = (await this.scripts.runBuffer(
      "shareJoin",
      [
        GROUPS,
        groupKey(id, "members"),
        groupKey(id, "registered"),
        groupKey(id, "backlog"),
        queueKey(id, clientId),
      ],
      [id, name, clientId, token, this.limits.maxGroups, this.limits.maxQueued],
    )) as Buffer[];
    if (String(reply[0]) === "quota") return { refused: true, pending: [] };
    const pending: Delivery[] = [];
    for (let i = 1; i + 2 < reply.length; i += 3) {
      pending.push({
        member: clientId,
        token,
        entryId: String(reply[i]),
        message: reply[i + 1] as Buffer,
        origin: String(reply[i + 2]),
      });
    }
    return { refused: false, pending };
  }

  async leave(
    name: string,
    clientId: string,
    token: string,
    unregister: boolean,
  ): Promise<LeaveResult> {
    const id = this.idOf(name);
    const [dropped, moved, ended] = (await this.scripts.runBuffer(
      "shareLeave",
      [
        GROUPS,
        groupKey(id, "members"),
        groupKey(id, "registered"),
        groupKey(id, "backlog"),
        queueKey(id, clientId),
      ],
      [
        ...[id, clientId, token, unregister ? "1" : "0"],
        ...[this.leasePrefix, `${this.keyPrefix}${groupKey(id, "q:")}`, this.limits.maxQueued],
      ],
    )) as [number, Buffer[], number];
    const deliveries: Delivery[] = [];
    for (let i = 0; i + 4 < moved.length; i += 5) {
      deliveries.push({
        member: String(moved[i]),
        token: String(moved[i + 1]),
        entryId: String(moved[i + 2]),
        message: moved[i + 3] as Buffer,
        origin: String(moved[i + 4]),
      });
    }
    return { moved: deliveries, dropped: Number(dropped), ended: Number(ended) === 1 };
  }

  async assign(
    name: string,
    proposed: string | undefined,
    message: Buffer,
    keep: boolean,
    reserved?: ReservedMessage,
  ): Promise<Assignment> {
    const id = this.idOf(name);
    const args: Array<string | number | Buffer> = [
      ...[id, proposed ?? "", message, keep ? "1" : "0", this.limits.maxQueued],
      ...[this.leasePrefix, `${this.keyPrefix}${groupKey(id, "q:")}`],
    ];
    let incoming = GROUPS;
    if (reserved?.key.startsWith(this.keyPrefix)) {
      // The connection adds its key prefix to keys.
      incoming = reserved.key.slice(this.keyPrefix.length);
      args.push(reserved.field, sharedField(reserved.field), reserved.pending);
    }
    const reply = (await this.scripts.run(
      "shareAssign",
      [GROUPS, groupKey(id, "members"), groupKey(id, "backlog"), incoming],
      args,
    )) as string[];
    switch (reply[0]) {
      case "member":
        return {
          to: "member",
          member: reply[1] as string,
          token: reply[2] as string,
          entryId: reply[3] as string,
          origin: reply[4] as string,
        };
      case "backlog":
        return { to: "backlog" };
      case "dropped":
        return { to: "dropped", reason: reply[1] === "queue_full" ? "queue_full" : "backlog_full" };
      default:
        return { to: "none" };
    }
  }

  async acknowledge(name: string, clientId: string, entryIds: readonly string[]): Promise<void> {
    if (entryIds.length === 0) return;
    await this.redis.xdel(queueKey(this.idOf(name), clientId), ...entryIds);
  }

  async pending(name: string, clientId: string, token: string): Promise<Delivery[]> {
    const entries = await this.redis.xrangeBuffer(queueKey(this.idOf(name), clientId), "-", "+");
    return entries.map(([entryId, fields]) => ({
      member: clientId,
      token,
      entryId: String(entryId),
      message: fields[1] as Buffer,
      origin: fields[3] === undefined ? firstOrigin(String(entryId), clientId) : String(fields[3]),
    }));
  }

  async liveNodes(nodeIds: readonly string[]): Promise<Set<string>> {
    const live = new Set<string>();
    if (nodeIds.length === 0) return live;
    const pipeline = this.redis.pipeline();
    for (const node of nodeIds)
      pipeline.exists(`${this.leasePrefix.slice(this.keyPrefix.length)}${node}`);
    const replies = (await pipeline.exec()) ?? [];
    nodeIds.forEach((node, index) => {
      if (replies[index]?.[1] === 1) live.add(node);
    });
    return live;
  }

  /** A group's key id: a hash of its name (names are long and hold any character). */
  private idOf(name: string): string {
    let id = this.ids.get(name);
    if (id === undefined) {
      id = createHash("sha256").update(name).digest("hex").slice(0, 24);
      this.ids.set(name, id);
    }
    return id;
  }
}

function groupKey(id: string, part: string): string {
  return `share:${id}:${part}`;
}

/** The origin of an entry that has not moved (share-assign-4.lua spells it too). */
function firstOrigin(entryId: string, owner: string): string {
  return `${entryId}.${createHash("sha1").update(owner).digest("hex").slice(0, 8)}`;
}

function queueKey(id: string, clientId: string): string {
  return `share:${id}:q:${clientId}`;
}
