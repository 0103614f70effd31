import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { Command, Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { RedisServer } from "../../harness/redis-server.js";
import { publishFrame, sendAnsweredPublish, sendPublish } from "../../src/redis/publish-command.js";

/**
 * PUBLISH frames written by Sluice: byte for byte what ioredis writes for the same command, and
 * through a real Redis the message, Redis' answer and its refusals arrive as with ioredis' own
 * `publish`.
 */
let redis: RedisServer;
let publisher: Redis;
let subscriber: Redis;

before(async () => {
  redis = await RedisServer.start();
  publisher = new Redis(redis.url);
  subscriber = new Redis(redis.url);
});
after(async () => {
  publisher?.disconnect();
  subscriber?.disconnect();
  await redis?.stop();
});

/** What ioredis itself writes for PUBLISH with these arguments. */
function ioredisFrame(channel: string, message: Buffer): Buffer {
  const command = new Command("publish", [channel, message]);
  const written = command.toWritable({});
  return Buffer.isBuffer(written) ? written : Buffer.from(written);
}

describe("PUBLISH frames", () => {
  it("are ioredis' bytes for ASCII, UTF-8 and empty channels and every length's digit count", () => {
    const channels = ["", "t", "plant/line-4/temp", "usine/température/°C", "x".repeat(300)];
    const lengths = [0, 1, 9, 10, 99, 100, 999, 1_000, 65_535, 65_536, 1_048_576];
    for (const channel of channels) {
      for (const length of lengths) {
        const message = Buffer.alloc(length, 0x0d);
        assert.deepEqual(
          publishFrame(channel, message),
          ioredisFrame(channel, message),
          `channel ${JSON.stringify(channel.slice(0, 20))}, ${length} bytes`,
        );
      }
    }
  });

  it("through Redis: the subscriber gets the bytes, the promise Redis' receiver count", async () => {
    const channel = "usine/température";
    await subscriber.subscribe(channel);
    const message = Buffer.from([0x82, 0x00, 0x0d, 0x0a, 0xff]);
    const received = once(subscriber, "messageBuffer");
    const receivers = await sendPublish(publisher, channel, message);
    const [gotChannel, gotMessage] = (await withDeadline(
      received,
      5_000,
      "the message through Redis",
    )) as [Buffer, Buffer];
    assert.equal(receivers, 1);
    assert.equal(gotChannel.toString(), channel);
    assert.deepEqual(gotMessage, message);
    await subscriber.unsubscribe(channel);
  });

  it("a PUBLISH Redis refuses rejects its promise, and the connection's later commands still match their answers", async () => {
    const user = `limited${process.pid}`;
    await publisher.call(
      "ACL",
      "SETUSER",
      user,
      "on",
      ">secret",
      "+@all",
      "resetchannels",
      "&allowed",
    );
    const limited = new Redis(redis.url, { username: user, password: "secret" });
    try {
      await assert.rejects(sendPublish(limited, "denied", Buffer.from("x")), /NOPERM/);
      assert.equal(await sendPublish(limited, "allowed", Buffer.from("x")), 0);
      assert.equal(await limited.ping(), "PONG");
    } finally {
      limited.disconnect();
      await publisher.call("ACL", "DELUSER", user);
    }
  });
});

/** Sends with sendAnsweredPublish; resolves with each call of its callback until the deadline. */
async function answeredPublish(
  client: Redis,
  channel: string,
  message: Buffer,
): Promise<Array<Error | undefined>> {
  const calls: Array<Error | undefined> = [];
  await withDeadline(
    new Promise<void>((resolve) => {
      sendAnsweredPublish(client, channel, message, (error) => {
        calls.push(error);
        resolve();
      });
    }),
    5_000,
    "the PUBLISH answered",
  );
  // a second call would come with the next replies: a PING's round trip lets it show
  if (client.status === "ready") await client.ping();
  return calls;
}

describe("PUBLISH answered by callback", () => {
  it("reaches the subscriber and is answered once, with no error", async () => {
    const channel = "answered/ok";
    await subscriber.subscribe(channel);
    const received = once(subscriber, "messageBuffer");
    const calls = await answeredPublish(publisher, channel, Buffer.from("m"));
    const [, message] = (await withDeadline(received, 5_000, "the message")) as [Buffer, Buffer];
    assert.deepEqual(calls, [undefined]);
    assert.equal(message.toString(), "m");
    await subscriber.unsubscribe(channel);
  });

  it("a refused PUBLISH is answered once with Redis' error; the connection stays in step", async () => {
    const user = `answered${process.pid}`;
    await publisher.call(
      "ACL",
      "SETUSER",
      user,
      "on",
      ">secret",
      "+@all",
      "resetchannels",
      "&allowed",
    );
    const limited = new Redis(redis.url, { username: user, password: "secret" });
    try {
      const refused = await answeredPublish(limited, "denied", Buffer.from("x"));
      assert.equal(refused.length, 1);
      assert.match(String(refused[0]?.message), /NOPERM/);
      assert.deepEqual(await answeredPublish(limited, "allowed", Buffer.from("x")), [undefined]);
      assert.equal(await limited.ping(), "PONG");
    } finally {
      limited.disconnect();
      await publisher.call("ACL", "DELUSER", user);
    }
  });

  it("on a connection that has ended it is answered once with an error", async () => {
    const ended = new Redis(redis.url);
    await ended.ping();
    await ended.quit();
    const calls = await answeredPublish(ended, "answered/ended", Buffer.from("x"));
    assert.equal(calls.length, 1);
    assert.ok(calls[0] instanceof Error);
  });
});
