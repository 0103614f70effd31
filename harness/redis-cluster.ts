import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./free-port.js";
import { RedisServer } from "./redis-server.js";

const run = promisify(execFile);

/**
 * A real Redis Cluster for a test: three primaries on random loopback ports (data and cluster
 * bus ports both chosen free, never the standard ones), slots assigned with
 * `redis-cli --cluster create`, without persistence. Resolves once every node reports
 * `cluster_state:ok`.
 */
export class RedisCluster {
  private constructor(
    /** The primaries, to ask each for its own view (INFO, PUBSUB, CLIENT). */
    readonly servers: RedisServer[],
    private readonly dir: string,
  ) {}

  get ports(): number[] {
    return this.servers.map((server) => server.port);
  }

  /** The seed nodes, as Sluice's `redis.cluster` takes them. */
  get nodes(): Array<{ host: string; port: number }> {
    return this.ports.map((port) => ({ host: "127.0.0.1", port }));
  }

  static async start(primaries = 3): Promise<RedisCluster> {
    const dir = await mkdtemp(join(tmpdir(), "sluice-redis-cluster-"));
    const servers: RedisServer[] = [];
    const cluster = new RedisCluster(servers, dir);
    try {
      for (let i = 0; i < primaries; i++) {
        servers.push(await RedisServer.start({ cluster: { busPort: await freePort(), dir } }));
      }
      await run("redis-cli", [
        "--cluster",
        "create",
        ...cluster.ports.map((port) => `127.0.0.1:${port}`),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
      ]);
      for (const port of cluster.ports) await waitForClusterOk(port);
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /**
   * Resolves once every node reports `cluster_state:ok` again, e.g. after a primary restarted:
   * a primary that rejoins refuses commands (CLUSTERDOWN) for a while first.
   */
  async waitUntilOk(): Promise<void> {
    for (const port of this.ports) await waitForClusterOk(port);
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.map((server) => server.kill()));
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Slot assignment spreads over the cluster bus: each node says when it sees the whole cluster. */
async function waitForClusterOk(port: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { stdout } = await run("redis-cli", ["-p", String(port), "cluster", "info"]);
    if (stdout.includes("cluster_state:ok")) return;
    if (Date.now() > deadline) throw new Error(`redis cluster node ${port} not ok: ${stdout}`);
    // No event to wait on here: the bus gossip converges within a few of its 100 ms ticks.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
