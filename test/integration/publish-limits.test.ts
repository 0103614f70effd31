import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { connect, end, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { metricValue } from "../../harness/node-metrics.js";
import {
  connectPacket,
  mqttString,
  packet,
  rawConnect,
  readBytes,
} from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";
import { resolveConfig } from "../../src/config/load-config.js";
import { SluiceNode } from "../../src/node.js";
import { hashPassword } from "../../src/security/password-hash.js";

/**
 * Publish limits (`limits.publish`): a client over its limit is throttled by no longer reading
 * its socket, so it is slowed to its limit, loses nothing it was acknowledged for, and leaves
 * other clients alone; sustained abuse ends in a disconnect; the limit of one username holds
 * across the nodes of a cluster. Rates are measured at a subscriber over a bounded window that
 * starts a second after the first delivery (the burst is spent by then).
 */

// ---------------------------------------------------------------------------------------------
// helpers

interface LogLine {
  event?: string;
  [key: string]: unknown;
}

/** The JSON lines a node logs, kept in memory, with a way to wait for one. */
class LogCollector {
  readonly lines: LogLine[] = [];
  private waiters: Array<{ match: (line: LogLine) => boolean; resolve: () => void }> = [];
  readonly stream = {
    write: (text: string): void => {
      for (const part of text.split("\n")) {
        if (part.trim() === "") continue;
        const line = JSON.parse(part) as LogLine;
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => {
          if (!w.match(line)) return true;
          w.resolve();
          return false;
        });
      }
    },
  };

  events(event: string, clientId?: string): LogLine[] {
    return this.lines.filter(
      (l) => l.event === event && (clientId === undefined || l.clientId === clientId),
    );
  }

  async waitFor(event: string, clientId: string, timeoutMs = 10_000): Promise<LogLine> {
    const match = (l: LogLine) => l.event === event && l.clientId === clientId;
    if (!this.lines.some(match)) {
      const seen = new Promise<void>((resolve) => this.waiters.push({ match, resolve }));
      const timeout = sleep(timeoutMs).then(() => {
        throw new Error(`no ${event} line for ${clientId} within ${timeoutMs} ms`);
      });
      await Promise.race([seen, timeout]);
    }
    return this.lines.find(match) as LogLine;
  }
}

interface LoggedNode {
  urls: { tcp: string; ws?: string };
  httpUrl: string;
  logs: LogCollector;
  stop(): Promise<void>;
}

/** An in-process node on ephemeral loopback ports whose log lines (audit included) are kept. */
async function startLoggedNode(
  raw: Record<string, unknown>,
  configDir = process.cwd(),
): Promise<LoggedNode> {
  const document = {
    listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
    http: { host: "127.0.0.1", port: 0 },
    auth: { allowAnonymous: true },
    shutdown: { drainSeconds: 0 },
    ...raw,
  };
  const { config } = resolveConfig(document, { configDir, env: {} });
  const logs = new LogCollector();
  const node = await SluiceNode.start(config, pino({ level: "info" }, logs.stream));
  const urls: LoggedNode["urls"] = { tcp: "" };
  for (const { type, address } of node.addresses.listeners) {
    if (type === "tcp") urls.tcp = `mqtt://127.0.0.1:${address.port}`;
    if (type === "ws") urls.ws = `ws://127.0.0.1:${address.port}/mqtt`;
  }
  return {
    urls,
    httpUrl: `http://127.0.0.1:${node.addresses.http.port}`,
    logs,
    stop: () => node.close(),
  };
}

function payloadOf(seq: number, bytes: number): Buffer {
  const head = Buffer.from(`${seq} `);
  return bytes <= head.length
    ? head
    : Buffer.concat([head, Buffer.alloc(bytes - head.length, 120)]);
}

function seqOf(payload: Buffer): number {
  return Number.parseInt(payload.subarray(0, 12).toString("latin1"), 10);
}

/** Every message a subscriber receives, timed on arrival. */
class Meter {
  private readonly arrivals: Array<{ topic: string; at: number; seq: number; bytes: number }> = [];
  private watchers = new Set<() => void>();

  constructor(client: MqttClient) {
    client.on("message", (topic, payload) => {
      this.arrivals.push({
        topic,
        at: performance.now(),
        seq: seqOf(payload),
        bytes: payload.length,
      });
      for (const watcher of this.watchers) watcher();
    });
  }

  /** Resolves once `check` holds (checked now and on every arrival); rejects after the timeout. */
  until(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const watcher = (): void => {
        if (!check()) return;
        this.watchers.delete(watcher);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(watcher);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      this.watchers.add(watcher);
    });
  }

  /** Arrival time of the first message on a topic starting with `prefix`. */
  async firstAt(prefix: string): Promise<number> {
    const first = () => this.arrivals.find((a) => a.topic.startsWith(prefix));
    await this.until(() => first() !== undefined, `a first message on ${prefix}`);
    return (first() as { at: number }).at;
  }

  count(prefix: string, from: number, to: number): { messages: number; bytes: number } {
    let messages = 0;
    let bytes = 0;
    for (const a of this.arrivals) {
      if (a.topic.startsWith(prefix) && a.at >= from && a.at < to) {
        messages++;
        bytes += a.bytes;
      }
    }
    return { messages, bytes };
  }

  seqs(prefix: string): Set<number> {
    return new Set(this.arrivals.filter((a) => a.topic.startsWith(prefix)).map((a) => a.seq));
  }

  atOf(topic: string, seq: number): number | undefined {
    return this.arrivals.find((a) => a.topic === topic && a.seq === seq)?.at;
  }
}

/**
 * Publishes QoS 1 as fast as the broker takes it: `maxInFlight` unacknowledged at all times
 * (far beyond 10x the limits used here: unthrottled this reaches thousands a second).
 */
class Flooder {
  sent = 0;
  readonly acked = new Set<number>();
  private inFlight = 0;
  private stopped = false;
  private closed = false;
  private wake: (() => void) | undefined;
  private readonly done: Promise<void>;

  constructor(
    private readonly client: MqttClient,
    private readonly topic: string,
    private readonly options: { payloadBytes?: number; maxInFlight?: number } = {},
  ) {
    client.on("close", () => {
      this.closed = true;
      this.signal();
    });
    this.done = this.run();
  }

  private signal(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private async run(): Promise<void> {
    const max = this.options.maxInFlight ?? 400;
    while (!this.stopped && !this.closed) {
      if (this.inFlight >= max) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      const seq = this.sent++;
      this.inFlight++;
      this.client.publish(
        this.topic,
        payloadOf(seq, this.options.payloadBytes ?? 32),
        { qos: 1 },
        (error) => {
          this.inFlight--;
          if (!error) this.acked.add(seq);
          this.signal();
        },
      );
      if (seq % 20 === 19) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Stops publishing (the connection stays open). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.signal();
    await this.done;
  }
}

/** Waits until `ms` after `from` (a performance.now() time): the end of a measurement window. */
async function until(from: number, ms: number): Promise<void> {
  const left = from + ms - performance.now();
  if (left > 0) await sleep(left);
}

const WARMUP_MS = 1_000;
const WINDOW_MS = 3_000;

/** Rate (per second) on `prefix` over the window that starts WARMUP_MS after `first`. */
async function measure(
  meter: Meter,
  prefix: string,
  first: number,
  windowMs = WINDOW_MS,
): Promise<{ messages: number; bytes: number }> {
  await until(first, WARMUP_MS + windowMs);
  const { messages, bytes } = meter.count(prefix, first + WARMUP_MS, first + WARMUP_MS + windowMs);
  return { messages: (messages * 1000) / windowMs, bytes: (bytes * 1000) / windowMs };
}

function assertNear(actual: number, limit: number, what: string): void {
  assert.ok(
    actual >= 0.6 * limit && actual <= 1.5 * limit,
    `${what}: ${actual.toFixed(1)}/s is not within 0.6x-1.5x of ${limit}/s`,
  );
}

async function writePasswords(dir: string, users: Record<string, string>): Promise<void> {
  const lines = await Promise.all(
    Object.entries(users).map(async ([u, p]) => `${u}:${await hashPassword(p)}`),
  );
  await writeFile(join(dir, "passwd"), `${lines.join("\n")}\n`);
}

// ---------------------------------------------------------------------------------------------

describe("publish limits: one node, 200 messages/s", () => {
  const LIMIT = 200;
  let node: LoggedNode;
  before(async () => {
    node = await startLoggedNode({
      listeners: [
        { type: "tcp", host: "127.0.0.1", port: 0 },
        { type: "ws", host: "127.0.0.1", port: 0, path: "/mqtt" },
      ],
      limits: { publish: { messagesPerSecond: LIMIT } },
    });
  });
  after(() => node?.stop());

  it("a QoS 1 publisher at full speed is slowed to its limit, and loses nothing it was acknowledged for", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-1" });
    const publisher = await connect(node.urls.tcp, { clientId: "flood-1" });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "flood/1", 1);
      const flooder = new Flooder(publisher, "flood/1", { maxInFlight: 1000 });
      const first = await meter.firstAt("flood/1");
      const rate = await measure(meter, "flood/1", first);
      // Over the whole run the bucket allows its burst plus the rate, never more.
      const total = meter.count("flood/1", 0, first + WARMUP_MS + WINDOW_MS).messages;
      console.log(
        `# flood at QoS 1: ${rate.messages.toFixed(1)}/s delivered for a limit of ${LIMIT}/s; ` +
          `${total} in the first ${(WARMUP_MS + WINDOW_MS) / 1000} s; ${flooder.sent} sent, ${flooder.acked.size} acknowledged so far`,
      );
      assertNear(rate.messages, LIMIT, "delivered rate");
      assert.ok(
        total <= LIMIT + (LIMIT * (WARMUP_MS + WINDOW_MS + 100)) / 1000,
        `${total} > burst + rate`,
      );
      // Stop mid-flood, with messages held in the broker and in the socket: those were never
      // acknowledged; every acknowledged one must arrive.
      await flooder.stop();
      publisher.end(true);
      const acked = [...flooder.acked];
      assert.ok(acked.length > LIMIT, `only ${acked.length} acknowledged`);
      await meter.until(() => {
        const got = meter.seqs("flood/1");
        return acked.every((seq) => got.has(seq));
      }, "every acknowledged message at the subscriber");
      const got = meter.seqs("flood/1");
      const lost = acked.filter((seq) => !got.has(seq));
      console.log(`# ${acked.length} acknowledged, ${lost.length} lost`);
      assert.equal(lost.length, 0);
    } finally {
      await end(subscriber, publisher);
    }
  });

  it("the throttled sender's socket backs up: the broker stops reading it (TCP backpressure)", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-raw" });
    const meter = new Meter(subscriber);
    await subscribe(subscriber, "flood/raw", 0);
    const port = Number(new URL(node.urls.tcp).port);
    const socket = await rawConnect(port);
    try {
      socket.write(connectPacket("flood-raw"));
      await readBytes(socket, 4); // CONNACK
      const body = Buffer.concat([mqttString("flood/raw"), payloadOf(0, 200)]);
      const publish = packet(0x30, body); // QoS 0
      const received0 = await metricValue(node.httpUrl, "sluice_bytes_received_total");
      let stop = false;
      let written = 0;
      const writer = (async () => {
        while (!stop && !socket.destroyed) {
          written += publish.length;
          if (!socket.write(publish))
            await Promise.race([once(socket, "drain"), once(socket, "close")]);
        }
      })();
      const first = await meter.firstAt("flood/raw");
      const rate = await measure(meter, "flood/raw", first);
      const delivered = meter.count("flood/raw", 0, Number.POSITIVE_INFINITY).messages;
      const read = (await metricValue(node.httpUrl, "sluice_bytes_received_total")) - received0;
      stop = true;
      console.log(
        `# raw QoS 0 flood: ${rate.messages.toFixed(1)}/s delivered; the client wrote ` +
          `${(written / 1e6).toFixed(1)} MB, the broker read ${(read / 1e6).toFixed(2)} MB for ${delivered} messages ` +
          `(${((delivered * publish.length) / 1e6).toFixed(2)} MB)`,
      );
      assertNear(rate.messages, LIMIT, "delivered rate");
      // The client could write far more than the broker took in: the rest is stuck in its
      // socket and the kernel's buffers because the broker stopped reading.
      assert.equal(socket.writableNeedDrain, true, "the flooder's writes should be blocked");
      assert.ok(read < delivered * publish.length + 512 * 1024, `broker read ${read} bytes`);
      assert.ok(written > read + 1024 * 1024, `client wrote only ${written} bytes`);
      socket.destroy();
      await writer;
    } finally {
      socket.destroy();
      await end(subscriber);
    }
  });

  it("a well-behaved client on the same node gets its messages through promptly meanwhile", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-2" });
    const flooding = await connect(node.urls.tcp, { clientId: "flood-2" });
    const polite = await connect(node.urls.tcp, { clientId: "polite-2" });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "flood/2", 1);
      await subscribe(subscriber, "polite/2", 1);
      const flooder = new Flooder(flooding, "flood/2", { maxInFlight: 1000 });
      const first = await meter.firstAt("flood/2");
      await until(first, WARMUP_MS); // the flooder is throttled from here on
      const sentAt: number[] = [];
      for (let seq = 0; seq < 20; seq++) {
        sentAt.push(performance.now());
        polite.publish("polite/2", payloadOf(seq, 16), { qos: 1 });
        await sleep(100);
      }
      await meter.until(() => meter.seqs("polite/2").size === 20, "the polite client's messages");
      const latencies = sentAt.map((at, seq) => (meter.atOf("polite/2", seq) as number) - at);
      const flood = meter.count("flood/2", first + WARMUP_MS, performance.now());
      const floodRate = (flood.messages * 1000) / (performance.now() - first - WARMUP_MS);
      console.log(
        `# polite client: worst latency ${Math.max(...latencies).toFixed(1)} ms, median ` +
          `${latencies.sort((a, b) => a - b)[10]?.toFixed(1)} ms, while the flooder ran at ${floodRate.toFixed(1)}/s`,
      );
      assert.ok(Math.max(...latencies) < 500, `latencies ${latencies.join(", ")}`);
      assertNear(floodRate, LIMIT, "the flooder meanwhile");
      await flooder.stop();
    } finally {
      await end(subscriber, flooding, polite);
    }
  });

  it("throttles a WebSocket client the same way", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-ws" });
    const publisher = await connect(node.urls.ws as string, { clientId: "flood-ws" });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "flood/ws", 1);
      const flooder = new Flooder(publisher, "flood/ws", { maxInFlight: 1000 });
      const first = await meter.firstAt("flood/ws");
      const rate = await measure(meter, "flood/ws", first, 2_000);
      console.log(`# WebSocket flood: ${rate.messages.toFixed(1)}/s for a limit of ${LIMIT}/s`);
      assertNear(rate.messages, LIMIT, "delivered rate over WebSocket");
      await flooder.stop();
    } finally {
      await end(subscriber, publisher);
    }
  });
});

describe("publish limits: abuse", () => {
  let node: LoggedNode;
  before(async () => {
    node = await startLoggedNode({
      limits: {
        publish: { messagesPerSecond: 5, burstMessages: 1, disconnectAfterSeconds: 1 },
      },
    });
  });
  after(() => node?.stop());

  it("a client over its limit without a break for disconnectAfterSeconds is disconnected, its will published", async () => {
    const watcher = await connect(node.urls.tcp, { clientId: "watcher-3" });
    const publisher = await connect(node.urls.tcp, {
      clientId: "flood-3",
      will: { topic: "wills/flood-3", payload: Buffer.from("gone"), qos: 1, retain: false },
    });
    try {
      const meter = new Meter(watcher);
      await subscribe(watcher, "wills/#", 1);
      const closed = new Promise<void>((resolve) => publisher.once("close", () => resolve()));
      const flooder = new Flooder(publisher, "flood/3", { maxInFlight: 100 });
      const throttled = await node.logs.waitFor("audit.throttled", "flood-3");
      const abuse = await node.logs.waitFor("audit.abuse", "flood-3");
      await Promise.race([
        closed,
        sleep(10_000).then(() => assert.fail("the flooder was not disconnected")),
      ]);
      await meter.until(
        () => meter.count("wills/flood-3", 0, Number.POSITIVE_INFINITY).messages > 0,
        "the will",
      );
      const flood = node.logs.events("limits.publish_flood", "flood-3")[0];
      console.log(
        `# disconnected after ${String(flood?.throttledMs)} ms throttled; ${flooder.acked.size} messages acknowledged`,
      );
      assert.equal(throttled.limit, "messagesPerSecond");
      assert.equal(abuse.reason, "publish_flood");
      assert.ok(Number(flood?.throttledMs) >= 1000);
      await flooder.stop();
    } finally {
      await end(watcher, publisher);
    }
  });
});

describe("publish limits: bytes per second", () => {
  const BYTES = 50 * 1024;
  let node: LoggedNode;
  before(async () => {
    node = await startLoggedNode({ limits: { publish: { bytesPerSecond: BYTES } } });
  });
  after(() => node?.stop());

  it("1 KiB messages are slowed to the byte rate", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-4" });
    const publisher = await connect(node.urls.tcp, { clientId: "flood-4" });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "bytes/4", 1);
      const flooder = new Flooder(publisher, "bytes/4", { payloadBytes: 1024, maxInFlight: 200 });
      const first = await meter.firstAt("bytes/4");
      const rate = await measure(meter, "bytes/4", first);
      // On the wire each message is 1024 payload bytes plus fixed header, topic and packet id.
      const wire = 1024 + 3 + 2 + "bytes/4".length + 2;
      const expectedPayload = (BYTES * 1024) / wire;
      console.log(
        `# byte limit ${BYTES} B/s: ${rate.bytes.toFixed(0)} payload B/s delivered ` +
          `(${rate.messages.toFixed(1)} messages/s; expected ${expectedPayload.toFixed(0)} payload B/s)`,
      );
      assertNear(rate.bytes, expectedPayload, "delivered payload bytes");
      await flooder.stop();
    } finally {
      await end(subscriber, publisher);
    }
  });
});

describe("publish limits: overrides", () => {
  let node: LoggedNode;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-publish-limits-"));
    await writePasswords(dir, { scada: "scada-pw", plc: "plc-pw" });
    node = await startLoggedNode(
      {
        auth: { allowAnonymous: true, passwordFile: "passwd" },
        limits: {
          publish: {
            messagesPerSecond: 50,
            overrides: [
              { username: "scada", messagesPerSecond: 500 },
              { clientId: "hmi-*", messagesPerSecond: 150 },
            ],
          },
        },
      },
      dir,
    );
  });
  after(async () => {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("a named user and a client-id pattern get their own limits; everyone else the base one", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-5" });
    const scada = await connect(node.urls.tcp, {
      clientId: "scada-1",
      username: "scada",
      password: "scada-pw",
    });
    const hmi = await connect(node.urls.tcp, { clientId: "hmi-7" });
    const plc = await connect(node.urls.tcp, {
      clientId: "plc-1",
      username: "plc",
      password: "plc-pw",
    });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "ovr/#", 1);
      const flooders = [
        new Flooder(scada, "ovr/scada", { maxInFlight: 1000 }),
        new Flooder(hmi, "ovr/hmi", { maxInFlight: 400 }),
        new Flooder(plc, "ovr/plc", { maxInFlight: 200 }),
      ];
      const first = await meter.firstAt("ovr/");
      await until(first, WARMUP_MS + WINDOW_MS);
      const rates = Object.fromEntries(
        ["scada", "hmi", "plc"].map((name) => [
          name,
          (meter.count(`ovr/${name}`, first + WARMUP_MS, first + WARMUP_MS + WINDOW_MS).messages *
            1000) /
            WINDOW_MS,
        ]),
      ) as Record<"scada" | "hmi" | "plc", number>;
      console.log(
        `# overrides: scada ${rates.scada.toFixed(1)}/s (500), hmi-7 ${rates.hmi.toFixed(1)}/s (150), plc ${rates.plc.toFixed(1)}/s (50)`,
      );
      assertNear(rates.scada, 500, "scada (username override)");
      assertNear(rates.hmi, 150, "hmi-7 (client id override)");
      assertNear(rates.plc, 50, "plc (base limit)");
      await Promise.all(flooders.map((f) => f.stop()));
    } finally {
      await end(subscriber, scada, hmi, plc);
    }
  });
});

describe("publish limits: cluster-wide over Redis", () => {
  const LIMIT = 100;
  let redis: RedisServer;
  let a: LoggedNode;
  let b: LoggedNode;
  let dir: string;
  before(async () => {
    redis = await RedisServer.start();
    dir = await mkdtemp(join(tmpdir(), "sluice-publish-limits-"));
    await writePasswords(dir, { plc: "plc-pw" });
    const prefix = `t${randomBytes(4).toString("hex")}:`;
    const clusterNode = (nodeId: string) =>
      startLoggedNode(
        {
          nodeId,
          redis: { url: redis.url, keyPrefix: prefix },
          auth: { allowAnonymous: true, passwordFile: "passwd" },
          limits: { publish: { messagesPerSecond: LIMIT } },
        },
        dir,
      );
    a = await clusterNode("node-a");
    b = await clusterNode("node-b");
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("one username publishing through two nodes gets one budget, not two", async () => {
    const subscriber = await connect(a.urls.tcp, { clientId: "sub-6" });
    const onA = await connect(a.urls.tcp, {
      clientId: "plc-a",
      username: "plc",
      password: "plc-pw",
    });
    const onB = await connect(b.urls.tcp, {
      clientId: "plc-b",
      username: "plc",
      password: "plc-pw",
    });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "cl/#", 1);
      // Alone, through node A: the whole budget.
      const floodA = new Flooder(onA, "cl/a", { maxInFlight: 400 });
      const firstA = await meter.firstAt("cl/a");
      const alone = await measure(meter, "cl/", firstA, 2_000);
      // Then through node B as well: the two share it.
      const floodB = new Flooder(onB, "cl/b", { maxInFlight: 400 });
      const firstB = await meter.firstAt("cl/b");
      const both = await measure(meter, "cl/", firstB);
      const share = {
        a: meter.count("cl/a", firstB + WARMUP_MS, firstB + WARMUP_MS + WINDOW_MS).messages,
        b: meter.count("cl/b", firstB + WARMUP_MS, firstB + WARMUP_MS + WINDOW_MS).messages,
      };
      console.log(
        `# cluster: alone through A ${alone.messages.toFixed(1)}/s; through A and B ` +
          `${both.messages.toFixed(1)}/s together (A ${share.a}, B ${share.b} in ${WINDOW_MS / 1000} s) for a limit of ${LIMIT}/s`,
      );
      assertNear(alone.messages, LIMIT, "one connection alone");
      assertNear(both.messages, LIMIT, "two connections on two nodes together");
      assert.ok(share.a > 0 && share.b > 0, "both connections publish");
      await Promise.all([floodA.stop(), floodB.stop()]);
      // Without subscriptions its disconnect publishes nothing: the nodes stop right after.
      await subscriber.unsubscribeAsync("cl/#");
    } finally {
      await end(subscriber, onA, onB);
    }
  });
});

describe("publish limits: metric and audit lines", () => {
  let node: LoggedNode;
  before(async () => {
    node = await startLoggedNode({
      limits: { publish: { messagesPerSecond: 20, burstMessages: 1 } },
    });
  });
  after(() => node?.stop());

  it("one episode: one throttled line, one unthrottled line once back under the limit, counted once", async () => {
    const subscriber = await connect(node.urls.tcp, { clientId: "sub-7" });
    const publisher = await connect(node.urls.tcp, { clientId: "flood-7" });
    try {
      const meter = new Meter(subscriber);
      await subscribe(subscriber, "flood/7", 1);
      const flooder = new Flooder(publisher, "flood/7", { maxInFlight: 20 });
      const first = await meter.firstAt("flood/7");
      await until(first, 1_500);
      await flooder.stop(); // connected, but quiet once its last messages are through
      const unthrottled = await node.logs.waitFor("audit.unthrottled", "flood-7");
      const throttled = node.logs.events("audit.throttled", "flood-7");
      const episodes = await metricValue(node.httpUrl, "sluice_publish_throttled_total");
      const delivered = meter.count("flood/7", 0, Number.POSITIVE_INFINITY).messages;
      console.log(
        `# ${delivered} messages over ${throttled.length} episode(s); sluice_publish_throttled_total ${episodes}`,
      );
      assert.equal(throttled.length, 1);
      assert.equal(throttled[0]?.limit, "messagesPerSecond");
      assert.equal(throttled[0]?.log, "audit");
      assert.equal(unthrottled.log, "audit");
      assert.ok(
        node.logs.lines.indexOf(unthrottled) > node.logs.lines.indexOf(throttled[0] as LogLine),
      );
      assert.equal(episodes, 1);
      assert.ok(delivered > 20, `${delivered} delivered`);
      assert.equal(node.logs.events("audit.abuse", "flood-7").length, 0);
    } finally {
      await end(subscriber, publisher);
    }
  });
});
