import type {
  Assignment,
  Delivery,
  GroupState,
  JoinResult,
  LeaveResult,
  SharedGroupStore,
} from "./group-store.js";

interface MemoryGroup {
  /** Online members: client id -> token. */
  readonly members: Map<string, string>;
  /** Sessions holding the subscription, online or not. */
  readonly registered: Set<string>;
  /** Per member: entry id -> message, in assignment order. */
  readonly queues: Map<string, Map<string, Held>>;
  readonly backlog: Held[];
}

/** A kept message and its origin (its first entry id). */
interface Held {
  readonly message: Buffer;
  readonly origin: string;
}

export interface GroupLimits {
  /** Messages a member's queue, and a group's backlog, hold at most. */
  readonly maxQueued: number;
  /** Groups that may exist at once. */
  readonly maxGroups: number;
}

/** The shared groups of a node alone: SharedGroupStore's rules, in this process. */
export class MemoryGroupStore implements SharedGroupStore {
  private readonly groups = new Map<string, MemoryGroup>();
  private nextEntry = 0;

  constructor(private readonly limits: GroupLimits) {}

  async snapshot(): Promise<GroupState[]> {
    const states: GroupState[] = [];
    for (const [name, group] of this.groups) {
      const members = [...group.members]
        .map(([clientId, token]) => ({ clientId, token }))
        .sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0));
      states.push({ name, members, backlog: group.backlog.length });
    }
    return states;
  }

  async join(name: string, clientId: string, token: string): Promise<JoinResult> {
    let group = this.groups.get(name);
    if (group === undefined) {
      if (this.groups.size >= this.limits.maxGroups) return { refused: true, pending: [] };
      group = { members: new Map(), registered: new Set(), queues: new Map(), backlog: [] };
      this.groups.set(name, group);
    }
    group.members.set(clientId, token);
    group.registered.add(clientId);
    const queue = this.queueOf(group, clientId);
    while (queue.size < this.limits.maxQueued && group.backlog.length > 0) {
      queue.set(this.entryId(), group.backlog.shift() as Held);
    }
    return { refused: false, pending: deliveriesOf(clientId, token, queue) };
  }

  async leave(
    name: string,
    clientId: string,
    token: string,
    unregister: boolean,
  ): Promise<LeaveResult> {
    const group = this.groups.get(name);
    if (group === undefined) return { moved: [], dropped: 0, ended: true };
    const current = group.members.get(clientId);
    if (current !== undefined && current !== token) return { moved: [], dropped: 0, ended: false };
    group.members.delete(clientId);
    if (unregister) group.registered.delete(clientId);
    const queue = group.queues.get(clientId);
    group.queues.delete(clientId);
    const left = queue === undefined ? [] : [...queue.values()];
    if (group.registered.size === 0 && group.members.size === 0) {
      this.groups.delete(name);
      return { moved: [], dropped: left.length, ended: true };
    }
    const moved: Delivery[] = [];
    let dropped = 0;
    const targets = [...group.members];
    let next = 0;
    for (const held of left) {
      let placed = false;
      for (let k = 0; k < targets.length && !placed; k++) {
        const [member, memberToken] = targets[(next + k) % targets.length] as [string, string];
        const memberQueue = this.queueOf(group, member);
        if (memberQueue.size >= this.limits.maxQueued) continue;
        const entryId = this.entryId();
        memberQueue.set(entryId, held);
        moved.push({ member, token: memberToken, entryId, ...held });
        next = (next + k + 1) % targets.length;
        placed = true;
      }
      if (placed) continue;
      if (targets.length === 0 && group.backlog.length < this.limits.maxQueued) {
        group.backlog.push(held);
      } else {
        dropped++;
      }
    }
    return { moved, dropped, ended: false };
  }

  async assign(
    name: string,
    proposed: string | undefined,
    message: Buffer,
    keep: boolean,
  ): Promise<Assignment> {
    const group = this.groups.get(name);
    if (group === undefined) return { to: "none" };
    const { maxQueued } = this.limits;
    let chosen: string | undefined;
    if (proposed !== undefined && group.members.has(proposed)) {
      if (!keep || this.queueOf(group, proposed).size < maxQueued) chosen = proposed;
    }
    if (chosen === undefined) {
      let least = keep ? maxQueued : Number.POSITIVE_INFINITY;
      for (const member of group.members.keys()) {
        const size = this.queueOf(group, member).size;
        if (size < least) {
          least = size;
          chosen = member;
        }
      }
    }
    if (chosen !== undefined) {
      const token = group.members.get(chosen) as string;
      if (!keep) return { to: "member", member: chosen, token, entryId: "", origin: "" };
      const entryId = this.entryId();
      this.queueOf(group, chosen).set(entryId, { message, origin: entryId });
      return { to: "member", member: chosen, token, entryId, origin: entryId };
    }
    if (group.members.size > 0) return { to: "dropped", reason: "queue_full" };
    if (group.backlog.length >= maxQueued) return { to: "dropped", reason: "backlog_full" };
    group.backlog.push({ message, origin: this.entryId() });
    return { to: "backlog" };
  }

  async acknowledge(name: string, clientId: string, entryIds: readonly string[]): Promise<void> {
    const queue = this.groups.get(name)?.queues.get(clientId);
    if (queue === undefined) return;
    for (const entryId of entryIds) queue.delete(entryId);
  }

  async pending(name: string, clientId: string, token: string): Promise<Delivery[]> {
    const queue = this.groups.get(name)?.queues.get(clientId);
    return queue === undefined ? [] : deliveriesOf(clientId, token, queue);
  }

  async liveNodes(nodeIds: readonly string[]): Promise<Set<string>> {
    return new Set(nodeIds);
  }

  private queueOf(group: MemoryGroup, clientId: string): Map<string, Held> {
    let queue = group.queues.get(clientId);
    if (queue === undefined) {
      queue = new Map();
      group.queues.set(clientId, queue);
    }
    return queue;
  }

  private entryId(): string {
    this.nextEntry++;
    return `m-${this.nextEntry}`;
  }
}

function deliveriesOf(member: string, token: string, queue: Map<string, Held>): Delivery[] {
  const deliveries: Delivery[] = [];
  for (const [entryId, held] of queue) deliveries.push({ member, token, entryId, ...held });
  return deliveries;
}
