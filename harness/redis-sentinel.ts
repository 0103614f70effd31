import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DelayRelay } from "./delay-relay.js";
import { RedisServer } from "./redis-server.js";

/**
 * Sentinel timings low enough for a failover in a few seconds on loopback. At 1 s a loaded
 * 2-core machine made the Sentinels fail the promoted replica over again (its pings unanswered
 * for a second): a second failover, which chaos-failover-twice.test.ts tests on purpose.
 */
const DOWN_AFTER_MS = 2_000;
const FAILOVER_TIMEOUT_MS = 5_000;
/**
 * With a relayed replica: Sentinel repoints a replica that follows another address than the
 * primary's ("+fix-slave-config") once this has passed, which would bypass the relay.
 */
const RELAYED_FAILOVER_TIMEOUT_MS = 120_000;
const SENTINELS = 3;
const QUORUM = 2;

export interface SentinelGroupOptions {
  /**
   * Replicas of the primary, all at the same priority (1 unless set): with 2, a failover
   * leaves one to confirm writes (`redis.replicaAcks`); Sentinel promotes the one furthest
   * ahead, so `replicaPort` is then not always the one promoted.
   */
  replicas?: number;
  /**
   * The first replica replicates through a DelayRelay (`replication`): a test can hold back
   * what the primary sends it, and drop what is held by stopping the relay.
   */
  relayed?: boolean;
}

/**
 * A Sentinel-managed Redis for a failover test: one primary, one replica and three Sentinels,
 * each a redis-server on a random loopback port, the Sentinels' config files in a temporary
 * folder. `start()` resolves once every Sentinel knows the replica and the other Sentinels, so
 * a failover can be voted as soon as the primary dies.
 */
export class RedisSentinels {
  private primary: RedisServer | undefined;
  private replica: RedisServer | undefined;
  private readonly others: RedisServer[] = [];
  private readonly sentinels: RedisServer[] = [];
  private dir: string | undefined;
  /** With `relayed`: the relay between the primary and the first replica. */
  replication: DelayRelay | undefined;

  private constructor(
    readonly name: string,
    private readonly options: SentinelGroupOptions,
  ) {}

  /** Starts the primary, its replicas and the Sentinels; stops what started if one fails. */
  static async start(
    name = "sluice-test",
    options: SentinelGroupOptions = {},
  ): Promise<RedisSentinels> {
    const group = new RedisSentinels(name, options);
    try {
      await group.open();
      return group;
    } catch (error) {
      await group.stop();
      throw error;
    }
  }

  /** The Sentinels' addresses, as a client is configured with them. */
  get endpoints(): Array<{ host: string; port: number }> {
    return this.sentinels.map((s) => ({ host: "127.0.0.1", port: s.port }));
  }

  /** The port of the primary at start. */
  get primaryPort(): number {
    return this.server(this.primary).port;
  }

  /** The port of the (first) replica at start, the one a failover promotes if it is alone. */
  get replicaPort(): number {
    return this.server(this.replica).port;
  }

  /** The ports of every replica at start. */
  get replicaPorts(): number[] {
    return [this.replicaPort, ...this.others.map((r) => r.port)];
  }

  /** Crashes the primary (SIGKILL): it stays down. */
  async killPrimary(): Promise<void> {
    await this.server(this.primary).kill();
  }

  /**
   * Resolves with the new primary's port once a Sentinel has announced the switch
   * (`+switch-master`, logged first by the leader when the promoted replica reports its role);
   * `count`: the switches since the start to wait for.
   */
  async waitForSwitch(timeoutMs: number, count = 1): Promise<number> {
    return Promise.any(this.sentinels.map((s) => switchedTo(s, timeoutMs, count))).catch(
      (error: AggregateError) => {
        throw new Error(`no failover in ${timeoutMs} ms`, { cause: error.errors[0] });
      },
    );
  }

  /** Resolves with the new primary's port as each Sentinel announced it, once all have. */
  waitForEverySwitch(timeoutMs: number): Promise<number[]> {
    return Promise.all(this.sentinels.map((s) => switchedTo(s, timeoutMs)));
  }

  /**
   * Starts one more replica, of the primary on `primaryPort` (after a failover: the promoted
   * one, which has none of its own), and resolves once its first sync is done. Stopped with
   * the group.
   */
  async addReplica(primaryPort: number): Promise<void> {
    const dir = this.dir;
    if (dir === undefined) throw new Error("the Sentinel group is not started");
    const replica = await RedisServer.start({ replicaOf: { port: primaryPort, dir } });
    this.others.push(replica);
    await replica.waitForOutput(/MASTER <-> REPLICA sync: Finished with success/);
  }

  /** Asks a Sentinel to hand the primary role to the replica, the primary staying up. */
  async switchover(): Promise<string> {
    const first = this.sentinels[0];
    if (!first) throw new Error("the Sentinel group is not started");
    return first.command("SENTINEL", "FAILOVER", this.name);
  }

  /**
   * Resolves once a Sentinel has turned the old primary, back or still up, into a replica
   * (`+convert-to-slave`: Sentinel waits some 8 s after a switch, then drops its clients).
   */
  async waitForDemotion(timeoutMs: number): Promise<void> {
    await Promise.any(
      this.sentinels.map((s) => s.waitForOutput(/\+convert-to-slave /, { timeoutMs })),
    ).catch((error: AggregateError) => {
      throw new Error(`old primary not demoted in ${timeoutMs} ms`, { cause: error.errors[0] });
    });
  }

  /**
   * The client connections on the primary or the replica of the start, as CLIENT LIST lines:
   * not the Sentinels' (named sentinel-*), not replication links, not this query's own.
   */
  async clientsOn(server: "primary" | "replica"): Promise<string[]> {
    const clients = await this.server(
      server === "primary" ? this.primary : this.replica,
    ).otherClients();
    return clients.filter((line) => !/ name=sentinel-| flags=S /.test(line));
  }

  /** Per Sentinel, the connections subscribed to its events (pub/sub clients without a name). */
  async sentinelSubscribers(): Promise<number[]> {
    return Promise.all(
      this.sentinels.map(async (s) => {
        const reply = await s.reply("CLIENT", "LIST");
        return reply
          .join("\n")
          .split("\n")
          .filter((line) => / name= .* flags=P /.test(line)).length;
      }),
    );
  }

  /** The primary's port as each Sentinel reports it now (SENTINEL get-master-addr-by-name). */
  async reportedPrimaryPorts(): Promise<number[]> {
    return Promise.all(
      this.sentinels.map(async (s) => {
        // ["*2", "$9", "127.0.0.1", "$5", "<port>"]
        const reply = await s.reply("SENTINEL", "get-master-addr-by-name", this.name);
        return Number(reply[4]);
      }),
    );
  }

  /** Stops every process that started and removes the config folder; safe to call twice. */
  async stop(): Promise<void> {
    await this.replication?.stop();
    await Promise.all(
      [...this.sentinels, ...this.others, this.replica, this.primary].map((server) =>
        server?.kill(),
      ),
    );
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private async open(): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), "sluice-sentinel-"));
    this.dir = dir;
    this.primary = await RedisServer.start();
    const { replicas = 1, relayed = false } = this.options;
    if (relayed) {
      this.replication = await DelayRelay.start("127.0.0.1", {
        host: "127.0.0.1",
        port: this.primary.port,
      });
    }
    const first = this.replication?.port ?? this.primary.port;
    this.replica = await RedisServer.start({ replicaOf: { port: first, dir } });
    for (let i = 1; i < replicas; i++) {
      this.others.push(await RedisServer.start({ replicaOf: { port: this.primary.port, dir } }));
    }
    const failoverTimeout = relayed ? RELAYED_FAILOVER_TIMEOUT_MS : FAILOVER_TIMEOUT_MS;
    for (let i = 0; i < SENTINELS; i++) {
      const file = join(dir, `sentinel-${i}.conf`);
      await writeFile(
        file,
        [
          `dir "${dir}"`,
          `sentinel monitor ${this.name} 127.0.0.1 ${this.primary.port} ${QUORUM}`,
          `sentinel down-after-milliseconds ${this.name} ${DOWN_AFTER_MS}`,
          `sentinel failover-timeout ${this.name} ${failoverTimeout}`,
          `sentinel parallel-syncs ${this.name} 1`,
          "",
        ].join("\n"),
      );
      this.sentinels.push(await RedisServer.start({ sentinelConfig: file }));
    }
    // A Sentinel finds the replica in the primary's INFO at once, and the other Sentinels from
    // their hello messages (every 2 s) on the primary's __sentinel__:hello channel.
    await Promise.all(
      this.sentinels.flatMap((s) => [
        s.waitForOutput(/\+slave slave /, { count: replicas }),
        s.waitForOutput(/\+sentinel sentinel /, { count: SENTINELS - 1 }),
      ]),
    );
  }

  private server(server: RedisServer | undefined): RedisServer {
    if (!server) throw new Error("the Sentinel group is not started");
    return server;
  }
}

/** The port in a Sentinel's "+switch-master <name> <old ip> <old port> <new ip> <new port>". */
async function switchedTo(sentinel: RedisServer, timeoutMs: number, count = 1): Promise<number> {
  const lines = await sentinel.waitForOutput(/\+switch-master /, { timeoutMs, count });
  return Number(lines.at(-1)?.trim().split(" ").at(-1));
}
