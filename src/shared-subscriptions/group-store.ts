/**
 * Where shared groups keep their members and the messages assigned to them: in memory for a
 * node alone, in Redis for a cluster (same meaning, so the dispatcher never asks which).
 *
 * A message for a group is assigned to one online member and kept in that member's queue until
 * the member acknowledges it. When a member leaves (unsubscribes, disconnects, is taken over, or
 * its node dies), what its queue still holds moves to the group's other online members: at
 * least once, never stranded. With no member online, messages wait in the group's backlog (up
 * to the cap) for the next member to join.
 */

/** A message held for a member, as the envelope bytes of its packet (engine/envelope.ts). */
export interface Delivery {
  readonly member: string;
  /** The connection of the member the message is for (see memberToken). */
  readonly token: string;
  /** Its entry in the member's queue; "" for a QoS 0 message that is not kept. */
  readonly entryId: string;
  /**
   * The message's name in its group, the same wherever it moves (its first entry); "" for a
   * QoS 0 message that is not kept. A member that had it is not sent it again.
   */
  readonly origin: string;
  readonly message: Buffer;
}

export type Assignment =
  | {
      readonly to: "member";
      readonly member: string;
      readonly token: string;
      readonly entryId: string;
      readonly origin: string;
    }
  | { readonly to: "backlog" }
  | { readonly to: "dropped"; readonly reason: "queue_full" | "backlog_full" }
  /** The group has ended (no member, online or off, holds it). */
  | { readonly to: "none" };

/**
 * An inbound QoS 2 message whose packet identifier is reserved in its publisher's session
 * (engine/inbound-qos2.ts): a take-over by another connection publishes it again, so the store
 * assigns it once per group, whichever connection asks, and only while that connection's
 * reservation, or the published message, holds the identifier.
 */
export interface ReservedMessage {
  /** The publisher's inbound QoS 2 hash, key prefix included. */
  readonly key: string;
  /** The packet identifier. */
  readonly field: string;
  /** The caller's reservation record (`pending:<token>`). */
  readonly pending: string;
}

export interface GroupMember {
  readonly clientId: string;
  readonly token: string;
}

export interface GroupState {
  /** `<share name>/<filter>`. */
  readonly name: string;
  /** Online members, sorted by client id. */
  readonly members: readonly GroupMember[];
  /** Messages waiting for a member. */
  readonly backlog: number;
}

export interface JoinResult {
  /** The cluster already holds `maxGroups` groups: the subscription is refused. */
  readonly refused: boolean;
  /** What the member's queue holds for it: left by its earlier connection, or the backlog. */
  readonly pending: readonly Delivery[];
}

export interface LeaveResult {
  /** The leaving member's messages, now assigned to other members (to be sent to them). */
  readonly moved: readonly Delivery[];
  /** Messages no member could take and the backlog had no room for. */
  readonly dropped: number;
  /** The group ended with this member (no session holds it any more). */
  readonly ended: boolean;
}

export interface SharedGroupStore {
  /** Every group with its online members and backlog: the publishing nodes' view. */
  snapshot(): Promise<GroupState[]>;
  join(name: string, clientId: string, token: string): Promise<JoinResult>;
  /**
   * The connection `token` of the member is gone; `unregister` when its session no longer holds
   * the subscription (unsubscribed, or a session that ended with its connection). A member taken
   * over by a newer connection keeps its membership and queue (the newer connection has them).
   */
  leave(name: string, clientId: string, token: string, unregister: boolean): Promise<LeaveResult>;
  /**
   * Assigns a message to `proposed` if it is online with room, else to the least loaded online
   * member, else to the backlog. `keep`: QoS 1/2, held until acknowledged. A `reserved` message
   * assigned before, or no longer the caller's, is not assigned (`none`).
   */
  assign(
    name: string,
    proposed: string | undefined,
    message: Buffer,
    keep: boolean,
    reserved?: ReservedMessage,
  ): Promise<Assignment>;
  acknowledge(name: string, clientId: string, entryIds: readonly string[]): Promise<void>;
  /** What a member's queue holds (sent again after a gap in what reached this node). */
  pending(name: string, clientId: string, token: string): Promise<Delivery[]>;
  /** Which of these nodes are alive (a dead node's members leave). */
  liveNodes(nodeIds: readonly string[]): Promise<Set<string>>;
}

/**
 * A member's connection, as the store knows it: `<node id>|<connection>|<p>`, `p` 1 for a
 * session that outlives the connection (it stays registered while offline).
 */
export function memberToken(nodeId: string, connection: string, persistent: boolean): string {
  return `${nodeId}|${connection}|${persistent ? 1 : 0}`;
}

export function nodeOfToken(token: string): string {
  return token.slice(0, token.indexOf("|"));
}

export function isPersistentToken(token: string): boolean {
  return token.endsWith("|1");
}
