import { createHash } from "node:crypto";
import type { ShareStrategy } from "../config/schema.js";
import type { Logger } from "../observability/logger.js";
import { filterMatches } from "../protocol/topic-rules.js";
import {
  type Delivery,
  type GroupState,
  isPersistentToken,
  nodeOfToken,
  type ReservedMessage,
  type SharedGroupStore,
} from "./group-store.js";
import { MemberPicker, type MemberView } from "./member-picker.js";
import { groupName, parseSharedFilter, SHARE_PREFIX, type SharedFilter } from "./shared-filter.js";

/** How often a node refreshes its view of every group, and looks for members that are gone. */
const REFRESH_MS = 2_000;

/** The engine side: this node's member connections and the other nodes. */
export interface MemberLinks {
  /**
   * Sends a message to member connection `token` on this node under its subscription `topic`
   * (`$share/...`). False when that connection is gone or holds the subscription no more.
   * `origin` names the message in its group (`<group key>/<Delivery.origin>`, "" for QoS 0): the
   * member's session notes it at PUBREC. `acknowledged` runs once the member has the message
   * (its PUBACK or PUBREC; at once for QoS 0).
   */
  deliver(delivery: Delivery, topic: string, origin: string, acknowledged: () => void): boolean;
  /**
   * The origins of the shared deliveries a member's session PUBREC'd lately (remembered there,
   * so from any node): read before entries of its queue are sent to it again.
   */
  released(clientId: string): Promise<ReadonlySet<string>>;
  /** Whether member connection `token` is live on this node. */
  isLive(token: string): boolean;
  /** Hands a delivery to the node that holds its member's connection. */
  forward(nodeId: string, group: string, delivery: Delivery): void;
  /** Tells every node that a group's members changed. */
  announce(group: string): void;
}

export interface SharedMetrics {
  delivered(group: string, count: number): void;
  redelivered(group: string, count: number): void;
  dropped(group: string, reason: string, count: number): void;
  /** A group ended: its series go. */
  ended(group: string): void;
}

export interface DispatcherOptions {
  nodeId: string;
  store: SharedGroupStore;
  strategyOf(shareName: string): ShareStrategy;
  /** Groups the cluster may hold (`sharedSubscriptions.maxGroups`). */
  maxGroups: number;
  metrics: SharedMetrics;
  log: Logger;
}

/** What a node knows of one group. */
interface KnownGroup {
  readonly name: string;
  readonly shared: SharedFilter;
  readonly topic: string;
  /** A short hash of the name: the group in a delivery's origin. */
  readonly key: string;
  readonly picker: MemberPicker;
  members: MemberView[];
  backlog: number;
}

/** A member connection on this node: its deliveries awaiting acknowledgement. */
interface LocalMember {
  readonly clientId: string;
  readonly token: string;
  /** The groups this connection holds. */
  readonly groups: Set<string>;
  /** Entries sent and not yet acknowledged, by group: entry id -> origin. */
  readonly sent: Map<string, Map<string, string>>;
  /**
   * Entries sent from the member's queue by a resend, by group, with the resend's number: the
   * forwarded copy of such an entry may still be on its way, and must not go out again once the
   * member has acknowledged it. Kept for two more resends.
   */
  readonly resent: Map<string, Map<string, number>>;
}

export interface PublishedMessage {
  readonly topic: string;
  readonly qos: number;
  readonly publisherId: string | undefined;
  /** Set for an inbound QoS 2 message whose packet identifier is reserved (Redis only). */
  readonly reserved?: ReservedMessage | undefined;
}

/**
 * Shared subscriptions, cluster-wide: which group a published message goes to, which member of
 * each, and the member's side (delivery, acknowledgement, leaving). Each node picks members for
 * what its own clients publish, by the group's strategy, from its view of the groups (refreshed
 * every two seconds and on every change announced); the store checks the pick and keeps QoS 1/2
 * messages in the member's queue until acknowledged (docs/shared-subscriptions.md).
 */
export class SharedDispatcher {
  private readonly groups = new Map<string, KnownGroup>();
  /** Groups in match order (a plain array: a message is matched against each). */
  private list: KnownGroup[] = [];
  private readonly locals = new Map<string, LocalMember>();
  private readonly pendingAcks = new Map<string, Map<string, string[]>>();
  /**
   * Entries members acknowledged whose removal from the group failed, by group and client id,
   * entry id -> origin: not sent to that member again (from any of its connections here);
   * removal retried on each refresh.
   */
  private readonly unremoved = new Map<string, Map<string, Map<string, string>>>();
  private acksScheduled = false;
  /** Resends so far (see LocalMember.resent). */
  private resends = 0;
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;
  private stopped = false;

  constructor(private readonly options: DispatcherOptions) {}

  /** Any group known: when false, publishing skips shared subscriptions at no cost. */
  get active(): boolean {
    return this.list.length > 0;
  }

  /** Whether a shared subscription fits: its group exists, or there is room for one more. */
  hasRoomFor(topic: string): boolean {
    const parsed = parseSharedFilter(topic);
    if ("invalid" in parsed) return false;
    return this.groups.has(groupName(parsed)) || this.groups.size < this.options.maxGroups;
  }

  /** A group spreads by publisher: messages must carry their publisher's id. */
  get needsPublisher(): boolean {
    return this.byPublisher;
  }

  private byPublisher = false;

  start(links: MemberLinks): void {
    this.links = links;
    this.scheduleRefresh(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    await this.refreshing;
  }

  private links: MemberLinks | undefined;

  /**
   * A message published on this node: assigned to one member of each group it matches.
   * Resolves once every QoS 1/2 assignment is kept (the publisher's PUBACK waits for it);
   * undefined when it matches no group. `encode` makes the message's bytes, once.
   */
  publish(message: PublishedMessage, encode: () => Buffer): Promise<void> | undefined {
    let pending: Array<Promise<void>> | undefined;
    let bytes: Buffer | undefined;
    for (const group of this.list) {
      if (!filterMatches(group.shared.filter, message.topic)) continue;
      bytes ??= encode();
      const proposed = group.picker.pick(group.members, message);
      const assigned = this.assign(group, proposed, bytes, message.qos > 0, message.reserved);
      if (assigned === undefined) continue;
      pending ??= [];
      pending.push(assigned);
    }
    if (bytes === undefined) return undefined;
    if (pending === undefined) return Promise.resolve();
    return pending.length === 1 ? (pending[0] as Promise<void>) : Promise.all(pending).then(noop);
  }

  private assign(
    group: KnownGroup,
    proposed: MemberView | undefined,
    message: Buffer,
    keep: boolean,
    reserved: ReservedMessage | undefined,
  ): Promise<void> | undefined {
    if (!keep && proposed !== undefined) {
      // QoS 0 is not kept: straight to the proposed member (lost with it, as QoS 0 may be).
      const token = this.tokenOf(group, proposed.clientId);
      if (token !== undefined) {
        this.route(group.name, {
          member: proposed.clientId,
          token,
          entryId: "",
          origin: "",
          message,
        });
        return undefined;
      }
    }
    const { store } = this.options;
    return store
      .assign(group.name, proposed?.clientId, message, keep, reserved)
      .then((assignment) => {
        switch (assignment.to) {
          case "member":
            this.route(group.name, { ...assignment, message });
            return;
          case "backlog":
            group.backlog++;
            return;
          case "dropped":
            this.options.metrics.dropped(group.name, assignment.reason, 1);
            return;
          default:
            return;
        }
      });
  }

  /** Sends a delivery to its member: here, or through the node that holds the member. */
  private route(name: string, delivery: Delivery): void {
    const node = nodeOfToken(delivery.token);
    if (node === this.options.nodeId) this.receive(name, delivery);
    else this.links?.forward(node, name, delivery);
  }

  /** A delivery for a member connection on this node; `resending`: read from its queue. */
  receive(name: string, delivery: Delivery, resending = false): void {
    const links = this.links;
    const member = this.locals.get(delivery.token);
    if (links === undefined || member === undefined) return;
    const group = this.groups.get(name);
    const topic = group?.topic ?? `${SHARE_PREFIX}${name}`;
    let sent = member.sent.get(name);
    if (delivery.entryId !== "") {
      if (sent === undefined) {
        sent = new Map();
        member.sent.set(name, sent);
      }
      if (sent.has(delivery.entryId)) return;
      if (resending) this.markResent(member, name, delivery.entryId);
      else if (member.resent.get(name)?.delete(delivery.entryId)) return;
      sent.set(delivery.entryId, delivery.origin);
    }
    const { entryId } = delivery;
    const origin = entryId === "" ? "" : `${group?.key ?? groupKey(name)}/${delivery.origin}`;
    const delivered = links.deliver(delivery, topic, origin, () => {
      if (entryId !== "") this.acknowledge(name, member, entryId);
    });
    if (!delivered) {
      sent?.delete(entryId);
      member.resent.get(name)?.delete(entryId);
      return;
    }
    this.options.metrics.delivered(name, 1);
  }

  private markResent(member: LocalMember, name: string, entryId: string): void {
    const resent = member.resent.get(name);
    if (resent === undefined) member.resent.set(name, new Map([[entryId, this.resends]]));
    else resent.set(entryId, this.resends);
  }

  private acknowledge(name: string, member: LocalMember, entryId: string): void {
    let byMember = this.pendingAcks.get(name);
    if (byMember === undefined) {
      byMember = new Map();
      this.pendingAcks.set(name, byMember);
    }
    let ids = byMember.get(member.token);
    if (ids === undefined) {
      ids = [];
      byMember.set(member.token, ids);
    }
    ids.push(entryId);
    if (this.acksScheduled) return;
    this.acksScheduled = true;
    // The acknowledgements of one turn go together.
    setImmediate(() => this.flushAcks());
  }

  private flushAcks(): void {
    this.acksScheduled = false;
    for (const [name, byMember] of this.pendingAcks) {
      for (const [token, ids] of byMember) {
        const member = this.locals.get(token);
        if (member === undefined) continue;
        // Until the store has forgotten them, they count as sent: a resend meanwhile skips them.
        const forget = (): void => {
          const sent = member.sent.get(name);
          for (const id of ids) sent?.delete(id);
        };
        this.options.store.acknowledge(name, member.clientId, ids).then(forget, (err: unknown) => {
          // Kept in the member's queue (sent to another member if this one leaves), and not to
          // this one again: a QoS 2 message reaches a member once.
          this.noteUnremoved(name, member.clientId, ids, this.originsOf(member, name, ids));
          forget();
          this.options.log.warn(
            { event: "shared.ack_failed", err, clientId: member.clientId },
            "could not record a shared subscription acknowledgement",
          );
        });
      }
    }
    this.pendingAcks.clear();
  }

  /** A connection of this node holds shared subscriptions `topics` (`$share/...`). */
  async join(clientId: string, token: string, topics: readonly string[]): Promise<void> {
    let member = this.locals.get(token);
    if (member === undefined) {
      member = { clientId, token, groups: new Set(), sent: new Map(), resent: new Map() };
      this.locals.set(token, member);
    }
    for (const topic of topics) {
      const parsed = parseSharedFilter(topic);
      if ("invalid" in parsed) continue;
      const name = groupName(parsed);
      member.groups.add(name);
      // Seen here at once: this node's next message for the group goes to it.
      const group = this.know(name, parsed);
      if (!group.members.some((m) => m.clientId === clientId)) {
        group.members = sortedMembers([
          ...group.members,
          { clientId, nodeId: this.options.nodeId },
        ]);
      }
      this.tokensOf(name).set(clientId, token);
      const joined = await this.options.store.join(name, clientId, token);
      if (joined.refused) {
        member.groups.delete(name);
        this.options.log.warn(
          { event: "shared.group_quota", clientId, group: name },
          "shared subscription not served: the cluster holds sharedSubscriptions.maxGroups groups",
        );
        continue;
      }
      this.links?.announce(name);
      const pending = await this.notReleased(name, clientId, joined.pending);
      for (const delivery of pending) this.receive(name, delivery);
    }
  }

  /**
   * Of the entries of a member's queue about to be sent to it again, those it has not had: an
   * entry its session PUBREC'd (or acknowledged here) whose removal failed is removed now
   * instead. One read of the session, and only when something would be sent again.
   */
  private async notReleased(
    name: string,
    clientId: string,
    deliveries: readonly Delivery[],
  ): Promise<readonly Delivery[]> {
    if (deliveries.length === 0 || this.links === undefined) return deliveries;
    let released: ReadonlySet<string>;
    try {
      released = await this.links.released(clientId);
    } catch (err) {
      // Nothing is sent now: the next resend (each refresh) tries again.
      this.options.log.warn(
        { event: "shared.released_unread", err, clientId },
        "could not read what a member acknowledged: its queue is sent at the next refresh",
      );
      return [];
    }
    const unremoved = new Set(this.unremoved.get(name)?.get(clientId)?.values());
    const key = this.groups.get(name)?.key ?? groupKey(name);
    const had: Delivery[] = [];
    const fresh = deliveries.filter((d) => {
      if (!released.has(`${key}/${d.origin}`) && !unremoved.has(d.origin)) return true;
      had.push(d);
      return false;
    });
    if (had.length > 0) {
      this.options.log.info(
        { event: "shared.redelivery_skipped", clientId, group: name, count: had.length },
        "messages a member already acknowledged are not sent to it again",
      );
      await this.removeAcknowledged(
        name,
        clientId,
        had.map((d) => d.entryId),
        had.map((d) => d.origin),
      );
    }
    return fresh;
  }

  /** The origins of entries sent to a member connection (and not yet forgotten). */
  private originsOf(member: LocalMember, name: string, ids: readonly string[]): string[] {
    const sent = member.sent.get(name);
    return ids.map((id) => sent?.get(id) ?? id);
  }

  private noteUnremoved(
    name: string,
    clientId: string,
    ids: readonly string[],
    origins: readonly string[],
  ): void {
    let byMember = this.unremoved.get(name);
    if (byMember === undefined) {
      byMember = new Map();
      this.unremoved.set(name, byMember);
    }
    let held = byMember.get(clientId);
    if (held === undefined) {
      held = new Map();
      byMember.set(clientId, held);
    }
    for (const [i, id] of ids.entries()) held.set(id, origins[i] ?? id);
  }

  /** Removes acknowledged entries from a member's queue; kept to retry when it fails. */
  private async removeAcknowledged(
    name: string,
    clientId: string,
    ids: readonly string[],
    origins: readonly string[],
  ): Promise<void> {
    try {
      await this.options.store.acknowledge(name, clientId, ids);
    } catch (err) {
      this.noteUnremoved(name, clientId, ids, origins);
      this.options.log.warn(
        { event: "shared.ack_failed", err, clientId },
        "could not record a shared subscription acknowledgement",
      );
      return;
    }
    const held = this.unremoved.get(name)?.get(clientId);
    if (held === undefined) return;
    for (const id of ids) held.delete(id);
    if (held.size > 0) return;
    this.unremoved.get(name)?.delete(clientId);
    if (this.unremoved.get(name)?.size === 0) this.unremoved.delete(name);
  }

  /** The removals that failed, tried again (each refresh). */
  private async retryRemovals(): Promise<void> {
    const retries: Array<Promise<void>> = [];
    for (const [name, byMember] of this.unremoved) {
      for (const [clientId, held] of byMember) {
        retries.push(this.removeAcknowledged(name, clientId, [...held.keys()], [...held.values()]));
      }
    }
    await Promise.all(retries);
  }

  /**
   * Member connection `token` holds `topics` no more; `unregister` when its session does not
   * hold them either (unsubscribed, or a session ending with its connection).
   */
  async leave(
    clientId: string,
    token: string,
    topics: readonly string[],
    unregister: boolean,
  ): Promise<void> {
    const member = this.locals.get(token);
    for (const topic of topics) {
      const parsed = parseSharedFilter(topic);
      if ("invalid" in parsed) continue;
      const name = groupName(parsed);
      member?.groups.delete(name);
      member?.sent.delete(name);
      member?.resent.delete(name);
      const group = this.groups.get(name);
      if (group !== undefined) group.members = group.members.filter((m) => m.clientId !== clientId);
      const tokens = this.tokens.get(name);
      if (tokens?.get(clientId) === token) tokens.delete(clientId);
      await this.leaveGroup(name, clientId, token, unregister);
    }
    if (member !== undefined && member.sent.size === 0 && !this.links?.isLive(token)) {
      this.locals.delete(token);
    }
  }

  /**
   * The session of `clientId` ended (a clean start discarded it, or it expired): it holds
   * `topics` no more, unless a connection of the id holds them now (the store keeps those).
   */
  async sessionEnded(clientId: string, topics: readonly string[]): Promise<void> {
    for (const topic of topics) {
      const parsed = parseSharedFilter(topic);
      if ("invalid" in parsed) continue;
      await this.leaveGroup(groupName(parsed), clientId, "", true);
    }
  }

  private async leaveGroup(
    name: string,
    clientId: string,
    token: string,
    unregister: boolean,
  ): Promise<void> {
    const left = await this.options.store.leave(name, clientId, token, unregister);
    if (left.ended) this.forgetGroup(name);
    if (left.moved.length > 0) this.options.metrics.redelivered(name, left.moved.length);
    if (left.dropped > 0) this.options.metrics.dropped(name, "no_member", left.dropped);
    for (const delivery of left.moved) this.route(name, delivery);
    this.links?.announce(name);
  }

  /** Another node changed a group: refresh soon (changes close together share one refresh). */
  changed(): void {
    this.scheduleRefresh(50);
  }

  /**
   * What the queues of this node's members hold and did not reach them, sent (a forwarded
   * delivery lost with a Redis outage, or while the subscription was cut): on every refresh.
   */
  async resend(): Promise<void> {
    this.resends++;
    for (const member of this.locals.values()) {
      for (const [name, resent] of member.resent) {
        for (const [entryId, resend] of resent) {
          if (resend < this.resends - 2) resent.delete(entryId);
        }
        if (resent.size === 0) member.resent.delete(name);
      }
    }
    const reads: Array<Promise<void>> = [];
    for (const [name, tokens] of this.tokens) {
      for (const [clientId, token] of tokens) {
        if (nodeOfToken(token) !== this.options.nodeId || !this.locals.has(token)) continue;
        reads.push(
          this.options.store
            .pending(name, clientId, token)
            .then((deliveries) => {
              const sent = this.locals.get(token)?.sent.get(name);
              const unsent = deliveries.filter((d) => sent?.has(d.entryId) !== true);
              return this.notReleased(name, clientId, unsent);
            })
            .then((deliveries) => {
              for (const delivery of deliveries) this.receive(name, delivery, true);
            }),
        );
      }
    }
    await Promise.all(reads);
  }

  /** Groups as this node knows them (for the metrics). */
  view(): Array<{ name: string; members: number; backlog: number }> {
    return this.list.map((group) => ({
      name: group.name,
      members: group.members.length,
      backlog: group.backlog,
    }));
  }

  private know(name: string, shared: SharedFilter): KnownGroup {
    let group = this.groups.get(name);
    if (group === undefined) {
      group = {
        name,
        shared,
        topic: `${SHARE_PREFIX}${name}`,
        key: groupKey(name),
        picker: new MemberPicker(this.options.strategyOf(shared.group), this.options.nodeId),
        members: [],
        backlog: 0,
      };
      this.groups.set(name, group);
      this.list = [...this.groups.values()];
      this.byPublisher = this.list.some((g) => g.picker.strategy === "hash_clientid");
    }
    return group;
  }

  private forgetGroup(name: string): void {
    if (!this.groups.delete(name)) return;
    this.tokens.delete(name);
    this.unremoved.delete(name);
    this.options.metrics.ended(name);
    this.list = [...this.groups.values()];
    this.byPublisher = this.list.some((g) => g.picker.strategy === "hash_clientid");
  }

  private tokenOf(group: KnownGroup, clientId: string): string | undefined {
    return this.tokens.get(group.name)?.get(clientId);
  }

  private tokensOf(name: string): Map<string, string> {
    let tokens = this.tokens.get(name);
    if (tokens === undefined) {
      tokens = new Map();
      this.tokens.set(name, tokens);
    }
    return tokens;
  }

  /** Member tokens by group, from the last refresh (and this node's own joins). */
  private readonly tokens = new Map<string, Map<string, string>>();

  private scheduleRefresh(delayMs: number): void {
    if (this.stopped) return;
    if (this.refreshing !== undefined) {
      this.refreshAgain = true;
      return;
    }
    if (this.refreshTimer !== undefined) {
      if (delayMs >= REFRESH_MS) return;
      clearTimeout(this.refreshTimer);
    }
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.refreshing = this.refresh()
        .catch((err: unknown) =>
          this.options.log.warn(
            { event: "shared.refresh_failed", err },
            "could not read the shared groups; retrying",
          ),
        )
        .finally(() => {
          this.refreshing = undefined;
          const again = this.refreshAgain;
          this.refreshAgain = false;
          this.scheduleRefresh(again ? 0 : REFRESH_MS);
        });
    }, delayMs);
    this.refreshTimer.unref();
  }

  /** Reads every group, and makes members that are gone leave (dead nodes', and this node's). */
  private async refresh(): Promise<void> {
    const states = await this.options.store.snapshot();
    const nodes = new Set<string>();
    for (const state of states) for (const m of state.members) nodes.add(nodeOfToken(m.token));
    nodes.delete(this.options.nodeId);
    const live = await this.options.store.liveNodes([...nodes]);
    live.add(this.options.nodeId);
    const seen = new Set<string>();
    for (const state of states) {
      seen.add(state.name);
      await this.update(state, live);
    }
    for (const name of this.groups.keys()) if (!seen.has(name)) this.forgetGroup(name);
    await this.retryRemovals();
    await this.rejoinLost(states);
    await this.resend();
  }

  /**
   * This node's live member connections that a group no longer lists, joined again: another node
   * counted them gone while this node's lease was missing (Redis restarted without its data, or
   * this node was cut off for longer than its lease), and this node has its lease again. A
   * group that lists the member with another connection has a newer one: left alone.
   */
  private async rejoinLost(states: readonly GroupState[]): Promise<void> {
    const listed = new Map(states.map((s) => [s.name, new Set(s.members.map((m) => m.clientId))]));
    for (const member of [...this.locals.values()]) {
      if (this.links?.isLive(member.token) !== true) continue;
      for (const name of [...member.groups]) {
        if (listed.get(name)?.has(member.clientId)) continue;
        this.options.log.info(
          { event: "shared.member_rejoined", clientId: member.clientId, group: name },
          "a live member a group had lost joins it again",
        );
        await this.join(member.clientId, member.token, [`${SHARE_PREFIX}${name}`]);
      }
    }
  }

  private async update(state: GroupState, live: Set<string>): Promise<void> {
    const parsed = parseSharedFilter(`${SHARE_PREFIX}${state.name}`);
    if ("invalid" in parsed) return;
    const group = this.know(state.name, parsed);
    const members: MemberView[] = [];
    const tokens = new Map<string, string>();
    const gone: Array<{ clientId: string; token: string }> = [];
    for (const { clientId, token } of state.members) {
      const node = nodeOfToken(token);
      const alive =
        node === this.options.nodeId ? this.links?.isLive(token) === true : live.has(node);
      if (!alive) {
        gone.push({ clientId, token });
        continue;
      }
      members.push({ clientId, nodeId: node });
      tokens.set(clientId, token);
    }
    group.members = members;
    group.backlog = state.backlog;
    this.tokens.set(state.name, tokens);
    for (const { clientId, token } of gone) {
      this.options.log.info(
        { event: "shared.member_gone", clientId, group: state.name, node: nodeOfToken(token) },
        "a shared subscription member's connection is gone: its messages go to other members",
      );
      await this.leaveGroup(state.name, clientId, token, !isPersistentToken(token));
    }
  }
}

function sortedMembers(members: MemberView[]): MemberView[] {
  return members.sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0));
}

/** A group's key in a delivery's origin: short, and free of the name's characters. */
function groupKey(name: string): string {
  return createHash("sha256").update(name).digest("hex").slice(0, 16);
}

function noop(): void {}
