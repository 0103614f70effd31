/**
 * What publish limits cost a client that stays under them: messages/s of one publisher through
 * an in-process node without `limits.publish`, and with limits so high they are never reached;
 * alone and over Redis, where it also counts the Redis calls the limits made per message.
 *
 *   npm run build && node dist/bench/publish-limit-cost.js [messages]
 *
 * Clients and node share one process (and this machine's cores): compare the columns, not the
 * absolute figures.
 */
import { performance } from "node:perf_hooks";
import { Redis } from "ioredis";
import { startNode } from "../harness/in-process-node.js";
import { connect, end, type MqttClient, subscribe } from "../harness/mqtt-client.js";
import { RedisServer } from "../harness/redis-server.js";
import { medianOf } from "./src/report/median.js";

const MESSAGES = Number(process.argv[2] ?? 40_000);
const ROUNDS = 6;
/**
 * Above anything one publisher reaches here (~20k msg/s, 1.5 MB/s), but low enough that the
 * cluster shares are reserved in realistic chunks: 5,000 messages and 5 MB per Redis call.
 */
const HIGH = { messagesPerSecond: 50_000, bytesPerSecond: 50_000_000 };

async function publishAll(publisher: MqttClient, subscriber: MqttClient, qos: 0 | 1) {
  let received = 0;
  const done = new Promise<void>((resolve) => {
    subscriber.on("message", () => {
      if (++received === MESSAGES) resolve();
    });
  });
  const payload = Buffer.alloc(64, 120);
  const started = performance.now();
  let inFlight = 0;
  let wake: (() => void) | undefined;
  for (let i = 0; i < MESSAGES; i++) {
    if (qos === 1 && inFlight >= 1000) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    inFlight++;
    publisher.publish("bench/t", payload, { qos }, () => {
      inFlight--;
      const w = wake;
      wake = undefined;
      w?.();
    });
    if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  return MESSAGES / ((performance.now() - started) / 1000);
}

async function run(raw: Record<string, unknown>, qos: 0 | 1): Promise<number> {
  const node = await startNode(raw);
  const subscriber = await connect(node.urls.tcp as string);
  const publisher = await connect(node.urls.tcp as string);
  try {
    await subscribe(subscriber, "bench/#", qos);
    return await publishAll(publisher, subscriber, qos);
  } finally {
    await end(subscriber, publisher);
    await node.stop();
  }
}

/** Counts the rate limiter's script calls on publish keys, as Redis sees them (MONITOR). */
async function countLimiterCalls(url: string): Promise<{ calls(): number; stop(): void }> {
  const client = new Redis(url);
  const monitor = await client.monitor();
  let calls = 0;
  monitor.on("monitor", (_time: string, args: string[]) => {
    const command = args[0]?.toLowerCase();
    if ((command === "eval" || command === "evalsha") && args.some((a) => a.includes("publish-")))
      calls++;
  });
  return {
    calls: () => calls,
    stop: () => {
      monitor.disconnect();
      client.disconnect();
    },
  };
}

async function main(): Promise<void> {
  const redisServer = await RedisServer.start();
  const probe = await countLimiterCalls(redisServer.url);
  try {
    const setups: Array<{ name: string; raw: (limits: boolean) => Record<string, unknown> }> = [
      {
        name: "in memory",
        raw: (limits) => (limits ? { limits: { publish: HIGH } } : {}),
      },
      {
        name: "Redis",
        raw: (limits) => ({
          redis: {
            url: redisServer.url,
            keyPrefix: `bench${Math.random().toString(36).slice(2)}:`,
          },
          ...(limits ? { limits: { publish: HIGH } } : {}),
        }),
      },
    ];
    for (const setup of setups) {
      for (const qos of [0, 1] as const) {
        const without: number[] = [];
        const withLimits: number[] = [];
        let calls = 0;
        for (let round = 0; round < ROUNDS; round++) {
          // Alternating which goes first, so that warm-up and neighbours' load fall on both.
          for (const limited of round % 2 === 0 ? [false, true] : [true, false]) {
            const before = probe.calls();
            const rate = await run(setup.raw(limited), qos);
            if (limited) {
              withLimits.push(rate);
              calls += probe.calls() - before;
            } else without.push(rate);
          }
        }
        const a = medianOf(without);
        const b = medianOf(withLimits);
        console.log(
          `${setup.name.padEnd(9)} QoS ${qos}: without limits ${a.toFixed(0).padStart(6)} msg/s, ` +
            `with limits never reached ${b.toFixed(0).padStart(6)} msg/s (${(((b - a) / a) * 100).toFixed(1)}%)` +
            (setup.name === "Redis"
              ? `; limiter calls to Redis: ${calls / ROUNDS} per ${MESSAGES} messages`
              : ""),
        );
      }
    }
  } finally {
    probe.stop();
    await redisServer.stop();
  }
}

await main();
