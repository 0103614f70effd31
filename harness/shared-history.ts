type Qos = 0 | 1 | 2;

/** A broken shared-subscription property (one of history.ts' violations). */
export interface SharedViolation {
  property: "shared-stranded" | "shared-one-member" | "shared-qos2-once";
  detail: string;
}

/** A message as the history logged it (history.ts' record, read here). */
export interface SentRecord {
  readonly at: number;
  readonly publisher: string;
  readonly topic: string;
  readonly seq: number;
  readonly qos: Qos;
  readonly acked: boolean;
}

interface Group {
  readonly topics: ReadonlySet<string>;
  /** The QoS of its members' subscriptions. */
  readonly qos: Qos;
  readonly members: Set<string>;
}

interface MemberDelivery {
  member: string;
  /** The message, as history.ts keys it. */
  id: string;
  qos: Qos;
}

/** A shared group's figures for a report. */
export interface SharedSummary {
  /** Deliveries to members, duplicates included. */
  delivered: number;
  /** Extra copies at other members of messages whose first member lost its connection. */
  redelivered: number;
  /** Copies of a message a member already had (QoS 1 allows them). */
  sameMemberDuplicates: number;
  /** Acknowledged QoS 1/2 messages that reached no member, plus entries left in Redis. */
  stranded: number;
  /** QoS 0 messages (as delivered) that reached no member: allowed. */
  qos0Lost: number;
}

/**
 * The shared-subscription side of a chaos history (docs/shared-subscriptions.md's guarantees,
 * issue 17's "each message goes to exactly one member, and nothing is stranded"):
 * - **shared-stranded**: every acknowledged QoS 1/2 message of a group's topics reaches at least
 *   one member, and nothing is left in a member's queue or the backlog once the run settled;
 * - **shared-one-member**: a message reaches one member only, unless members that had it lost
 *   their connection (or left) after it was published: the group moves what a leaving member
 *   did not acknowledge to the others, at least once (a redelivery, counted);
 * - **shared-qos2-once**: a QoS 2 message never reaches the same member twice.
 * Members are not subscribers of history.ts' own checks (a group splits its messages). None of
 * the three holds for messages sent before history.ts' `checkLossFrom` (Redis lost its data).
 */
export class SharedHistory {
  private readonly groups = new Map<string, Group>();
  private readonly deliveries: MemberDelivery[] = [];
  /** Per member, when its connection was lost or it left the group. */
  private readonly disruptions = new Map<string, number[]>();
  /** Per group, what Redis still held for it after the run settled (queues and backlog). */
  private readonly leftInStore = new Map<string, number>();

  /** `member` holds the group `group`, whose filter covers `topics`, at `qos`. */
  joined(group: string, member: string, topics: readonly string[], qos: Qos): void {
    let known = this.groups.get(group);
    if (!known) {
      known = { topics: new Set(topics), qos, members: new Set() };
      this.groups.set(group, known);
    }
    known.members.add(member);
  }

  /** Whether `member` is a member of a group logged by joined(). */
  isMember(member: string): boolean {
    for (const group of this.groups.values()) if (group.members.has(member)) return true;
    return false;
  }

  /** A member received the message `id` (history.ts' key). */
  received(member: string, id: string, qos: Qos): void {
    this.deliveries.push({ member, id, qos });
  }

  /** `member`'s connection was lost, or it left its group, at `at`. */
  disrupted(member: string, at: number = Date.now()): void {
    const times = this.disruptions.get(member);
    if (times) times.push(at);
    else this.disruptions.set(member, [at]);
  }

  /** After the run settled: the entries Redis still holds for `group` (queues and backlog). */
  left(group: string, entries: number): void {
    this.leftInStore.set(group, entries);
  }

  check(sent: readonly SentRecord[], lossFrom: number): SharedViolation[] {
    const violations: SharedViolation[] = [];
    for (const [name, group] of this.groups) {
      const { missing, multiple, qos2Twice } = this.examine(group, sent, lossFrom);
      if (missing.length > 0) {
        violations.push({
          property: "shared-stranded",
          detail: `${name}: ${missing.length} acknowledged reached no member: ${missing.slice(0, 5).join(", ")}`,
        });
      }
      const left = this.leftInStore.get(name) ?? 0;
      if (left > 0) {
        violations.push({
          property: "shared-stranded",
          detail: `${name}: ${left} entries left in members' queues or the backlog`,
        });
      }
      for (const { id, members } of multiple.filter((m) => !m.redelivery)) {
        violations.push({
          property: "shared-one-member",
          detail: `${name}: ${id} reached ${members.join(", ")} with no member's connection lost`,
        });
      }
      for (const { id, member, count } of qos2Twice) {
        violations.push({
          property: "shared-qos2-once",
          detail: `${name}: ${member} got QoS 2 ${id} ${count} times`,
        });
      }
    }
    return violations;
  }

  summary(sent: readonly SentRecord[], lossFrom: number): SharedSummary {
    const summary: SharedSummary = {
      delivered: 0,
      redelivered: 0,
      sameMemberDuplicates: 0,
      stranded: 0,
      qos0Lost: 0,
    };
    for (const group of this.groups.values()) {
      const figures = this.examine(group, sent, lossFrom);
      summary.delivered += figures.delivered;
      summary.redelivered += figures.multiple
        .filter((m) => m.redelivery)
        .reduce((n, m) => n + m.members.length - 1, 0);
      summary.sameMemberDuplicates += figures.sameMemberDuplicates;
      summary.stranded += figures.missing.length;
      summary.qos0Lost += figures.qos0Lost;
    }
    for (const left of this.leftInStore.values()) summary.stranded += left;
    return summary;
  }

  /** One group's deliveries against what was sent to its topics. */
  private examine(group: Group, sent: readonly SentRecord[], lossFrom: number) {
    /** Per message, how many times each member got it. */
    const got = new Map<string, Map<string, number>>();
    const qos2 = new Map<string, Map<string, number>>();
    let delivered = 0;
    for (const d of this.deliveries) {
      if (!group.members.has(d.member)) continue;
      delivered++;
      count(got, d.id, d.member);
      if (d.qos === 2) count(qos2, d.id, d.member);
    }
    const missing: string[] = [];
    const multiple: Array<{ id: string; members: string[]; redelivery: boolean }> = [];
    let sameMemberDuplicates = 0;
    let qos0Lost = 0;
    const exempt = new Set<string>();
    for (const message of sent) {
      const id = `${message.publisher}:${message.topic}#${message.seq}`;
      if (!group.topics.has(message.topic)) continue;
      const byMember = got.get(id);
      const qos = Math.min(message.qos, group.qos);
      if (byMember === undefined) {
        if (qos === 0) qos0Lost++;
        else if (message.acked && message.at >= lossFrom) missing.push(id);
        continue;
      }
      for (const times of byMember.values()) sameMemberDuplicates += times - 1;
      // Sent before Redis lost what it held (history.ts' checkLossFrom): the broker's QoS 2
      // state and the group's queues went with it, so neither once nor one member holds.
      if (message.at < lossFrom) {
        exempt.add(id);
        continue;
      }
      if (byMember.size < 2) continue;
      // A leaving member's unacknowledged messages move to the others: of the k members that
      // got one, k - 1 must have lost their connection (or left) after it was published.
      const members = [...byMember.keys()];
      const disrupted = members.filter((m) =>
        (this.disruptions.get(m) ?? []).some((at) => at >= message.at),
      );
      multiple.push({ id, members, redelivery: disrupted.length >= members.length - 1 });
    }
    const qos2Twice: Array<{ id: string; member: string; count: number }> = [];
    for (const [id, byMember] of qos2) {
      if (exempt.has(id)) continue;
      for (const [member, times] of byMember) {
        if (times > 1) qos2Twice.push({ id, member, count: times });
      }
    }
    return { delivered, missing, multiple, qos2Twice, sameMemberDuplicates, qos0Lost };
  }
}

function count(counts: Map<string, Map<string, number>>, id: string, member: string): void {
  let byMember = counts.get(id);
  if (!byMember) {
    byMember = new Map();
    counts.set(id, byMember);
  }
  byMember.set(member, (byMember.get(member) ?? 0) + 1);
}
