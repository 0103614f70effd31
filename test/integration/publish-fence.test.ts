import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import mqttPacket from "mqtt-packet";
import { withDeadline } from "../../harness/deadline.js";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, subscribe } from "../../harness/mqtt-client.js";
import { closedByPeer, connectPacket, rawConnect, readBytes } from "../../harness/raw-socket.js";
import { RedisServer } from "../../harness/redis-server.js";

/**
 * A client's publishes that follow one that failed are not handed on before its resend (the
 * order the client published in). Node A reaches Redis as a user that may not publish on
 * channels starting with "z" (a Redis ACL): there a PUBLISH on `zq/...` fails while one on
 * `ok/...` succeeds. The publisher sends, in one write, a QoS 1 message on `zq/1`, then a
 * retained QoS 2 one on `ok/1` (its publish starts Redis round trips later: the duplicate check,
 * the retained store). Node B's subscriber must not get the second: it would be ahead of the
 * first's resend. The will of a connection fenced so still goes out.
 */
let redis: RedisServer;
let control: Redis;
let a: RunningNode;
let b: RunningNode;

before(async () => {
  redis = await RedisServer.start();
  control = new Redis(redis.url);
  await control.call("ACL", "SETUSER", "fenced", "on", ">fenced-pw", "~*", "&[^z]*", "+@all");
  const prefix = `t${randomBytes(4).toString("hex")}:`;
  const fencedUrl = new URL(redis.url);
  fencedUrl.username = "fenced";
  fencedUrl.password = "fenced-pw";
  a = await startNode({ nodeId: "node-a", redis: { url: fencedUrl.href, keyPrefix: prefix } });
  b = await startNode({ nodeId: "node-b", redis: { url: redis.url, keyPrefix: prefix } });
});
after(async () => {
  await a?.stop();
  await b?.stop();
  control?.disconnect();
  await redis?.stop();
});

/**
 * A raw connection to node A with a persistent session, as a PLC's (a clean one's QoS 2 ids are
 * wiped at the close, which stops a later QoS 2 publish anyway), its CONNACK read.
 */
async function connectPersistent(
  clientId: string,
  will?: { topic: string; payload: Buffer; qos: 1 },
): Promise<Socket> {
  const raw = await rawConnect(Number(new URL(a.urls.tcp as string).port));
  raw.write(connectPacket(clientId, { clean: false, keepalive: 30, ...(will ? { will } : {}) }));
  assert.deepEqual([...(await readBytes(raw, 4))], [0x20, 0x02, 0x00, 0x00]);
  return raw;
}

describe("publish fence", () => {
  it("after a failed publish, the connection's later publishes of the same read wait for its resend", async () => {
    const subscriber = await connect(b.urls.tcp as string);
    const publisher = await connect(a.urls.tcp as string);
    const raw = await connectPersistent("fenced-publisher");
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "ok/1", 1);
      const closed = closedByPeer(raw);
      raw.write(
        Buffer.concat([
          mqttPacket.generate({
            cmd: "publish",
            topic: "zq/1",
            payload: Buffer.from("first"),
            qos: 1,
            messageId: 1,
            retain: false,
            dup: false,
          }),
          mqttPacket.generate({
            cmd: "publish",
            topic: "ok/1",
            payload: Buffer.from("second"),
            qos: 2,
            messageId: 2,
            retain: true,
            dup: false,
          }),
        ]),
      );
      // The failed publish closes the connection, unacknowledged.
      const answered = await withDeadline(closed, 10_000, "the publisher's connection closed");
      assert.equal(answered.length, 0, "neither message was acknowledged");

      // A message published on ok/1 afterwards: the subscriber's first one on that topic.
      await publisher.publishAsync("ok/1", "third", { qos: 1 });
      await withDeadline(inbox.waitFor(1), 10_000, "the later message at node B");
      assert.deepEqual(
        inbox.received.map((m) => m.payload.toString()),
        ["third"],
        "the message after the failed one was not delivered ahead of its resend",
      );
    } finally {
      raw.destroy();
      await end(subscriber);
      await end(publisher);
    }
  });
  it("the will of a connection whose publish failed still goes out", async () => {
    const subscriber = await connect(b.urls.tcp as string);
    const raw = await connectPersistent("fenced-with-will", {
      topic: "ok/will",
      payload: Buffer.from("gone"),
      qos: 1,
    });
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "ok/will", 1);
      const closed = closedByPeer(raw);
      // Refused by Redis: the node closes the connection without DISCONNECT, so the will is due,
      // published with the client whose publish failed.
      raw.write(
        mqttPacket.generate({
          cmd: "publish",
          topic: "zq/2",
          payload: Buffer.from("refused"),
          qos: 1,
          messageId: 1,
          retain: false,
          dup: false,
        }),
      );
      await withDeadline(closed, 10_000, "the publisher's connection closed");
      await withDeadline(inbox.waitFor(1), 10_000, "the will at node B");
      assert.deepEqual(
        inbox.received.map((m) => m.payload.toString()),
        ["gone"],
      );
    } finally {
      raw.destroy();
      await end(subscriber);
    }
  });
});
