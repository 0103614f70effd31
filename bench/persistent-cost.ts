/**
 * QoS 1 to persistent-session subscribers over Redis (issue 5's PLC case): one QoS 1 publisher,
 * SUBSCRIBERS clean-session-false QoS 1 subscribers of its topic, each message delivered to all
 * of them. Brokers run as their own processes (the clients stay in this one); each is measured
 * in turn against one Redis, in the same run:
 *
 * - `sluice`: a Sluice node (`sluice start`, default limits) with Redis;
 * - `aedes+sluice-redis`: bare patched aedes with Sluice's Redis persistence
 *   (src/engine/redis-persistence.ts), so that the gap to `sluice` is the cost of Sluice's own
 *   layers;
 * - `aedes-stock+stock-redis`: unpatched aedes 1.2.0 with the published aedes-persistence-redis
 *   11.2.2 loaded from --stock-persistence (its entry point, e.g.
 *   node_modules/aedes-persistence-redis-legacy/persistence.js).
 *
 *   npm run build && node dist/bench/persistent-cost.js [--messages N] [--subscribers N]
 *     [--stock-persistence node_modules/aedes-persistence-redis-legacy/persistence.js] [--only NAME] [--cpu-prof DIR]
 *     [--baseline-cli OTHER_BUILD/dist/src/cli.js]
 *
 * --baseline-cli adds `sluice-baseline`: another Sluice build (e.g. the previous commit's, with
 * its own node_modules), for a before/after in one run. *
 * Reports deliveries/s (median of the rounds), the broker's CPU (percent of one core) and what
 * Redis executed per delivery (INFO commandstats: commands, scripts run). Compare ratios from
 * one run: the machine is shared.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { stringify } from "yaml";
import { connect, end, type MqttClient, subscribe } from "../harness/mqtt-client.js";
import { RedisServer } from "../harness/redis-server.js";
import { SluiceProcess } from "../harness/sluice-process.js";
import { startNode as startBareAedes } from "./src/brokers/bare-aedes.js";
import { CleanupRegistry } from "./src/lifecycle/cleanup-registry.js";
import { medianOf } from "./src/report/median.js";
import { cpuSeconds } from "./src/system/process-cpu.js";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "2000" },
    subscribers: { type: "string", default: "20" },
    rounds: { type: "string", default: "3" },
    "stock-persistence": { type: "string" },
    "baseline-cli": { type: "string" },
    only: { type: "string" },
    "cpu-prof": { type: "string" },
  },
});
const MESSAGES = Number(values.messages);
const SUBSCRIBERS = Number(values.subscribers);
const ROUNDS = Number(values.rounds);
/** Messages published and not yet delivered to every subscriber, at most. */
const WINDOW = 100;

interface Broker {
  url: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

interface Setup {
  name: string;
  start(redisUrl: string, keyPrefix: string): Promise<Broker>;
}

const cleanup = new CleanupRegistry();
let redisPid: number | undefined;
const execArgv = values["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", values["cpu-prof"]] : [];

async function startSluice(redisUrl: string, keyPrefix: string, cli?: string): Promise<Broker> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-persistent-"));
  const file = join(dir, "node.yaml");
  await writeFile(
    file,
    stringify({
      nodeId: `bench-${keyPrefix.slice(0, -1)}`,
      listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
      http: { host: "127.0.0.1", port: 0 },
      log: { level: "info", format: "json" },
      auth: { allowAnonymous: true },
      shutdown: { drainSeconds: 0 },
      redis: { url: redisUrl, keyPrefix },
    }),
  );
  const node = SluiceProcess.spawn(
    ["start", "--config", file],
    { SLUICE_LOG_LEVEL: "info" },
    execArgv,
    cli,
  );
  const stop = cleanup.add("sluice", async () => {
    node.kill("SIGTERM");
    const timer = setTimeout(() => node.kill("SIGKILL"), 5_000);
    await node.exited;
    clearTimeout(timer);
    await rm(dir, { recursive: true, force: true });
  });
  const { ports } = await node.ready();
  return { url: `mqtt://127.0.0.1:${ports.tcp}`, pid: node.child.pid, stop };
}

const setups: Setup[] = [
  { name: "sluice", start: startSluice },
  {
    name: "aedes+sluice-redis",
    start: async (redisUrl) => {
      const node = await startBareAedes(cleanup, "patched", { redisUrl, execArgv });
      return { url: node.url, pid: node.process?.pid, stop: node.stop };
    },
  },
];
const baselineCli = values["baseline-cli"];
if (baselineCli)
  setups.unshift({
    name: "sluice-baseline",
    start: (redisUrl, keyPrefix) => startSluice(redisUrl, keyPrefix, baselineCli),
  });
const stockPersistence = values["stock-persistence"];
if (stockPersistence)
  setups.push({
    name: "aedes-stock+stock-redis",
    start: async (redisUrl) => {
      const node = await startBareAedes(cleanup, "stock", {
        redisUrl,
        persistenceModule: stockPersistence,
        execArgv,
      });
      return { url: node.url, pid: node.process?.pid, stop: node.stop };
    },
  });

/** Publishes MESSAGES and resolves with deliveries/s once every subscriber has them all. */
async function publishAll(
  publisher: MqttClient,
  subscribers: MqttClient[],
  messages: number,
): Promise<number> {
  const total = messages * subscribers.length;
  let delivered = 0;
  let wake: (() => void) | undefined;
  const kick = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const done = new Promise<void>((resolve) => {
    for (const s of subscribers)
      s.on("message", () => {
        if (++delivered === total) resolve();
        kick();
      });
  });
  const payload = Buffer.alloc(64, 120);
  const started = performance.now();
  let inFlight = 0;
  for (let i = 0; i < messages; i++) {
    while (inFlight >= WINDOW || i - delivered / subscribers.length >= WINDOW) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    inFlight++;
    publisher.publish("bench/plc", payload, { qos: 1 }, () => {
      inFlight--;
      kick();
    });
  }
  await done;
  for (const s of subscribers) s.removeAllListeners("message");
  return total / ((performance.now() - started) / 1000);
}

interface Sample {
  rate: number;
  cpu: number;
  /** This process's (the clients'), percent of one core. */
  clientCpu: number;
  redisCpu: number;
  commands: Map<string, number>;
}

async function commandStats(redis: Redis): Promise<Map<string, number>> {
  const stats = new Map<string, number>();
  for (const line of (await redis.info("commandstats")).split("\n")) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (match?.[1]) stats.set(match[1], Number(match[2]));
  }
  return stats;
}

async function measure(setup: Setup, redisUrl: string, admin: Redis): Promise<Sample> {
  // bare aedes has no key prefix: the previous round's sessions would still be subscribed
  await admin.flushall();
  const keyPrefix = `b${Math.random().toString(36).slice(2, 8)}:`;
  const broker = await setup.start(redisUrl, keyPrefix);
  const subscribers: MqttClient[] = [];
  let publisher: MqttClient | undefined;
  try {
    for (let i = 0; i < SUBSCRIBERS; i++) {
      const s = await connect(broker.url, { clientId: `${keyPrefix}plc-${i}`, clean: false });
      await subscribe(s, "bench/plc", 1);
      subscribers.push(s);
    }
    publisher = await connect(broker.url, { clientId: `${keyPrefix}pub` });
    await publishAll(publisher, subscribers, Math.min(200, MESSAGES)); // warm-up
    await admin.config("RESETSTAT");
    const cpuBefore = broker.pid ? cpuSeconds(broker.pid) : undefined;
    const clientBefore = process.cpuUsage();
    const redisBefore = redisPid ? cpuSeconds(redisPid) : undefined;
    const wallBefore = performance.now();
    const rate = await publishAll(publisher, subscribers, MESSAGES);
    const wall = (performance.now() - wallBefore) / 1000;
    const cpuAfter = broker.pid ? cpuSeconds(broker.pid) : undefined;
    const client = process.cpuUsage(clientBefore);
    const redisAfter = redisPid ? cpuSeconds(redisPid) : undefined;
    const redisCpu =
      redisBefore !== undefined && redisAfter !== undefined
        ? (100 * (redisAfter - redisBefore)) / wall
        : NaN;
    const clientCpu = (client.user + client.system) / 10_000 / wall;
    const commands = await commandStats(admin);
    const cpu =
      cpuBefore !== undefined && cpuAfter !== undefined
        ? (100 * (cpuAfter - cpuBefore)) / wall
        : NaN;
    return { rate, cpu, clientCpu, redisCpu, commands };
  } finally {
    await end(...subscribers, ...(publisher ? [publisher] : []));
    await broker.stop();
  }
}

async function main(): Promise<void> {
  const redisServer = await RedisServer.start();
  const admin = new Redis(redisServer.url);
  redisPid = Number(/process_id:(\d+)/.exec(await admin.info("server"))?.[1]) || undefined;
  const results = new Map<string, number>();
  try {
    for (const setup of setups) {
      if (values.only && setup.name !== values.only) continue;
      const samples: Sample[] = [];
      for (let round = 0; round < ROUNDS; round++)
        samples.push(await measure(setup, redisServer.url, admin));
      const rate = medianOf(samples.map((s) => s.rate));
      results.set(setup.name, rate);
      const last = samples[samples.length - 1];
      const deliveries = MESSAGES * SUBSCRIBERS;
      const perDelivery = [...(last?.commands ?? [])]
        .filter(([, calls]) => calls / deliveries >= 0.01)
        .sort((a, b) => b[1] - a[1])
        .map(([name, calls]) => `${name} ${(calls / deliveries).toFixed(2)}`)
        .join(", ");
      console.log(
        `${setup.name.padEnd(24)} ${rate.toFixed(0).padStart(6)} deliveries/s ` +
          `(rounds: ${samples.map((s) => s.rate.toFixed(0)).join(", ")}), broker CPU ` +
          `${medianOf(samples.map((s) => s.cpu)).toFixed(0)}%, clients ${medianOf(samples.map((s) => s.clientCpu)).toFixed(0)}%, Redis ${medianOf(samples.map((s) => s.redisCpu)).toFixed(0)}%\n${" ".repeat(25)}Redis per delivery: ${perDelivery}`,
      );
    }
    const stock = results.get("aedes-stock+stock-redis");
    const sluice = results.get("sluice");
    if (stock && sluice) console.log(`sluice / stock: ${(sluice / stock).toFixed(2)}x`);
  } finally {
    admin.disconnect();
    await cleanup.stopAll();
    await redisServer.stop();
  }
}

await main();
