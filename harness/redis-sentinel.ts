import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RedisServer } from "./redis-server.js";

/** Sentinel timings low enough for a failover in a few seconds on loopback. */
const DOWN_AFTER_MS = 1_000;
const FAILOVER_TIMEOUT_MS = 5_000;
const SENTINELS = 3;
const QUORUM = 2;

/**
 * A Sentinel-managed Redis for a failover test: one primary, one replica and three Sentinels,
 * each a redis-server on a random loopback port, the Sentinels' config files in a temporary
 * folder. `start()` resolves once every Sentinel knows the replica and the other Sentinels, so
 * a failover can be voted as soon as the primary dies.
 */
export class RedisSentinels {
  private primary: RedisServer | undefined;
  private replica: RedisServer | undefined;
  private readonly sentinels: RedisServer[] = [];
  private dir: string | undefined;

  private constructor(readonly name: string) {}

  /** Starts the primary, its replica and the Sentinels; stops what started if one fails. */
  static async start(name = "sluice-test"): Promise<RedisSentinels> {
    const group = new RedisSentinels(name);
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

  /** The port of the replica at start, the one a failover promotes. */
  get replicaPort(): number {
    return this.server(this.replica).port;
  }

  /** Crashes the primary (SIGKILL): it stays down. */
  async killPrimary(): Promise<void> {
    await this.server(this.primary).kill();
  }

  /**
   * Resolves with the new primary's port once a Sentinel has announced the switch
   * (`+switch-master`, logged first by the leader when the promoted replica reports its role).
   */
  async waitForSwitch(timeoutMs: number): Promise<number> {
    return Promise.any(this.sentinels.map((s) => switchedTo(s, timeoutMs))).catch(
      (error: AggregateError) => {
        throw new Error(`no failover in ${timeoutMs} ms`, { cause: error.errors[0] });
      },
    );
  }

  /** Resolves with the new primary's port as each Sentinel announced it, once all have. */
  waitForEverySwitch(timeoutMs: number): Promise<number[]> {
    return Promise.all(this.sentinels.map((s) => switchedTo(s, timeoutMs)));
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
    await Promise.all(
      [...this.sentinels, this.replica, this.primary].map((server) => server?.kill()),
    );
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private async open(): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), "sluice-sentinel-"));
    this.dir = dir;
    this.primary = await RedisServer.start();
    this.replica = await RedisServer.start({ replicaOf: { port: this.primary.port, dir } });
    for (let i = 0; i < SENTINELS; i++) {
      const file = join(dir, `sentinel-${i}.conf`);
      await writeFile(
        file,
        [
          `dir "${dir}"`,
          `sentinel monitor ${this.name} 127.0.0.1 ${this.primary.port} ${QUORUM}`,
          `sentinel down-after-milliseconds ${this.name} ${DOWN_AFTER_MS}`,
          `sentinel failover-timeout ${this.name} ${FAILOVER_TIMEOUT_MS}`,
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
        s.waitForOutput(/\+slave slave /),
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
async function switchedTo(sentinel: RedisServer, timeoutMs: number): Promise<number> {
  const [line] = await sentinel.waitForOutput(/\+switch-master /, { timeoutMs });
  return Number(line?.trim().split(" ").at(-1));
}
