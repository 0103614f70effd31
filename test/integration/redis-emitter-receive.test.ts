import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { pino } from "pino";
import { RedisServer } from "../../harness/redis-server.js";
import { type Emitter, redisEmitter } from "../../src/engine/emitters.js";
import { decodeEnvelope, type EmittedMessage } from "../../src/engine/envelope.js";

/**
 * What a node's emitter does with what comes on its Redis subscription besides other nodes'
 * envelopes, against a real Redis: two emitters stand for two nodes.
 */
let redis: RedisServer;
const connections: Redis[] = [];
const emitters: Emitter[] = [];

before(async () => {
  redis = await RedisServer.start();
});
after(async () => {
  await Promise.all(emitters.map((e) => new Promise<void>((resolve) => e.close(resolve))));
  for (const connection of connections) connection.disconnect();
  await redis?.stop();
});

interface Node {
  emitter: Emitter;
  subscriber: Redis;
  undecodable: number;
  /** Log lines at warn and above, as parsed JSON. */
  warnings: Array<Record<string, unknown>>;
}

function node(): Node {
  const publisher = new Redis(redis.url);
  const subscriber = new Redis(redis.url, { enableReadyCheck: false });
  connections.push(publisher, subscriber);
  const warnings: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: "warn" },
    { write: (line: string) => warnings.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const result: Node = {
    emitter: undefined as unknown as Emitter,
    subscriber,
    undecodable: 0,
    warnings,
  };
  result.emitter = redisEmitter(publisher, subscriber, log, {
    undecodable: () => result.undecodable++,
  });
  emitters.push(result.emitter);
  return result;
}

/** Subscribes `node` to `topic`; resolves once Redis has the subscription. */
function listen(node: Node, topic: string, received: string[]): Promise<void> {
  return new Promise((resolve) =>
    node.emitter.on(
      topic,
      (message: EmittedMessage & { payload?: Buffer }, done: () => void) => {
        received.push(String(message.payload));
        done();
      },
      () => resolve(),
    ),
  );
}

function publish(node: Node, topic: string, payload: string): Promise<void> {
  const message = { cmd: "publish", topic, payload: Buffer.from(payload), qos: 0, retain: false };
  return new Promise((resolve, reject) =>
    node.emitter.emit(message as EmittedMessage, (error?: Error) =>
      error ? reject(error) : resolve(),
    ),
  );
}

/** Waits until `condition()` holds, for at most 5 s (and stops looking then). */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within 5000 ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe("a node's Redis subscription", () => {
  it("drops a message that is not an envelope, counts and logs it without its bytes, and delivers the next", async () => {
    const a = node();
    const b = node();
    const control = new Redis(redis.url);
    connections.push(control);
    const received: string[] = [];
    await listen(b, "plant/pump/1", received);
    const secret = "s3cret-setpoint";
    // a stray PUBLISH from outside Sluice; a cut envelope; then another node's message
    await control.publish("plant/pump/1", secret);
    await control.publish("plant/pump/1", Buffer.from([0x82, 0xa2, 0x69, 0x64, 0xa3, 0x61]));
    await publish(a, "plant/pump/1", "after");
    await until(() => received.length === 1, "the message after the undecodable ones");
    assert.deepEqual(received, ["after"]);
    assert.equal(b.undecodable, 2);
    assert.equal(b.warnings.length, 1, "one line for the run, not one per message");
    const [line] = b.warnings;
    assert.equal(line?.event, "redis.message_undecodable");
    assert.equal(line?.channel, "plant/pump/1");
    assert.equal(JSON.stringify(b.warnings).includes(secret), false, "the payload is not logged");
  });

  it("hands its messages to another listener of the connection as ioredis would, and still delivers them", async () => {
    const a = node();
    const b = node();
    const received: string[] = [];
    await listen(b, "line/3/speed", received);
    // one message before the other listener comes: the node reads them itself until then
    await publish(a, "line/3/speed", "0");
    await until(() => received.length === 1, "the first message");
    const heard: Array<{ channel: string; payload: string }> = [];
    b.subscriber.on("messageBuffer", (channel: Buffer, envelope: Buffer) => {
      const msg = decodeEnvelope(envelope).msg as EmittedMessage & { payload: Buffer };
      heard.push({ channel: channel.toString(), payload: msg.payload.toString() });
    });
    for (const payload of ["1", "2", "3"]) await publish(a, "line/3/speed", payload);
    await until(() => received.length === 4 && heard.length === 3, "three messages, to both");
    assert.deepEqual(received, ["0", "1", "2", "3"]);
    assert.deepEqual(
      heard,
      ["1", "2", "3"].map((payload) => ({ channel: "line/3/speed", payload })),
    );
  });
});
