/**
 * What the QoS 1/2 queue limits cost (`limits.queue`: the in-flight window, the stored queue's
 * cap): messages/s of one QoS 1 publisher to one QoS 1 subscriber with a persistent session,
 * which acknowledges everything, through an in-process node, in memory and over Redis, with
 * the node's default limits. Run it on two builds (before and after a change) and compare.
 *
 *   npm run build && node dist/bench/queue-limits-cost.js [messages]
 *
 * Clients and node share one process (and this machine's cores): compare ratios, not the
 * absolute figures.
 */
import { performance } from "node:perf_hooks";
import { startNode } from "../harness/in-process-node.js";
import { connect, end, type MqttClient, subscribe } from "../harness/mqtt-client.js";
import { RedisServer } from "../harness/redis-server.js";
import { medianOf } from "./src/report/median.js";

const MESSAGES = Number(process.argv[2] ?? 20_000);
const ROUNDS = 3;
/** Publishes in flight at once (the publisher's own window). */
const PUBLISHER_WINDOW = 1_000;

async function publishAll(publisher: MqttClient, subscriber: MqttClient): Promise<number> {
  let received = 0;
  let wake: (() => void) | undefined;
  const done = new Promise<void>((resolve) => {
    subscriber.on("message", () => {
      if (++received === MESSAGES) resolve();
      const w = wake;
      wake = undefined;
      w?.();
    });
  });
  const payload = Buffer.alloc(64, 120);
  const started = performance.now();
  let inFlight = 0;
  for (let i = 0; i < MESSAGES; i++) {
    // Paced by what the subscriber has received too: with the in-flight window PUBACKs no
    // longer wait for the delivery, so a publisher paced by them alone would outrun the
    // subscriber into its queue cap and measure drops instead of throughput.
    while (inFlight >= PUBLISHER_WINDOW || i - received >= PUBLISHER_WINDOW) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    inFlight++;
    publisher.publish("bench/t", payload, { qos: 1 }, () => {
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

async function run(raw: Record<string, unknown>): Promise<number> {
  const node = await startNode(raw);
  const subscriber = await connect(node.urls.tcp as string, {
    clientId: `bench-sub-${Math.random().toString(36).slice(2)}`,
    clean: false,
  });
  const publisher = await connect(node.urls.tcp as string);
  try {
    await subscribe(subscriber, "bench/#", 1);
    return await publishAll(publisher, subscriber);
  } finally {
    await end(subscriber, publisher);
    await node.stop();
  }
}

async function main(): Promise<void> {
  const redisServer = await RedisServer.start();
  try {
    const setups: Array<{ name: string; raw: () => Record<string, unknown> }> = [
      { name: "in memory", raw: () => ({}) },
      {
        name: "Redis",
        raw: () => ({
          redis: {
            url: redisServer.url,
            keyPrefix: `bench${Math.random().toString(36).slice(2)}:`,
          },
        }),
      },
    ];
    for (const setup of setups) {
      const rates: number[] = [];
      for (let round = 0; round < ROUNDS; round++) rates.push(await run(setup.raw()));
      console.log(
        `${setup.name.padEnd(9)} QoS 1, persistent subscriber: ${medianOf(rates).toFixed(0).padStart(6)} msg/s ` +
          `(median of ${ROUNDS}: ${rates.map((r) => r.toFixed(0)).join(", ")})`,
      );
    }
  } finally {
    await redisServer.stop();
  }
}

await main();
