import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as pause } from "node:timers/promises";
import { Redis } from "ioredis";
import { connect, end, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { RedisSentinels } from "../../harness/redis-sentinel.js";
import { SluiceProcess } from "../../harness/sluice-process.js";

/**
 * The cost of `redis.replicaAcks` (issue 17): one node process over a Sentinel group (a
 * primary, one replica), QoS 1 publishers at a fixed rate and one subscriber, with replica
 * confirmations off (replicas 0) and on (replicas 1), in alternating rounds of the same
 * sitting. Per round: the node's CPU per message (utime + stime from /proc) and the PUBACK
 * latency (publish to PUBACK, what the WAIT adds to), p50 and p99.
 *
 *   node dist/bench/src/replica-acks-cost.js [rounds=3] [publishers=4] [rate per publisher=500] [seconds=5]
 */
const [rounds = 3, publishers = 4, rate = 500, seconds = 5] = process.argv
  .slice(2)
  .map((a) => Number(a));
const TICKS_PER_SECOND = 100;
const WARMUP = 200;

interface Round {
  replicas: number;
  messages: number;
  cpuUsPerMessage: number;
  redisCpuUsPerMessage: number;
  waitsPerMessage: number;
  ackP50Ms: number;
  ackP99Ms: number;
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Publishes `count` QoS 1 messages at `perSecond`, resolving with each one's PUBACK latency. */
async function publishAt(
  client: MqttClient,
  topic: string,
  count: number,
  perSecond: number,
): Promise<number[]> {
  const latencies: Promise<number>[] = [];
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const due = start + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 1) await pause(wait);
    const sent = performance.now();
    latencies.push(
      client.publishAsync(topic, `m${i}`, { qos: 1 }).then(() => performance.now() - sent),
    );
  }
  return Promise.all(latencies);
}

/** The primary's pid and WAITs run so far, from INFO. */
async function primaryStats(redis: Redis): Promise<{ pid: number; waits: number }> {
  const info = await redis.info();
  return {
    pid: Number(/^process_id:(\d+)/m.exec(info)?.[1]),
    waits: Number(/^cmdstat_wait:calls=(\d+)/m.exec(await redis.info("commandstats"))?.[1] ?? 0),
  };
}

async function measure(
  group: RedisSentinels,
  primary: Redis,
  dir: string,
  replicas: number,
): Promise<Round> {
  const file = join(dir, `node-${replicas}.yaml`);
  const sentinels = group.endpoints.map((e) => `{ host: ${e.host}, port: ${e.port} }`).join(", ");
  await writeFile(
    file,
    `nodeId: cost-${replicas}\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n` +
      "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: info, format: json }\n" +
      `redis: { sentinels: [${sentinels}], name: ${group.name}, keyPrefix: "cost${randomBytes(3).toString("hex")}:", replicaAcks: { replicas: ${replicas} } }\n`,
  );
  const node = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
  try {
    const { ports } = await node.ready();
    const url = `mqtt://127.0.0.1:${ports.tcp}`;
    const topic = `cost/${replicas}`;
    const subscriber = await connect(url, { clientId: `cost-sub-${replicas}` });
    await subscribe(subscriber, `${topic}/#`, 1);
    const clients = await Promise.all(
      Array.from({ length: publishers }, (_, i) => connect(url, { clientId: `cost-pub-${i}` })),
    );
    try {
      await Promise.all(clients.map((c, i) => publishAt(c, `${topic}/${i}`, WARMUP, rate)));
      const pid = node.child.pid as number;
      const before = cpuTicks(pid);
      const redisBefore = await primaryStats(primary);
      const redisTicksBefore = cpuTicks(redisBefore.pid);
      const count = rate * seconds;
      const latencies = (
        await Promise.all(clients.map((c, i) => publishAt(c, `${topic}/${i}`, count, rate)))
      ).flat();
      const ticks = cpuTicks(pid) - before;
      const redisTicks = cpuTicks(redisBefore.pid) - redisTicksBefore;
      const redisAfter = await primaryStats(primary);
      latencies.sort((a, b) => a - b);
      return {
        replicas,
        messages: latencies.length,
        cpuUsPerMessage: (ticks * 1e6) / TICKS_PER_SECOND / latencies.length,
        redisCpuUsPerMessage: (redisTicks * 1e6) / TICKS_PER_SECOND / latencies.length,
        waitsPerMessage: (redisAfter.waits - redisBefore.waits) / latencies.length,
        ackP50Ms: percentile(latencies, 50),
        ackP99Ms: percentile(latencies, 99),
      };
    } finally {
      await end(subscriber, ...clients);
    }
  } finally {
    node.kill("SIGTERM");
    await node.exited;
  }
}

async function main(): Promise<void> {
  const group = await RedisSentinels.start(`sluice-cost-${randomBytes(3).toString("hex")}`);
  const dir = await mkdtemp(join(tmpdir(), "sluice-replica-cost-"));
  const primary = new Redis({ host: "127.0.0.1", port: group.primaryPort, lazyConnect: true });
  try {
    await primary.connect();
    const results: Round[] = [];
    for (let round = 0; round < rounds; round++) {
      // Alternating which goes first, so a drift in the machine's load hits both alike.
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const replicas of order) {
        const result = await measure(group, primary, dir, replicas);
        results.push(result);
        console.log(JSON.stringify(result));
      }
    }
    for (const replicas of [0, 1]) {
      const mine = results.filter((r) => r.replicas === replicas);
      const median = (values: number[]): number =>
        [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
      console.log(
        `replicas ${replicas}: CPU ${median(mine.map((r) => r.cpuUsPerMessage)).toFixed(1)} µs/msg, ` +
          `Redis CPU ${median(mine.map((r) => r.redisCpuUsPerMessage)).toFixed(1)} µs/msg, ` +
          `WAITs/msg ${median(mine.map((r) => r.waitsPerMessage)).toFixed(2)}, ` +
          `PUBACK p50 ${median(mine.map((r) => r.ackP50Ms)).toFixed(2)} ms, ` +
          `p99 ${median(mine.map((r) => r.ackP99Ms)).toFixed(2)} ms (median of ${mine.length} rounds)`,
      );
    }
  } finally {
    primary.disconnect();
    await rm(dir, { recursive: true, force: true });
    await group.stop();
  }
}

await main();
