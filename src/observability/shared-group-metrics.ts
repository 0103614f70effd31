import { Counter, Gauge, type Registry } from "prom-client";

/** A shared group as a node sees it, for the gauges. */
export interface SharedGroupView {
  readonly name: string;
  /** Online members, cluster-wide, as this node last read them. */
  readonly members: number;
  /** Messages waiting for a member (the cluster's figure, as this node last read it). */
  readonly backlog: number;
}

/**
 * The per-group series of shared subscriptions, labelled `group` (`<share name>/<filter>`; as
 * many as `sharedSubscriptions.maxGroups` at most). A group's series go when it ends.
 */
export class SharedGroupMetrics {
  private readonly deliveredTotal: Counter<"group">;
  private readonly redeliveredTotal: Counter<"group">;
  private readonly droppedTotal: Counter<"group" | "reason">;
  private view: () => readonly SharedGroupView[] = () => [];

  constructor(registers: Registry[]) {
    const metrics = this;
    new Gauge({
      name: "sluice_shared_members",
      help: "Online members of each shared group, cluster-wide, as this node last read them (take the max across nodes)",
      labelNames: ["group"],
      registers,
      collect() {
        this.reset();
        for (const group of metrics.view()) this.set({ group: group.name }, group.members);
      },
    });
    new Gauge({
      name: "sluice_shared_backlog",
      help: "Messages of each shared group waiting for a member to come online (cluster-wide, as this node last read it; take the max across nodes)",
      labelNames: ["group"],
      registers,
      collect() {
        this.reset();
        for (const group of metrics.view()) this.set({ group: group.name }, group.backlog);
      },
    });
    this.deliveredTotal = new Counter({
      name: "sluice_shared_delivered_total",
      help: "Messages of each shared group this node sent to a member",
      labelNames: ["group"],
      registers,
    });
    this.redeliveredTotal = new Counter({
      name: "sluice_shared_redelivered_total",
      help: "Messages of each shared group moved to another member because theirs left before acknowledging them (some had reached it: possible duplicates)",
      labelNames: ["group"],
      registers,
    });
    this.droppedTotal = new Counter({
      name: "sluice_shared_dropped_total",
      help: "Messages of each shared group dropped: every member's queue full (queue_full), the backlog full (backlog_full), or no member left to take a leaving member's (no_member)",
      labelNames: ["group", "reason"],
      registers,
    });
  }

  /** Where the gauges read from. */
  observe(view: () => readonly SharedGroupView[]): void {
    this.view = view;
  }

  delivered(group: string, count: number): void {
    this.deliveredTotal.inc({ group }, count);
  }

  redelivered(group: string, count: number): void {
    this.redeliveredTotal.inc({ group }, count);
  }

  dropped(group: string, reason: string, count: number): void {
    this.droppedTotal.inc({ group, reason }, count);
  }

  ended(group: string): void {
    this.deliveredTotal.remove({ group });
    this.redeliveredTotal.remove({ group });
    for (const reason of ["queue_full", "backlog_full", "no_member"]) {
      this.droppedTotal.remove({ group, reason });
    }
  }
}
