import type { Aedes, PublishPacket } from "aedes";
import type { Logger } from "../observability/logger.js";
import { heartbeatsSeen, publishStoredWill } from "./aedes-internals.js";
import type { StoredPacket } from "./persistence-types.js";

/** aedes' liveness rule: a node not heard from for this many heartbeats is dead. */
const SILENT_HEARTBEATS = 3;
/** Checks per heartbeat: a node is acted on within a quarter heartbeat of passing the rule. */
const CHECKS_PER_HEARTBEAT = 4;
/** Wills of a dead node in flight at once (aedes' own sweep takes 16 at a time too). */
const CONCURRENCY = 16;

/** What the targeted sweep needs of the persistence (RedisPersistence). */
export interface DeadNodeWillStore {
  /** The wills left with one node, and only those. */
  willsLeftWith(brokerId: string): AsyncIterable<StoredPacket>;
  delWill(client: { id: string; brokerId: string }): Promise<unknown>;
}

export interface DeadNodeWillsDeps {
  heartbeatMs: number;
  store: DeadNodeWillStore;
  /** Whether this node's Redis connections are up: only then does it hear every heartbeat. */
  isFabricUp(): boolean;
  /**
   * How a silent node is known gone (its lease ran out, or its connections to Redis closed),
   * or undefined while it is not: its wills are claimed only then (a node cut off from the
   * others' pub/sub still holds its lease, its connections and its clients), so the sweep waits.
   */
  nodeGone(nodeId: string): Promise<string | undefined>;
  log: Logger;
}

/**
 * Publishes a dead node's wills as soon as the node passes aedes' liveness rule (3 silent
 * heartbeats) and is known gone. aedes' own sweep reads every node's wills only every 4
 * heartbeats, so it acts 3 to 7 heartbeats after the death; this one checks 4 times a heartbeat
 * and reads only the dead node's wills. aedes' sweep stays as the backstop: the authorizePublish hook claims each will
 * once cluster-wide (WillClaims), so a will goes out once whichever sweep, on whichever
 * survivor, reaches it first.
 *
 * A node is judged dead from its heartbeats, and its wills go once it is known gone too: its
 * connections to Redis closed (a process that ends), or its lease ran out (`nodeLeaseSeconds`,
 * 15 s by default): a node only cut off from the others' pub/sub keeps both, and its clients,
 * whose wills are not due. Heartbeats are only as good as this node's
 * pub/sub, so no node is judged while this node's Redis connections are down, until they have
 * been up for 3 heartbeats again, nor on a check that ran late (a stalled event loop has
 * heartbeats waiting unread).
 */
export class DeadNodeWills {
  /** Each other node, when last heard from. */
  private readonly lastSeen = new Map<string, number>();
  /** Nodes judged dead, with the last heartbeat heard from each (until a newer one comes). */
  private readonly judgedDead = new Map<string, number>();
  /** Nodes judged dead and not yet known gone, with their last heartbeat. */
  private readonly awaitingGone = new Map<string, number>();
  private askingLeases = false;
  private readonly periodMs: number;
  private timer: NodeJS.Timeout | undefined;
  private lastCheck = 0;
  private fabricUpSince: number | undefined;

  constructor(
    private readonly broker: Aedes,
    private readonly deps: DeadNodeWillsDeps,
  ) {
    this.periodMs = Math.max(1, Math.floor(deps.heartbeatMs / CHECKS_PER_HEARTBEAT));
  }

  start(): void {
    this.lastCheck = Date.now();
    this.timer = setInterval(() => this.check(Date.now()), this.periodMs);
    this.timer.unref();
    this.broker.once("closed", () => this.stop());
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private check(now: number): void {
    const silenceMs = SILENT_HEARTBEATS * this.deps.heartbeatMs;
    const late = now - this.lastCheck > 2 * this.periodMs;
    this.lastCheck = now;
    if (!this.deps.isFabricUp()) this.fabricUpSince = undefined;
    else this.fabricUpSince ??= now;
    const seen = heartbeatsSeen(this.broker);
    for (const [id, at] of this.judgedDead) {
      if (seen[id] === at) continue;
      this.judgedDead.delete(id);
      this.awaitingGone.delete(id);
    }
    for (const id in seen) {
      const at = seen[id] ?? 0;
      // aedes keeps a dead node's last heartbeat until its own sweep: judged once on it.
      if (id === this.broker.id || this.judgedDead.has(id)) continue;
      if (!this.lastSeen.has(id)) {
        this.deps.log.debug({ event: "node.heard", nodeId: id }, "heard a node's heartbeat");
      }
      this.lastSeen.set(id, at);
    }
    if (late || this.fabricUpSince === undefined || now - this.fabricUpSince <= silenceMs) return;
    for (const [id, at] of this.lastSeen) {
      // aedes' rule, as its sweep applies it: alive while `seen + 3 heartbeats >= now`.
      if (at + silenceMs >= now) continue;
      this.lastSeen.delete(id);
      this.judgedDead.set(id, at);
      this.awaitingGone.set(id, at);
      this.deps.log.info(
        { event: "node.silent", nodeId: id, silentMs: now - at },
        "node stopped heartbeating: its clients' wills wait until it is known gone",
      );
    }
    if (this.awaitingGone.size > 0 && !this.askingLeases) {
      this.askingLeases = true;
      this.sweepGone(now).finally(() => {
        this.askingLeases = false;
      });
    }
  }

  /** Sweeps each node judged dead that is known gone (asked at each check until it is). */
  private async sweepGone(now: number): Promise<void> {
    for (const [id, at] of [...this.awaitingGone]) {
      let signal: string | undefined;
      try {
        signal = await this.deps.nodeGone(id);
      } catch {
        continue; // Redis did not answer: asked again at the next check
      }
      if (signal === undefined || this.awaitingGone.get(id) !== at) continue;
      this.awaitingGone.delete(id);
      this.sweep(id, now - at, signal).catch((err: unknown) =>
        this.deps.log.warn(
          { event: "node.dead_wills_failed", nodeId: id, err },
          "could not publish a dead node's wills; aedes' will sweep retries",
        ),
      );
    }
  }

  private async sweep(brokerId: string, silentMs: number, signal: string): Promise<void> {
    const { store, log } = this.deps;
    log.info(
      { event: "node.dead", nodeId: brokerId, silentMs, signal },
      "node is gone: publishing its clients' wills",
    );
    let published = 0;
    let failed = 0;
    const inFlight = new Set<Promise<void>>();
    const publishOne = async (will: StoredPacket, clientId: string): Promise<void> => {
      try {
        // Refused: claimed by another survivor, deferred (Will Delay Interval) or void.
        if (!(await publishStoredWill(this.broker, will as unknown as PublishPacket))) return;
        await store.delWill({ id: clientId, brokerId: will.brokerId });
        published++;
      } catch {
        // Claimed here and not published, or published and not deleted: the claim runs out
        // and aedes' sweep publishes what is still stored.
        failed++;
      }
    };
    for await (const will of store.willsLeftWith(brokerId)) {
      if (will.clientId === undefined) continue;
      const task: Promise<void> = publishOne(will, will.clientId).then(() => {
        inFlight.delete(task);
      });
      inFlight.add(task);
      if (inFlight.size >= CONCURRENCY) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    log.info(
      { event: "node.dead_wills_published", nodeId: brokerId, count: published, failed },
      "dead node's wills published",
    );
  }
}
