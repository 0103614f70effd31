import { performance } from "node:perf_hooks";
import { installReadGate, type ReadGate } from "../engine/read-gate.js";
import type { Logger } from "../observability/logger.js";

/** What the node has in flight towards and from Redis. */
export interface FabricLoad {
  /** Bytes of PUBLISHes sent and not yet answered (the outbound pipeline). */
  pendingBytes(): number;
  /**
   * Bytes Redis holds for the subscriber connection of the node furthest behind, this one
   * included (their output buffers): every node reads what this node's publishers send.
   */
  clusterLagBytes(): number;
  /** The node whose lag clusterLagBytes is. */
  laggingNode(): string | undefined;
  /** Another node that has stopped reading its subscription (it is behind), if any. */
  pausedNode(): string | undefined;
  /** Calls `listener` whenever either may have fallen. */
  onChange(listener: () => void): void;
}

export interface BackpressureBounds {
  pendingBytes: number;
  subscriptionLagBytes: number;
}

export interface BackpressureMetrics {
  backpressureEngaged(): void;
  backpressureReleased(seconds: number): void;
}

/** Reading resumes once both are back under this share of their bound. */
const RESUME_AT = 0.5;
/** At most one warning per this long, however often the bound is passed. */
const WARN_EVERY_MS = 30_000;

/**
 * End-to-end backpressure in a cluster: while the node's outbound Redis pipeline, or the lag
 * of a node's subscription (its own or another node's), is past its bound, the node stops
 * reading its publishers' sockets at their next PUBLISH (ReadGate: order kept, nothing
 * acknowledged that was not published, TCP slows the senders), and resumes them once both are
 * back under half their bound.
 *
 * Without it, publishers faster than the nodes filled Redis' output buffer for a node's
 * subscription until Redis cut it (`client-output-buffer-limit pubsub`, 32 MB by default): the
 * node went not-ready and everything buffered was lost. Throttle first, drop last: QoS 0 is
 * still shed at egress to a slow subscriber, never lost to a cut.
 */
export class ClusterBackpressure {
  private engaged = false;
  private engagedAt = 0;
  private held: ReadGate[] = [];
  private episodes = 0;
  private lastWarnAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly bounds: BackpressureBounds,
    private readonly load: FabricLoad,
    private readonly metrics: BackpressureMetrics,
    private readonly log: Logger,
  ) {
    load.onChange(() => {
      if (this.engaged && this.underResumeMark()) this.release();
    });
  }

  /** Installs the gate on a client before it reads (one per connection, node-wide decision). */
  attach(client: object): void {
    const gate: ReadGate = installReadGate(client, { admit: () => this.admit(gate) });
  }

  /** Whether publishers are held now. */
  get active(): boolean {
    return this.engaged;
  }

  private admit(gate: ReadGate): boolean {
    if (!this.engaged) {
      if (!this.overBound()) return true;
      this.engage();
    }
    this.held.push(gate);
    return false;
  }

  private overBound(): boolean {
    return (
      this.load.pendingBytes() > this.bounds.pendingBytes ||
      this.load.clusterLagBytes() > this.bounds.subscriptionLagBytes ||
      this.load.pausedNode() !== undefined
    );
  }

  private underResumeMark(): boolean {
    return (
      this.load.pendingBytes() <= this.bounds.pendingBytes * RESUME_AT &&
      this.load.clusterLagBytes() <= this.bounds.subscriptionLagBytes * RESUME_AT &&
      this.load.pausedNode() === undefined
    );
  }

  private engage(): void {
    this.engaged = true;
    this.engagedAt = performance.now();
    this.episodes++;
    this.metrics.backpressureEngaged();
    if (this.engagedAt - this.lastWarnAt < WARN_EVERY_MS) return;
    this.lastWarnAt = this.engagedAt;
    this.log.warn(
      {
        event: "cluster.backpressure",
        pendingBytes: this.load.pendingBytes(),
        subscriptionLagBytes: this.load.clusterLagBytes(),
        laggingNode: this.load.laggingNode(),
        pausedNode: this.load.pausedNode(),
        episodes: this.episodes,
      },
      "Redis is behind this node: publishers are paused until it catches up",
    );
  }

  private release(): void {
    this.engaged = false;
    this.metrics.backpressureReleased((performance.now() - this.engagedAt) / 1000);
    const held = this.held;
    this.held = [];
    // A resumed parser publishes until the bound is passed again; the rest are then held anew.
    for (const gate of held) gate.resume();
  }
}
