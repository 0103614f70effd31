import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Why a connection lost its client id to a newer one (ClientOwnership). */
export type OwnershipConflictCause = "takeover" | "local" | "late" | "reconcile";

/**
 * The series of a node's reach to Redis under network faults (issue 17): how long its round
 * trips take, whether it fenced itself, and the client-id conflicts it resolved. Only a node
 * that uses Redis has them (SluiceMetrics builds them on first use).
 */
export class PartitionSeries {
  readonly roundTrip: Histogram;
  readonly fenced: Gauge;
  readonly fences: Counter;
  readonly ownershipConflicts: Counter<"cause">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.roundTrip = new Histogram({
      name: "sluice_redis_round_trip_seconds",
      help: "Round trip of the node's Redis probe (a PING on its state connection, every `redis.fence.probeMs`), queueing behind the node's own commands included",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.fenced = new Gauge({
      name: "sluice_fenced",
      help: "1 while the node has fenced itself (no Redis round trip for `redis.fence.afterMs`): its clients were disconnected and it is not ready",
      registers,
    });
    this.fences = new Counter({
      name: "sluice_fences_total",
      help: "Times the node fenced itself because it could not reach Redis",
      registers,
    });
    this.ownershipConflicts = new Counter({
      name: "sluice_session_ownership_conflicts_total",
      help: "Connections this node closed because a newer connection of the same client id owns it, by how it learned: `takeover` (told by the new owner's node), `local` (both here), `late` (taken over while connecting), `reconcile` (found when checking against Redis after Redis came back: a takeover missed during a partition)",
      labelNames: ["cause"],
      registers,
    });
    for (const cause of ["takeover", "local", "late", "reconcile"] as const) {
      this.ownershipConflicts.inc({ cause }, 0);
    }
  }
}
