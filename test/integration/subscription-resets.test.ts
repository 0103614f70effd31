import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { LogCapture } from "../../harness/log-capture.js";
import { connect, end, Inbox, type MqttClient, subscribe } from "../../harness/mqtt-client.js";
import { RedisServer } from "../../harness/redis-server.js";
import { type LogLine, SluiceProcess } from "../../harness/sluice-process.js";

/**
 * Redis cuts a subscriber connection whose pending output passes `client-output-buffer-limit
 * pubsub`. A cut is counted (sluice_redis_subscription_resets_total) and logged once at warn
 * (redis.subscription_reset); a whole Redis outage is not a cut.
 */
const DEADLINE_MS = 30_000;
/** The cut test's burst: 64 KiB messages, at most this many (64 MiB), stopped at the cut. */
const BURST_MESSAGE_BYTES = 64 * 1024;
const MAX_BURST_MESSAGES = 1_000;
/** Redis' log line when it cuts a client for its output buffer. */
const CUT_BY_REDIS = /scheduled to be closed ASAP for overcoming of output buffer limits/;

async function resetsCounted(httpUrl: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const match = /^sluice_redis_subscription_resets_total(?:\{[^}]*\})? (\d+)$/m.exec(text);
  assert.ok(match, "sluice_redis_subscription_resets_total is exported");
  return Number(match[1]);
}

const resetLines = (lines: readonly LogLine[]) =>
  lines.filter((line) => line.event === "redis.subscription_reset");

/** Waits until a message with this payload has arrived. */
async function receivedPayload(inbox: Inbox, payload: string): Promise<void> {
  const arrived = async (): Promise<void> => {
    while (!inbox.received.some((m) => m.payload.toString() === payload))
      await inbox.waitFor(inbox.received.length + 1);
  };
  await withDeadline(arrived(), DEADLINE_MS, `message "${payload}"`);
}

describe("a subscriber node that stops reading is cut by Redis past its pubsub output limit", () => {
  let dir: string;
  let redis: RedisServer;
  let slow: SluiceProcess;
  let slowHttp: string;
  let slowMqtt: string;
  let publisherNode: RunningNode;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-resets-"));
    redis = await RedisServer.start();
    // Low, so that a few MiB past the sockets' buffers cut it; no soft limit.
    assert.equal(
      await redis.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 0 0"),
      "+OK",
    );
    const prefix = `r${randomBytes(4).toString("hex")}:`;
    const file = join(dir, "slow.yaml");
    await writeFile(
      file,
      "nodeId: slow\nlisteners: [{ type: tcp, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: 0 }\n" +
        "auth: { allowAnonymous: true }\nshutdown: { drainSeconds: 0 }\nlog: { level: debug, format: json }\n" +
        `redis: { url: "${redis.url}", keyPrefix: "${prefix}" }\n`,
    );
    // Its own process, so that the test can stop it (SIGSTOP) as a node too busy to read.
    slow = SluiceProcess.spawn(["start", "--config", file]);
    const { ports, httpPort } = await slow.ready();
    slowMqtt = `mqtt://127.0.0.1:${ports.tcp}`;
    slowHttp = `http://127.0.0.1:${httpPort}`;
    publisherNode = await startNode({
      nodeId: "burst",
      redis: { url: redis.url, keyPrefix: prefix },
    });
  });

  after(async () => {
    slow?.kill("SIGCONT");
    slow?.kill();
    await slow?.exited;
    await publisherNode?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("counts the cut once, logs it once at warn, and the node recovers", async () => {
    let subscriber: MqttClient | undefined;
    let publisher: MqttClient | undefined;
    try {
      subscriber = await connect(slowMqtt, { clientId: "burst-sub", clean: true });
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "burst/#", 1);
      publisher = await connect(publisherNode.urls.tcp as string, { clientId: "burst-pub" });
      // The subscription is in force across nodes.
      await publisher.publishAsync("burst/x", "before", { qos: 1 });
      await receivedPayload(inbox, "before");
      assert.equal(await resetsCounted(slowHttp), 0);
      const mark = slow.lines.length;

      const cut = redis.waitForOutput(CUT_BY_REDIS, { timeoutMs: DEADLINE_MS });
      let cutSeen = false;
      cut.then(
        () => {
          cutSeen = true;
        },
        () => {},
      );
      let published = 0;
      slow.child.kill("SIGSTOP");
      try {
        const payload = Buffer.alloc(BURST_MESSAGE_BYTES, 0x61);
        for (; published < MAX_BURST_MESSAGES && !cutSeen; published++) {
          await publisher.publishAsync("burst/x", payload, { qos: 0 });
        }
        await cut;
      } finally {
        slow.child.kill("SIGCONT");
      }

      // Back on pub/sub: pubsub.gap comes right after the reset line, in the same turn.
      await withDeadline(
        slow.waitForLog((l) => l.event === "pubsub.gap" && slow.lines.indexOf(l) >= mark),
        DEADLINE_MS,
        "the slow node back on pub/sub",
      );
      const lines = resetLines(slow.lines.slice(mark));
      assert.equal(lines.length, 1, "one redis.subscription_reset line");
      assert.equal(lines[0]?.level, 40, "at warn");
      assert.equal(typeof lines[0]?.downMs, "number");
      assert.equal(await resetsCounted(slowHttp), 1);
      process.stdout.write(
        `# subscription cut after ${published} messages of ${BURST_MESSAGE_BYTES} B to a stopped ` +
          `node; back on pub/sub ${lines[0]?.downMs} ms after it saw the cut\n`,
      );

      const ready = await fetch(`${slowHttp}/readyz`);
      assert.equal(ready.status, 200, "ready again");
      await publisher.publishAsync("burst/x", "after", { qos: 1 });
      await receivedPayload(inbox, "after");
      assert.equal(resetLines(slow.lines).length, 1, "still one line");
    } finally {
      await end(subscriber, publisher);
    }
  });
});

describe("a cut subscription against a whole Redis outage", () => {
  let redis: RedisServer;
  let log: LogCapture;
  let node: RunningNode;

  before(async () => {
    redis = await RedisServer.start();
    log = new LogCapture();
    node = await startNode(
      { redis: { url: redis.url, keyPrefix: `o${randomBytes(4).toString("hex")}:` } },
      process.cwd(),
      { logger: log.logger },
    );
  });

  after(async () => {
    await node?.stop();
    await redis?.stop();
  });

  /** Resolves at the next pubsub.gap line: the node is back on pub/sub after a loss. */
  function nextGap(): Promise<LogLine> {
    const mark = log.lines.length;
    return withDeadline(
      log.waitFor((l) => l.event === "pubsub.gap" && log.lines.indexOf(l) >= mark),
      DEADLINE_MS,
      "pubsub.gap",
    );
  }

  it("CLIENT KILL of the node's pub/sub connection alone is a reset", async () => {
    const gap = nextGap();
    assert.equal(await redis.command("CLIENT", "KILL", "TYPE", "pubsub"), ":1");
    await gap;
    assert.equal(resetLines(log.lines).length, 1);
    assert.equal(await resetsCounted(node.httpUrl), 1);
  });

  it("a Redis restart, every connection lost, is an outage and not a reset", async () => {
    const gap = nextGap();
    const mark = log.lines.length;
    const down = log.waitFor((l) => l.event === "redis.down" && log.lines.indexOf(l) >= mark);
    await redis.stop();
    await withDeadline(down, DEADLINE_MS, "redis.down");
    await redis.start();
    await gap;
    assert.equal(resetLines(log.lines).length, 1, "no reset line for the outage");
    assert.equal(await resetsCounted(node.httpUrl), 1);
  });
});
