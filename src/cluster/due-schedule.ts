import { RedisScripts } from "../engine/redis-scripts.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";

const SCRIPT_DIR = new URL("./lua/", import.meta.url);

type ScriptName = "scheduleDue" | "claimDue" | "completeDue";

export interface DueScheduleOptions {
  redis: RedisClient;
  /** The sorted set, relative to the connection's key prefix. */
  key: string;
  /** How long a claim holds a member before another node may take it: longer than a handler. */
  leaseMs: number;
  /** How often this node looks for members that fell due. */
  pollMs: number;
  /** The most members one poll claims. */
  batch: number;
  log: Logger;
  /**
   * Handles a member that fell due. Resolves true when it is done with (the member is removed),
   * false to leave it to fall due again after the lease; a rejection does the same, logged.
   */
  onDue(member: string): Promise<boolean>;
}

/**
 * Timers that outlive the node that set them: members of a Redis sorted set scored by the time
 * they fall due, on Redis' clock. Every node polls; a member that fell due is claimed by one of
 * them, which pushes it back by a lease rather than removing it, and removes it only once its
 * handler is done. A node that dies mid-way leaves the member to fall due again elsewhere, so a
 * member is handled at least once, and once unless a node dies between acting and completing.
 * Cancelling removes the member wherever it was scheduled.
 */
export class DueSchedule {
  private readonly scripts: RedisScripts<ScriptName>;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = true;
  private lastFailureLog = 0;

  constructor(private readonly options: DueScheduleOptions) {
    this.scripts = new RedisScripts<ScriptName>(options.redis, SCRIPT_DIR);
  }

  /** Each member falls due after its delay (ms); scheduling one again moves it. */
  async schedule(
    entries: ReadonlyArray<readonly [member: string, delayMs: number]>,
  ): Promise<void> {
    if (entries.length === 0) return;
    const args: Array<string | number> = [];
    for (const [member, delayMs] of entries) args.push(member, Math.max(0, Math.ceil(delayMs)));
    await this.scripts.run("scheduleDue", [this.options.key], args);
  }

  /** Removes members, claimed or not; resolves how many were scheduled. */
  async cancel(members: readonly string[]): Promise<number> {
    if (members.length === 0) return 0;
    return Number(await this.options.redis.zrem(this.options.key, ...members));
  }

  /** When a member falls due (Redis' clock, ms), or undefined when it is not scheduled. */
  async dueAt(member: string): Promise<number | undefined> {
    const score = await this.options.redis.zscore(this.options.key, member);
    return score === null ? undefined : Number(score);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.arm(0);
  }

  /** Stops polling; resolves once a poll under way has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.polling;
  }

  /** One poll: claims what fell due and handles it; resolves how many members were handled. */
  async pollOnce(): Promise<number> {
    const { key, leaseMs, batch } = this.options;
    const reply = (await this.scripts.run("claimDue", [key], [leaseMs, batch])) as string[];
    const [token, ...members] = reply;
    if (token === undefined || members.length === 0) return 0;
    const outcomes = await Promise.all(members.map((member) => this.handle(member)));
    const done = members.filter((_, index) => outcomes[index]);
    if (done.length > 0) await this.scripts.run("completeDue", [key], [token, ...done]);
    return done.length;
  }

  private async handle(member: string): Promise<boolean> {
    try {
      return await this.options.onDue(member);
    } catch (err) {
      this.options.log.warn(
        { event: "due_schedule.handler_failed", key: this.options.key, err },
        "a due timer's handler failed; it falls due again after its lease",
      );
      return false;
    }
  }

  private arm(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.polling = this.pollUntilEmpty().finally(() => {
        this.polling = undefined;
        this.arm(this.options.pollMs);
      });
    }, delayMs);
    this.timer.unref();
  }

  /** Polls again at once while polls come back full, so a backlog drains without waiting. */
  private async pollUntilEmpty(): Promise<void> {
    try {
      while (!this.stopped && (await this.pollOnce()) >= this.options.batch) {
        // a full batch: more may have fallen due
      }
    } catch (err) {
      const now = Date.now();
      if (now - this.lastFailureLog < 30_000) return;
      this.lastFailureLog = now;
      this.options.log.warn(
        { event: "due_schedule.poll_failed", key: this.options.key, err },
        "could not claim due timers from Redis; retrying",
      );
    }
  }
}
