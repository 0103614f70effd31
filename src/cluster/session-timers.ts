import { RedisScripts } from "../engine/redis-scripts.js";
import type {
  DeferredWill,
  Departure,
  DepartureOutcome,
  SessionTimerActions,
  TimerStore,
} from "../engine/session-timers-engine.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";
import { DueSchedule } from "./due-schedule.js";

const SCRIPT_DIR = new URL("./lua/", import.meta.url);

type ScriptName = "depart" | "expireSession" | "willDue" | "deferWill" | "orphanedSessions";

const OWNERS = "owners";
const SESSIONS = "sessions";
/** MQTT 5's "never expires" (0xFFFFFFFF seconds). */
const NEVER_SECONDS = 4_294_967_295;
/** A handler (publish wills, wipe a session) takes far less; past it another node retries. */
const CLAIM_LEASE_MS = 10_000;
const BATCH = 100;

export interface SessionTimersOptions {
  redis: RedisClient;
  nodeId: string;
  /** How often this node looks for timers that fell due, and for dead nodes' sessions. */
  pollMs: number;
  log: Logger;
  /** A session expired here (counted by the node whose timer fired). */
  onSessionExpired(): void;
}

/**
 * MQTT 5's session expiry and will delay for a cluster, in Redis, on Redis' clock: a timer set
 * by a node outlives it, and falls due on whichever node polls first (DueSchedule). The CONNECT
 * of the client id cancels both, inside its claim (claim-client-ids-5.lua), on any node. While
 * connected, an MQTT 5 session's expiry interval is kept under its node's id: when that node
 * dies, a survivor starts the expiry of each of its sessions once the node's lease is gone.
 * Keys: docs/clustering.md.
 */
export class SessionTimers implements TimerStore {
  private readonly scripts: RedisScripts<ScriptName>;
  private readonly schedule: DueSchedule;
  private readonly leasePrefix: string;
  private readonly intervalsPrefix: string;
  private actions: SessionTimerActions | undefined;
  private reaper: NodeJS.Timeout | undefined;
  private reaping: Promise<void> | undefined;

  constructor(
    private readonly options: SessionTimersOptions,
    /** The node lease key's prefix, relative to the connection's key prefix. */
    leaseKeyPrefix: string,
  ) {
    const prefix = options.redis.options.keyPrefix ?? "";
    this.leasePrefix = `${prefix}${leaseKeyPrefix}`;
    this.intervalsPrefix = `${prefix}${STATE_KEYS.expiryIntervalsPrefix}`;
    this.scripts = new RedisScripts<ScriptName>(options.redis, SCRIPT_DIR);
    this.schedule = new DueSchedule({
      redis: options.redis,
      key: STATE_KEYS.sessionTimers,
      leaseMs: CLAIM_LEASE_MS,
      pollMs: options.pollMs,
      batch: BATCH,
      log: options.log,
      onDue: (member) => this.due(member),
    });
  }

  /** The key of a node's expiry intervals without the node id, as the claim script takes it. */
  get intervalsKeyPrefix(): string {
    return this.intervalsPrefix;
  }

  /**
   * Starts polling. This node's own expiry intervals left from before a crash are taken first:
   * those sessions' connections are gone.
   */
  async start(actions: SessionTimerActions): Promise<void> {
    this.actions = actions;
    await this.takeOrphans(this.options.nodeId, true);
    this.schedule.start();
    this.armReaper();
  }

  async stop(): Promise<void> {
    if (this.reaper !== undefined) clearTimeout(this.reaper);
    this.reaper = undefined;
    await this.reaping;
    await this.schedule.stop();
  }

  /** Starts a departed connection's timers, unless a newer connection took its session over. */
  async depart(departure: Departure): Promise<DepartureOutcome> {
    const { clientId, epoch, sessionSeconds, willDelaySeconds } = departure;
    const session =
      sessionSeconds === undefined
        ? ""
        : sessionSeconds >= NEVER_SECONDS
          ? "-1"
          : String(sessionSeconds * 1000);
    const will = willDelaySeconds === undefined ? "" : String(willDelaySeconds * 1000);
    const reply = await this.scripts.run(
      "depart",
      [OWNERS, STATE_KEYS.sessionTimers, SESSIONS],
      [this.options.nodeId, this.intervalsPrefix, clientId, String(epoch), session, will],
    );
    return reply === 0 ? "superseded" : reply === 2 ? "ended" : "scheduled";
  }

  /**
   * A dead node's delayed will, met by a will sweep: it is scheduled (from now) instead of
   * published; void when the client is connected elsewhere again; left alone while the node
   * holds its lease (only cut off from the others' pub/sub).
   */
  async deferDeadNodeWill(
    brokerId: string,
    clientId: string,
    delaySeconds: number,
  ): Promise<DeferredWill> {
    const reply = await this.scripts.run(
      "deferWill",
      [STATE_KEYS.sessionTimers, OWNERS],
      [this.leasePrefix, this.intervalsPrefix, brokerId, clientId, delaySeconds * 1000],
    );
    return reply === 1 ? "scheduled" : reply === 0 ? "void" : "alive";
  }

  private async due(member: string): Promise<boolean> {
    const actions = this.actions;
    if (actions === undefined) return false;
    const clientId = member.slice(2);
    if (member.startsWith("s|")) {
      const expired = await this.scripts.run(
        "expireSession",
        [SESSIONS, OWNERS, STATE_KEYS.sessionTimers],
        [this.leasePrefix, clientId],
      );
      // A live owner here is a connection whose claim would have cancelled the timer: a stale
      // entry or a claim under way. Due again after the lease, when that is settled.
      if (expired !== 1) return false;
      // A will not yet out goes now: the session ends [MQTT-3.1.3-9]. The session's record is
      // gone; its stored state waits for a will another node is publishing (due again).
      if (!(await actions.publishWills(clientId))) return false;
      await actions.wipe(clientId);
      this.options.onSessionExpired();
      this.options.log.debug(
        { event: "session.expired", clientId },
        "session expired (its expiry interval passed)",
      );
      return true;
    }
    if (member.startsWith("w|")) {
      const publish = await this.scripts.run("willDue", [OWNERS], [this.leasePrefix, clientId]);
      if (publish !== 1) return false;
      return actions.publishWills(clientId);
    }
    return true;
  }

  private armReaper(): void {
    this.reaper = setTimeout(() => {
      this.reaping = this.reapDeadNodes()
        .catch((err: unknown) =>
          this.options.log.warn(
            { event: "session_timers.reap_failed", err },
            "could not look for a dead node's sessions; retrying",
          ),
        )
        .finally(() => {
          this.reaping = undefined;
          if (this.reaper !== undefined) this.armReaper();
        });
    }, this.options.pollMs * 4);
    this.reaper.unref();
  }

  /** Starts the expiry of every session a dead node held (nodes found by their missing lease). */
  private async reapDeadNodes(): Promise<void> {
    const nodes = await this.options.redis.smembers(STATE_KEYS.expiryNodes);
    for (const node of nodes) {
      if (node !== this.options.nodeId) await this.takeOrphans(node, false);
    }
  }

  private async takeOrphans(node: string, own: boolean): Promise<void> {
    let taken = 0;
    for (;;) {
      const reply = Number(
        await this.scripts.run(
          "orphanedSessions",
          [STATE_KEYS.sessionTimers, STATE_KEYS.expiryNodes, OWNERS],
          [this.leasePrefix, this.intervalsPrefix, node, BATCH, own ? "1" : "0"],
        ),
      );
      if (reply <= 0) break;
      taken += reply;
      if (reply < BATCH) break;
    }
    if (taken > 0) {
      this.options.log.info(
        { event: "session_timers.orphans_taken", node, sessions: taken },
        own
          ? "sessions left from before this node's restart: their expiry starts now"
          : "a dead node's sessions: their expiry starts now",
      );
    }
  }
}
