/**
 * A Jepsen-style history of one chaos run: every client logs what it sent, what was
 * acknowledged and what it received; wills, live connections after the heal and each node's
 * retained messages are logged too. `check()` then says which of issue 17's properties the run
 * broke, and `summary()` gives the figures a report needs (duplicates, QoS 0 losses).
 *
 * Payloads carry their publisher and sequence number ("<publisher>|<seq>"), so a delivery names
 * the message it is, whichever node it came through.
 */

import { SharedHistory, type SharedSummary, type SharedViolation } from "./shared-history.js";

export type Qos = 0 | 1 | 2;

/** What a will's client went through, which decides how often its will may be published. */
export type WillExpectation =
  /** The connection was lost without DISCONNECT (killed, cut): exactly once. */
  | "once"
  /** The client kept its connection (or ended it with DISCONNECT): never. */
  | "never"
  /** The server closed it (fenced, taken over, drained): the server's choice, at most once. */
  | "at-most-once";

export interface Violation {
  property:
    | "no-loss"
    | "no-qos2-duplicates"
    | "order"
    | "one-session-per-client-id"
    | "wills"
    | "retained-converge"
    | SharedViolation["property"];
  detail: string;
}

interface SentMessage {
  /** When it was sent (ms since the epoch). */
  at: number;
  publisher: string;
  topic: string;
  seq: number;
  qos: Qos;
  acked: boolean;
}

interface Delivery {
  subscriber: string;
  publisher: string;
  topic: string;
  seq: number;
  /** The QoS the message arrived with (the lower of the publish's and the subscription's). */
  qos: Qos;
}

export function payloadOf(publisher: string, seq: number): string {
  return `${publisher}|${seq}`;
}

/** The publisher and sequence number of a payload made by payloadOf(); undefined otherwise. */
export function parsePayload(
  payload: Buffer | string,
): { publisher: string; seq: number } | undefined {
  const text = payload.toString();
  const at = text.lastIndexOf("|");
  const seq = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isSafeInteger(seq)) return undefined;
  return { publisher: text.slice(0, at), seq };
}

export class History {
  private readonly sentMessages = new Map<string, SentMessage>();
  private readonly deliveries: Delivery[] = [];
  /** Per subscriber, the topics it holds a subscription to through the run, with its QoS. */
  private readonly subscriptions = new Map<string, Map<string, Qos>>();
  private readonly willExpectations = new Map<string, WillExpectation>();
  private readonly willsSeen = new Map<string, number>();
  private readonly live = new Map<string, number>();
  private readonly retainedByNode = new Map<string, Map<string, string | undefined>>();
  /** Messages sent before this (ms since the epoch) are not held to no-loss. */
  private lossFrom = 0;
  /** Shared groups: their members, what reached them, whose connection was lost. */
  readonly shared = new SharedHistory();

  /** A subscriber holds `topic` at `qos` for the whole run (a persistent session's). */
  subscribed(subscriber: string, topic: string, qos: Qos): void {
    let topics = this.subscriptions.get(subscriber);
    if (!topics) {
      topics = new Map();
      this.subscriptions.set(subscriber, topics);
    }
    topics.set(topic, qos);
  }

  sent(publisher: string, topic: string, seq: number, qos: Qos): void {
    this.sentMessages.set(key(publisher, topic, seq), {
      at: Date.now(),
      publisher,
      topic,
      seq,
      qos,
      acked: false,
    });
  }

  /** The broker acknowledged the message (PUBACK, or PUBCOMP for QoS 2). */
  acked(publisher: string, topic: string, seq: number): void {
    const message = this.sentMessages.get(key(publisher, topic, seq));
    if (!message) throw new Error(`acknowledged but never sent: ${key(publisher, topic, seq)}`);
    message.acked = true;
  }

  /** A subscriber received a payload made by payloadOf(); others are ignored. */
  received(subscriber: string, topic: string, payload: Buffer | string, qos: Qos): void {
    const parsed = parsePayload(payload);
    if (parsed) this.deliveries.push({ subscriber, topic, qos, ...parsed });
  }

  /** A member of a shared group received a payload made by payloadOf(); others are ignored. */
  sharedReceived(member: string, topic: string, payload: Buffer | string, qos: Qos): void {
    const parsed = parsePayload(payload);
    if (parsed) this.shared.received(member, key(parsed.publisher, topic, parsed.seq), qos);
  }

  /** What the will of `clientId` may do, from what its connection went through. */
  expectWill(clientId: string, expectation: WillExpectation): void {
    this.willExpectations.set(clientId, expectation);
  }

  willPublished(clientId: string): void {
    this.willsSeen.set(clientId, (this.willsSeen.get(clientId) ?? 0) + 1);
  }

  /** After the heal: how many live connections of `clientId` the nodes hold, summed. */
  liveConnections(clientId: string, count: number): void {
    this.live.set(clientId, count);
  }

  /** After the heal: the retained payload of `topic` as `node` serves it (undefined: none). */
  retained(node: string, topic: string, payload: string | undefined): void {
    let topics = this.retainedByNode.get(node);
    if (!topics) {
      topics = new Map();
      this.retainedByNode.set(node, topics);
    }
    topics.set(topic, payload);
  }

  /**
   * No-loss applies only to messages sent from `at` on: for a fault that destroys what Redis
   * held (a restart without its data), where what was stored before is gone by definition.
   */
  checkLossFrom(at: number): void {
    this.lossFrom = at;
  }

  /** Every property the history breaks; empty when the run kept them all. */
  check(): Violation[] {
    return [
      ...this.checkNoLoss(),
      ...this.checkNoQos2Duplicates(),
      ...this.checkOrder(),
      ...this.checkOneSession(),
      ...this.checkWills(),
      ...this.checkRetained(),
      ...this.shared.check([...this.sentMessages.values()], this.lossFrom),
    ];
  }

  /** The figures of a run, for a report. */
  summary(): {
    sent: number;
    acked: number;
    delivered: number;
    /** Deliveries of a message a subscriber already had (QoS 1 allows them). */
    duplicates: number;
    /** QoS 0 messages (as delivered) a subscriber of their topic never got: allowed. */
    qos0Lost: number;
    /** Acknowledged QoS 1/2 messages a subscriber never got, summed over subscribers. */
    lostAcknowledged: number;
    shared: SharedSummary;
  } {
    const seen = new Set<string>();
    let duplicates = 0;
    for (const d of this.deliveries) {
      const id = `${d.subscriber}\u0000${key(d.publisher, d.topic, d.seq)}`;
      if (seen.has(id)) duplicates++;
      seen.add(id);
    }
    let qos0Lost = 0;
    for (const [subscriber, topics] of this.subscriptions) {
      for (const message of this.sentMessages.values()) {
        const subQos = topics.get(message.topic);
        if (subQos === undefined || Math.min(subQos, message.qos) !== 0) continue;
        if (!seen.has(`${subscriber}\u0000${key(message.publisher, message.topic, message.seq)}`)) {
          qos0Lost++;
        }
      }
    }
    const all = [...this.sentMessages.values()];
    return {
      sent: all.length,
      acked: all.filter((m) => m.acked).length,
      delivered: this.deliveries.length,
      duplicates,
      qos0Lost,
      lostAcknowledged: [...this.missingAcknowledged().values()].reduce((n, m) => n + m.length, 0),
      shared: this.shared.summary(all, this.lossFrom),
    };
  }

  /** [MQTT-4.3.2/4.3.3] An acknowledged QoS 1/2 message reaches every QoS 1/2 subscriber. */
  private checkNoLoss(): Violation[] {
    return [...this.missingAcknowledged()].map(([subscriber, missing]) => ({
      property: "no-loss",
      detail: `${subscriber} lost ${missing.length} acknowledged: ${missing.slice(0, 5).join(", ")}`,
    }));
  }

  /** Per subscriber that lost any, the acknowledged QoS 1/2 messages it never got. */
  private missingAcknowledged(): Map<string, string[]> {
    const got = new Set(
      this.deliveries.map((d) => `${d.subscriber}\u0000${key(d.publisher, d.topic, d.seq)}`),
    );
    const lost = new Map<string, string[]>();
    for (const [subscriber, topics] of this.subscriptions) {
      const missing: string[] = [];
      for (const message of this.sentMessages.values()) {
        const subQos = topics.get(message.topic);
        if (!message.acked || subQos === undefined || Math.min(subQos, message.qos) === 0) {
          continue;
        }
        if (message.at < this.lossFrom) continue;
        const id = key(message.publisher, message.topic, message.seq);
        if (!got.has(`${subscriber}\u0000${id}`)) missing.push(id);
      }
      if (missing.length > 0) lost.set(subscriber, missing);
    }
    return lost;
  }

  private checkNoQos2Duplicates(): Violation[] {
    const counts = new Map<string, number>();
    for (const d of this.deliveries) {
      if (d.qos !== 2) continue;
      const id = `${d.subscriber} got ${key(d.publisher, d.topic, d.seq)}`;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    return [...counts]
      .filter(([, count]) => count > 1)
      .map(([id, count]) => ({ property: "no-qos2-duplicates", detail: `${id} ${count} times` }));
  }

  /**
   * [MQTT-4.6.0-6] Per subscriber, publisher and topic, messages arrive in the order they were
   * sent: each first delivery has a higher sequence number than the one before. A redelivery
   * of a message already received is a duplicate, not a reordering.
   */
  private checkOrder(): Violation[] {
    const highest = new Map<string, number>();
    const seen = new Set<string>();
    const violations: Violation[] = [];
    for (const d of this.deliveries) {
      const stream = `${d.subscriber}\u0000${d.publisher}\u0000${d.topic}`;
      const id = `${stream}\u0000${d.seq}`;
      if (seen.has(id)) continue;
      seen.add(id);
      const before = highest.get(stream) ?? -1;
      if (d.seq < before) {
        violations.push({
          property: "order",
          detail: `${d.subscriber} got ${d.publisher}'s ${d.topic} #${d.seq} after #${before}`,
        });
      }
      highest.set(stream, Math.max(before, d.seq));
    }
    return violations;
  }

  private checkOneSession(): Violation[] {
    return [...this.live]
      .filter(([, count]) => count > 1)
      .map(([clientId, count]) => ({
        property: "one-session-per-client-id",
        detail: `${clientId} has ${count} live connections after the heal`,
      }));
  }

  private checkWills(): Violation[] {
    const violations: Violation[] = [];
    const clients = new Set([...this.willExpectations.keys(), ...this.willsSeen.keys()]);
    for (const clientId of clients) {
      const expectation = this.willExpectations.get(clientId) ?? "never";
      const count = this.willsSeen.get(clientId) ?? 0;
      const allowed =
        expectation === "once" ? count === 1 : expectation === "never" ? count === 0 : count <= 1;
      if (!allowed) {
        violations.push({
          property: "wills",
          detail: `${clientId}'s will published ${count} times (expected ${expectation})`,
        });
      }
    }
    return violations;
  }

  private checkRetained(): Violation[] {
    const nodes = [...this.retainedByNode];
    const topics = new Set(nodes.flatMap(([, byTopic]) => [...byTopic.keys()]));
    const violations: Violation[] = [];
    for (const topic of topics) {
      const values = new Set(nodes.map(([, byTopic]) => byTopic.get(topic)));
      if (values.size > 1) {
        const seen = nodes.map(([node, byTopic]) => `${node}=${byTopic.get(topic) ?? "(none)"}`);
        violations.push({
          property: "retained-converge",
          detail: `${topic}: ${seen.join(", ")}`,
        });
      }
    }
    return violations;
  }
}

function key(publisher: string, topic: string, seq: number): string {
  return `${publisher}:${topic}#${seq}`;
}

/** Violations per property: how many, and the first one's detail (for reports and asserts). */
export function tally(
  violations: readonly Violation[],
): Record<string, { count: number; first: string }> {
  const byProperty: Record<string, { count: number; first: string }> = {};
  for (const { property, detail } of violations) {
    const entry = byProperty[property];
    if (entry) entry.count++;
    else byProperty[property] = { count: 1, first: detail };
  }
  return byProperty;
}
