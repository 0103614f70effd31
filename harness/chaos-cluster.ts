import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { DelayRelay } from "./delay-relay.js";
import { FaultNetwork } from "./fault-network.js";
import { HaProxy } from "./haproxy.js";
import { RedisSentinels } from "./redis-sentinel.js";
import { RedisServer } from "./redis-server.js";
import { SluiceProcess } from "./sluice-process.js";

/** The ports a node listens on inside its own namespace (alone there: fixed ports are free). */
const MQTT_PORT = 1883;
const HTTP_PORT = 9100;

export interface ChaosNode {
  readonly name: string;
  readonly process: SluiceProcess;
  /** Its address on the fault network (loopback without one). */
  readonly host: string;
  /** Straight to the node, past the load balancer. */
  url: string;
  httpUrl: string;
  mqttPort: number;
  httpPort: number;
}

export interface ChaosClusterOptions {
  /** Node names (namespaces of their own); at least one. */
  nodes: readonly string[];
  /** Through a delay relay in the host, so latency can be added to every node's Redis link. */
  redisThroughRelay?: boolean;
  /** YAML lines appended under `redis:` (indented by the caller, e.g. "  heartbeatMs: 250"). */
  redisConfig?: string;
  /**
   * Redis as a Sentinel group (a primary, a replica, three Sentinels) and the nodes on loopback,
   * without a fault network: for a failover under load.
   */
  sentinels?: boolean;
}

/**
 * Redis and Sluice nodes, each in its own namespace of a fault network, behind a real HAProxy in
 * the host, for the chaos tests: faults go between members (`network.cut("node-a", "redis")`),
 * clients connect through `lb` or straight to a node. `stop()` ends it all, faults included.
 */
export class ChaosCluster {
  readonly nodes: ChaosNode[] = [];
  redis: RedisServer | undefined;
  sentinels: RedisSentinels | undefined;
  lb: HaProxy | undefined;
  relay: DelayRelay | undefined;
  /** The nodes' Redis key prefix (random per cluster). */
  readonly keyPrefix = `chaos${randomBytes(3).toString("hex")}:`;
  private dir: string | undefined;

  private constructor(private readonly faults: FaultNetwork | undefined) {}

  /** The fault network the members run in (not for a Sentinel cluster, on loopback). */
  get network(): FaultNetwork {
    if (!this.faults) throw new Error("this cluster runs on loopback, without a fault network");
    return this.faults;
  }

  static async start(options: ChaosClusterOptions): Promise<ChaosCluster> {
    const network = options.sentinels
      ? undefined
      : await FaultNetwork.create(["redis", ...options.nodes]);
    const cluster = new ChaosCluster(network);
    try {
      await cluster.open(options);
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  node(name: string): ChaosNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  /** Whether the node says it is ready (`/readyz` 200); false when it cannot be reached. */
  async ready(name: string): Promise<boolean> {
    try {
      const response = await fetch(`${this.node(name).httpUrl}/readyz`, {
        signal: AbortSignal.timeout(1_000),
      });
      return response.status === 200;
    } catch {
      return false;
    }
  }

  /** The node's /metrics text. */
  async metrics(name: string): Promise<string> {
    const response = await fetch(`${this.node(name).httpUrl}/metrics`, {
      signal: AbortSignal.timeout(5_000),
    });
    return response.text();
  }

  /**
   * Per client id, the connections the node believes it holds, from its log (`client.connected`
   * less `client.disconnected`): what a node that was cut off still thinks.
   */
  heldBy(name: string): Map<string, number> {
    const held = new Map<string, number>();
    for (const line of this.node(name).process.lines) {
      const id = typeof line.clientId === "string" ? line.clientId : undefined;
      if (id === undefined) continue;
      if (line.event === "client.connected") held.set(id, (held.get(id) ?? 0) + 1);
      if (line.event === "client.disconnected") held.set(id, (held.get(id) ?? 0) - 1);
    }
    for (const [id, count] of held) if (count <= 0) held.delete(id);
    return held;
  }

  /**
   * Per shared group (`<share name>/<filter>`), the entries Redis holds for it: its members'
   * queues (messages not yet acknowledged) and its backlog. Read from the current primary.
   */
  async sharedEntries(): Promise<Map<string, number>> {
    return this.withRedis(async (redis) => {
      const prefix = `${this.keyPrefix}share:`;
      const groups = await redis.hgetall(`${prefix}groups`);
      const entries = new Map<string, number>();
      for (const [id, name] of Object.entries(groups)) {
        const keys = [`${prefix}${id}:backlog`];
        let cursor = "0";
        do {
          const [next, found] = await redis.scan(cursor, "MATCH", `${prefix}${id}:q:*`);
          cursor = next;
          keys.push(...found);
        } while (cursor !== "0");
        const lengths = await Promise.all(keys.map((key) => redis.xlen(key)));
        entries.set(
          name,
          lengths.reduce((sum, n) => sum + n, 0),
        );
      }
      return entries;
    });
  }

  /** Whether the node's lease is gone from Redis (what the others wait for to count it dead). */
  async leaseGone(name: string): Promise<boolean> {
    return this.withRedis(
      async (redis) => (await redis.exists(`${this.keyPrefix}node:${name}`)) === 0,
    );
  }

  /** Runs `use` on a connection of the test's own to the current primary. */
  private async withRedis<T>(use: (redis: Redis) => Promise<T>): Promise<T> {
    const redis = this.sentinels
      ? new Redis({
          sentinels: this.sentinels.endpoints,
          name: this.sentinels.name,
          lazyConnect: true,
        })
      : new Redis({ host: this.redis?.host, port: this.redis?.port, lazyConnect: true });
    redis.on("error", () => {});
    try {
      await redis.connect();
      return await use(redis);
    } finally {
      redis.disconnect();
    }
  }

  /**
   * Kills the node outright (SIGKILL) and, once `whileDown` resolves, starts it again with its
   * config, in its namespace on its fixed ports (a fault network only: HAProxy knows it there).
   */
  async crash(name: string, whileDown: () => Promise<void>): Promise<void> {
    const faults = this.network;
    const index = this.nodes.findIndex((n) => n.name === name);
    const old = this.nodes[index];
    if (old === undefined) throw new Error(`no node ${name}`);
    old.process.kill("SIGKILL");
    await old.process.exited;
    await whileDown();
    const file = join(this.dir as string, `${name}.yaml`);
    const process = SluiceProcess.spawnIn(faults.namespace(name), ["start", "--config", file]);
    this.nodes[index] = { ...old, process };
    await process.ready();
  }

  /** Removes every fault in force. */
  async healAll(): Promise<void> {
    await this.faults?.healAll();
  }

  /** Stops clients' ends first (HAProxy), then the nodes, Redis, and the network. */
  async stop(): Promise<void> {
    await this.healAll().catch(() => {});
    await this.lb?.stop();
    for (const node of this.nodes) node.process.kill();
    await Promise.all(this.nodes.map((n) => n.process.exited));
    await this.relay?.stop();
    await this.redis?.kill();
    await this.sentinels?.stop();
    await this.faults?.destroy();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private async open(options: ChaosClusterOptions): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "sluice-chaos-"));
    const redisLines = await this.startRedis(options);
    const { keyPrefix } = this;
    const faults = this.faults;
    const started = options.nodes.map(async (name) => {
      const file = join(this.dir as string, `${name}.yaml`);
      const host = faults ? "0.0.0.0" : "127.0.0.1";
      await writeFile(
        file,
        [
          `nodeId: ${name}`,
          `listeners: [{ type: tcp, host: ${host}, port: ${faults ? MQTT_PORT : 0} }]`,
          `http: { host: ${host}, port: ${faults ? HTTP_PORT : 0} }`,
          "auth: { allowAnonymous: true }",
          "shutdown: { drainSeconds: 0 }",
          "log: { level: debug, format: json }",
          "redis:",
          ...redisLines,
          `  keyPrefix: "${keyPrefix}"`,
          ...(options.redisConfig ? [options.redisConfig] : []),
          "",
        ].join("\n"),
      );
      const args = ["start", "--config", file];
      const process = faults
        ? SluiceProcess.spawnIn(faults.namespace(name), args)
        : SluiceProcess.spawn(args);
      const address = faults ? faults.address(name) : "127.0.0.1";
      const node = { name, process, host: address, url: "", httpUrl: "", mqttPort: 0, httpPort: 0 };
      this.nodes.push(node);
      const { ports, httpPort } = await process.ready();
      node.mqttPort = faults ? MQTT_PORT : Number(ports.tcp);
      node.httpPort = faults ? HTTP_PORT : httpPort;
      node.url = `mqtt://${address}:${node.mqttPort}`;
      node.httpUrl = `http://${address}:${node.httpPort}`;
    });
    await Promise.all(started);
    this.nodes.sort((a, b) => options.nodes.indexOf(a.name) - options.nodes.indexOf(b.name));
    this.lb = await HaProxy.start(
      this.nodes.map((n) => ({
        name: n.name,
        host: n.host,
        mqttPort: n.mqttPort,
        httpPort: n.httpPort,
      })),
    );
  }

  /** Starts Redis (in the network, or as a Sentinel group) and returns the nodes' YAML for it. */
  private async startRedis(options: ChaosClusterOptions): Promise<string[]> {
    const network = this.faults;
    if (!network) {
      // Two replicas: the one left after a failover confirms writes (redis.replicaAcks).
      const sentinels = await RedisSentinels.start(undefined, { replicas: 2 });
      this.sentinels = sentinels;
      const endpoints = sentinels.endpoints.map((e) => `{ host: ${e.host}, port: ${e.port} }`);
      return [`  sentinels: [${endpoints.join(", ")}]`, `  name: ${sentinels.name}`];
    }
    const redis = await RedisServer.start({
      netns: { namespace: network.namespace("redis"), host: network.address("redis") },
    });
    this.redis = redis;
    if (!options.redisThroughRelay) return [`  url: "${redis.url}"`];
    this.relay = await DelayRelay.start(network.hostAddress, {
      host: redis.host,
      port: redis.port,
    });
    return [`  url: "redis://${this.relay.host}:${this.relay.port}"`];
  }
}
