import { Redis } from "ioredis";
import type { RunningBroker } from "../brokers/broker.js";
import { infoField } from "../brokers/redis-info.js";
import { LOOP_LAG_MAX, readSharedSeries } from "../brokers/sluice-metrics.js";
import { PeakRss } from "../system/process-memory.js";
import { type CostFigures, CostProbe } from "./cost-probe.js";
import type { LoadCase, LoadProbe } from "./measure-brokers.js";
import type { ResultRow } from "./scenario.js";

/** How often the nodes' shared series, the member queues and Redis' memory are read. */
const SAMPLE_MS = 500;
/** How long the starting reading may take before the load starts regardless. */
const FIRST_READING_MS = 5_000;
/**
 * How long the load waits for every node to know every member of the group: a node learns of a
 * member on another node a refresh later (an announcement, else within 2 s), and until then
 * proposes only the members it knows, which skews the members' shares of a short run.
 */
const MEMBERS_KNOWN_MS = 5_000;
const MEMBERS_POLL_MS = 50;
const MB = 1024 * 1024;

/** What shared subscriptions did over one measurement, as the nodes and Redis tell it. */
export interface SharedFigures {
  /** sluice_shared_delivered_total growth, all nodes; null without Sluice nodes. */
  delivered: number | null;
  /** sluice_shared_redelivered_total growth, all nodes. */
  redelivered: number | null;
  /** sluice_shared_dropped_total growth by reason, all nodes. */
  dropped: Record<string, number> | null;
  /** The highest sluice_shared_backlog any node reported (messages waiting for a member). */
  peakBacklog: number | null;
  /** The most messages the members' queues in Redis held at once (assigned, not acknowledged). */
  peakMemberQueues: number | null;
  /** Each broker process's peak RSS, MB (node A, node B; or the one broker). */
  peakBrokerRssMb: number[];
  /** Each node's longest event-loop delay over the run, ms (read with the series). */
  maxLoopDelayMs: number[];
  /** Redis' peak used_memory over the run, MB; null without Redis. */
  peakRedisMb: number | null;
  /** A reading that failed (its figures are what the other readings gave). */
  sampleError?: string;
}

/**
 * The cost probe's figures (CPU per message of every process, Redis' work, readiness) plus
 * the shared groups' own: what the nodes counted as delivered, redelivered and dropped, the
 * backlog and the members' queues at their deepest, and the memory of every process, sampled
 * every SAMPLE_MS from the warm-up until the members have received what they will (a last
 * reading then, with the members still connected: a group's series go with its last member).
 */
export class SharedProbe implements LoadProbe {
  private readonly cost: CostProbe;
  private costFigures: CostFigures | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> = Promise.resolve();
  private readonly first: Array<Map<string, number> | undefined> = [];
  private readonly latest: Array<Map<string, number>> = [];
  private peakBacklog: number | null = null;
  private peakMemberQueues: number | null = null;
  private peakRedisBytes: number | null = null;
  private rss: PeakRss[] = [];
  private readonly loopDelayMs: number[] = [];
  private redis: Redis | undefined;
  private readonly errors = new Set<string>();

  constructor(
    private readonly broker: RunningBroker,
    private readonly loadCase: LoadCase,
    private readonly onFinished: (row: ResultRow, cost: CostFigures, shared: SharedFigures) => void,
  ) {
    this.cost = new CostProbe(broker, loadCase, (_row, figures) => {
      this.costFigures = figures;
    });
  }

  /**
   * The shared series' starting values, read before anything is published: read only once the
   * load had started, they already counted its first deliveries.
   */
  async beforeStart(): Promise<void> {
    await this.membersKnown();
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, FIRST_READING_MS);
    });
    await Promise.race([this.sampleNodes(), bound]);
    clearTimeout(timer);
  }

  /**
   * Waits (at most MEMBERS_KNOWN_MS) until every Sluice node counts the case's subscribers as
   * members of its group (`sluice_shared_members`, the largest group's); past that, the row
   * says so.
   */
  private async membersKnown(): Promise<void> {
    const ports = this.broker.httpPorts ?? [];
    const expected = this.loadCase.pattern === "shared" ? this.loadCase.subscribers : 0;
    if (ports.length === 0 || expected === 0) return;
    const deadline = Date.now() + MEMBERS_KNOWN_MS;
    let counts: number[] = [];
    while (Date.now() < deadline) {
      counts = await Promise.all(
        ports.map((port) =>
          readSharedSeries(port).then(
            (series) => {
              let members = 0;
              for (const [key, value] of series) {
                if (key.startsWith("sluice_shared_members|")) members = Math.max(members, value);
              }
              return members;
            },
            () => -1,
          ),
        ),
      );
      if (counts.every((count) => count >= expected)) return;
      await new Promise((resolve) => setTimeout(resolve, MEMBERS_POLL_MS));
    }
    this.errors.add(
      `members known by the nodes before the load: ${counts.join(", ")} of ${expected}`,
    );
  }

  onStart(): void {
    this.cost.onStart();
    this.rss = this.broker.processes
      .filter((p) => p.role === "broker")
      .map((p) => new PeakRss(p.pid, 250));
    if (this.broker.redis) {
      const url = new URL(this.broker.redis.url);
      this.redis = new Redis({
        host: url.hostname,
        port: Number(url.port),
        lazyConnect: true,
        maxRetriesPerRequest: 1,
        commandTimeout: 5_000,
      });
      this.redis.on("error", (error: Error) => this.errors.add(`Redis: ${error.message}`));
    }
    this.sampling = this.sample();
    this.timer = setInterval(() => {
      this.sampling = this.sampling.then(() => this.sample());
    }, SAMPLE_MS);
  }

  /** The last reading, with the members still connected (their group's series still there). */
  async onSettled(): Promise<void> {
    clearInterval(this.timer);
    await this.sampling;
    await this.sample();
  }

  async finish(row: ResultRow): Promise<void> {
    clearInterval(this.timer);
    await this.sampling;
    this.redis?.disconnect();
    const peakBrokerRssMb = this.rss.map((r) => Math.round(r.stop() / MB));
    await this.cost.finish(row);
    const httpPorts = this.broker.httpPorts ?? [];
    const grown = (name: string): Record<string, number> | null => {
      if (httpPorts.length === 0) return null;
      const byRest: Record<string, number> = {};
      this.latest.forEach((series, node) => {
        for (const [key, value] of series) {
          const [metric, , reason] = key.split("|");
          if (metric !== name) continue;
          const rest = reason ?? "";
          byRest[rest] = (byRest[rest] ?? 0) + value - (this.first[node]?.get(key) ?? 0);
        }
      });
      return byRest;
    };
    const total = (name: string): number | null => {
      const byRest = grown(name);
      return byRest === null ? null : Object.values(byRest).reduce((n, v) => n + v, 0);
    };
    const shared: SharedFigures = {
      delivered: total("sluice_shared_delivered_total"),
      redelivered: total("sluice_shared_redelivered_total"),
      dropped: grown("sluice_shared_dropped_total"),
      peakBacklog: this.peakBacklog,
      peakMemberQueues: this.peakMemberQueues,
      peakBrokerRssMb,
      maxLoopDelayMs: this.loopDelayMs.map((ms) => Math.round(ms)),
      peakRedisMb: this.peakRedisBytes === null ? null : Math.round(this.peakRedisBytes / MB),
      ...(this.errors.size > 0 ? { sampleError: [...this.errors].join("; ") } : {}),
    };
    if (this.costFigures) this.onFinished(row, this.costFigures, shared);
  }

  private async sample(): Promise<void> {
    await Promise.all([this.sampleNodes(), this.sampleRedis()]);
  }

  private async sampleNodes(): Promise<void> {
    const ports = this.broker.httpPorts ?? [];
    await Promise.all(
      ports.map(async (port, node) => {
        let series: Map<string, number>;
        try {
          series = await readSharedSeries(port);
        } catch (error) {
          this.errors.add(`/metrics: ${(error as Error).message}`);
          return;
        }
        if (this.first[node] === undefined) this.first[node] = series;
        const latest = this.latest[node] ?? new Map<string, number>();
        this.latest[node] = latest;
        const lag = (series.get(`${LOOP_LAG_MAX}|`) ?? 0) * 1000;
        this.loopDelayMs[node] = Math.max(this.loopDelayMs[node] ?? 0, lag);
        let backlog = 0;
        for (const [key, value] of series) {
          latest.set(key, value);
          if (key.startsWith("sluice_shared_backlog|")) backlog += value;
        }
        this.peakBacklog = Math.max(this.peakBacklog ?? 0, backlog);
      }),
    );
  }

  private async sampleRedis(): Promise<void> {
    const redis = this.redis;
    const bench = this.broker.redis;
    if (!redis || !bench) return;
    try {
      if (redis.status === "wait") await redis.connect();
      const used = infoField(await bench.info("memory"), "used_memory");
      if (Number.isFinite(used)) this.peakRedisBytes = Math.max(this.peakRedisBytes ?? 0, used);
      const keys: string[] = [];
      let cursor = "0";
      do {
        const [next, batch] = await redis.scan(cursor, "MATCH", "*share:*:q:*", "COUNT", 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== "0");
      let queued = 0;
      if (keys.length > 0) {
        const pipeline = redis.pipeline();
        for (const key of keys) pipeline.xlen(key);
        for (const [error, length] of (await pipeline.exec()) ?? [])
          if (!error) queued += Number(length);
      }
      this.peakMemberQueues = Math.max(this.peakMemberQueues ?? 0, queued);
    } catch (error) {
      this.errors.add(`Redis: ${(error as Error).message}`);
    }
  }
}
