import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import msgpack from "msgpack-lite";
import { RedisServer } from "../../harness/redis-server.js";
import { Packet, type StoredPacket } from "../../src/engine/persistence-types.js";
import { RedisScripts } from "../../src/engine/redis-scripts.js";

/**
 * pubrel-4.lua keeps an inbound QoS 2 message's origin in the PUBREL that replaces its queued
 * packet: a session resumed with only that PUBREL skips later attempts of the message
 * (attempt-deliveries.ts), and notes it in the session's released list, which a resumed
 * session reads after the PUBCOMP has cleared the record. The queued packet is msgpack-lite's,
 * with a bin payload, which Redis' cmsgpack cannot read: the origin is read from the packet's
 * last bytes.
 */
describe("a PUBREL record keeps its message's origin", () => {
  let server: RedisServer;
  let redis: Redis;
  let scripts: RedisScripts;
  before(async () => {
    server = await RedisServer.start();
    redis = new Redis({ port: server.port, host: server.host });
    scripts = new RedisScripts(redis);
  });
  after(async () => {
    redis.disconnect();
    await server.kill();
  });

  /** A queued packet as the persistence stores it, PUBREC'd: the PUBREL record it becomes. */
  async function released(session: string, payload: Buffer, origin?: string): Promise<unknown> {
    const queued = new Packet({
      cmd: "publish",
      topic: "plant/pump-3/cmd",
      payload,
      qos: 2,
      retain: false,
      messageId: 7,
      brokerId: "b1",
      brokerCounter: 70_000,
    } as StoredPacket) as StoredPacket & { origin?: string };
    if (origin !== undefined) queued.origin = origin;
    const keys = ["queue", "packets", "ids", "released"].map((k) => `${session}:${k}`);
    const [queue, packets, ids] = keys as [string, string, string];
    await redis.hset(packets, "b1:70000", msgpack.encode(queued));
    await redis.rpush(queue, "b1:70000");
    await redis.hset(ids, "41", "b1:70000");
    const pubrel = msgpack.encode({ cmd: "pubrel", messageId: 41 });
    assert.equal(await scripts.run("pubrel", keys, [41, pubrel, 256]), 1);
    assert.deepEqual(await redis.lrange(queue, 0, -1), ["rel:b1:70000"]);
    // Noted for the session's next connections too, once the PUBCOMP has cleared the record.
    const noted = origin === undefined ? [] : [`@${origin}`];
    assert.deepEqual(await redis.lrange(`${session}:released`, 0, -1), noted);
    return msgpack.decode((await redis.hgetBuffer(packets, "b1:70000")) as Buffer);
  }

  it("short and long origins, binary payloads", async () => {
    const payload = Buffer.from([0xc4, 0x00, 0xff, 0xa6, 0x10]);
    assert.deepEqual(await released("s1", payload, "lDJwZTFu.1"), {
      cmd: "pubrel",
      messageId: 41,
      origin: "lDJwZTFu.1",
    });
    const long = `${"x".repeat(40)}.zz`;
    assert.deepEqual(await released("s2", payload, long), {
      cmd: "pubrel",
      messageId: 41,
      origin: long,
    });
  });

  it("none without one, even when the payload spells the field", async () => {
    const fake = Buffer.concat([
      Buffer.from([0xa6]),
      Buffer.from("origin"),
      Buffer.from([0xa3]),
      Buffer.from("abc"),
    ]);
    assert.deepEqual(await released("s3", fake), { cmd: "pubrel", messageId: 41 });
  });
});
