import type { ShareStrategy } from "../config/schema.js";

/** An online member of a group, as the publishing node knows it. */
export interface MemberView {
  readonly clientId: string;
  readonly nodeId: string;
}

/** What a pick may depend on: the message and where it was published. */
export interface PickContext {
  readonly topic: string;
  /** The publishing client's id; undefined for the broker's own messages (wills, $SYS). */
  readonly publisherId: string | undefined;
}

/**
 * Picks the member of one group that a message goes to, on the node the message was published
 * on. Members come sorted by client id, so that the hash strategies map a key to the same member
 * on every node. The pick is a proposal: the store takes another live member if it is gone.
 */
export class MemberPicker {
  private next = 0;
  private stuck: string | undefined;

  constructor(
    readonly strategy: ShareStrategy,
    private readonly localNodeId: string,
  ) {}

  pick(members: readonly MemberView[], context: PickContext): MemberView | undefined {
    const count = members.length;
    if (count === 0) return undefined;
    switch (this.strategy) {
      case "random":
        return members[Math.floor(Math.random() * count)];
      case "local_first":
        return this.pickLocal(members) ?? this.roundRobin(members);
      case "sticky":
        return this.pickSticky(members);
      case "hash_clientid":
        return members[hashOf(context.publisherId ?? "") % count];
      case "hash_topic":
        return members[hashOf(context.topic) % count];
      default:
        return this.roundRobin(members);
    }
  }

  private roundRobin(members: readonly MemberView[]): MemberView | undefined {
    if (this.next >= members.length) this.next = 0;
    return members[this.next++];
  }

  /** Round robin over this node's own members, if it has any (no allocation: a scan). */
  private pickLocal(members: readonly MemberView[]): MemberView | undefined {
    const count = members.length;
    for (let i = 0; i < count; i++) {
      const index = (this.next + i) % count;
      const member = members[index] as MemberView;
      if (member.nodeId === this.localNodeId) {
        this.next = index + 1;
        return member;
      }
    }
    return undefined;
  }

  /** The same member while it stays online; a random other one once it leaves. */
  private pickSticky(members: readonly MemberView[]): MemberView | undefined {
    if (this.stuck !== undefined) {
      for (const member of members) if (member.clientId === this.stuck) return member;
    }
    const chosen = members[Math.floor(Math.random() * members.length)];
    this.stuck = chosen?.clientId;
    return chosen;
  }
}

/** FNV-1a over UTF-16 code units: stable across nodes and processes. */
export function hashOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * The strategy of a share name: the first of `groups` whose `match` (`*` any run of characters)
 * fits it, else the default.
 */
export function strategyResolver(config: {
  strategy: ShareStrategy;
  groups: ReadonlyArray<{ match: string; strategy: ShareStrategy }>;
}): (shareName: string) => ShareStrategy {
  const rules = config.groups.map(({ match, strategy }) => ({
    pattern: new RegExp(`^${match.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`),
    strategy,
  }));
  return (shareName) =>
    rules.find((rule) => rule.pattern.test(shareName))?.strategy ?? config.strategy;
}
