import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { Command, Redis } from "ioredis";
import { withDeadline } from "../../harness/deadline.js";
import { RedisServer } from "../../harness/redis-server.js";
import { PublishBatcher, publishFrame, sendPublish } from "../../src/redis/publish-command.js";
import { coalesceEveryWrite, releaseHeldWrites } from "../../src/transport/write-coalescing.js";

/**
 * PUBLISH frames written by Sluice: byte for byte what ioredis writes for the same command, and
 * through a real Redis the message, Redis' answer and its refusals arrive as with ioredis' own
 * `publish`; batched, one answer per PUBLISH, in order, across a lost connection too.
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

/** A batcher on `client`; each answer recorded under its message's name. */
function batcherOn(client: Redis): {
  batcher: PublishBatcher;
  publish(channel: string, name: string): void;
  answers: Array<[string, Error | undefined]>;
  answered(count: number): Promise<void>;
} {
  const batcher = new PublishBatcher(client);
  const answers: Array<[string, Error | undefined]> = [];
  let waiting: { count: number; resolve: () => void } | undefined;
  return {
    batcher,
    answers,
    publish(channel, name) {
      batcher.publish(channel, Buffer.from(name), (error) => {
        answers.push([name, error]);
        if (waiting !== undefined && answers.length >= waiting.count) waiting.resolve();
      });
    },
    async answered(count) {
      if (answers.length < count) {
        await withDeadline(
          new Promise<void>((resolve) => {
            waiting = { count, resolve };
          }),
          5_000,
          `${count} answers`,
        );
      }
      // a second answer would come with the next replies: a PING's round trip lets it show
      if (client.status === "ready") await client.ping();
    },
  };
}

/** Collects what `subscriber` gets on `channel` until `count` messages arrived. */
async function receive(channel: string, count: number, send: () => void): Promise<string[]> {
  const got: string[] = [];
  let done: () => void = () => {};
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  const listener = (from: Buffer, message: Buffer): void => {
    if (from.toString() !== channel) return;
    got.push(message.toString());
    if (got.length === count) done();
  };
  subscriber.on("messageBuffer", listener);
  try {
    send();
    await withDeadline(all, 5_000, `${count} messages on ${channel}`);
    return got;
  } finally {
    subscriber.off("messageBuffer", listener);
  }
}

const names = (count: number, from = 0): string[] =>
  Array.from({ length: count }, (_, i) => `m${from + i}`);

/** `receive`, counting the publisher connection's writes meanwhile. */
async function receiveCountingWrites(
  channel: string,
  count: number,
  send: () => void,
): Promise<{ got: string[]; writes: number }> {
  const stream = publisher.stream;
  const write = stream.write;
  let writes = 0;
  stream.write = function (this: typeof stream, ...args: unknown[]) {
    writes++;
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof stream.write;
  try {
    const got = await receive(channel, count, send);
    return { got, writes };
  } finally {
    stream.write = write;
  }
}

describe("PUBLISHes batched per turn of the event loop", () => {
  it("leave in one write, reach the subscriber in order, each answered once without error", async () => {
    const channel = "batched/order";
    await subscriber.subscribe(channel);
    const { publish, answers, answered } = batcherOn(publisher);
    const { got, writes } = await receiveCountingWrites(channel, 50, () => {
      for (const name of names(50)) publish(channel, name);
    });
    assert.equal(writes, 1);
    assert.deepEqual(got, names(50));
    await answered(50);
    assert.deepEqual(
      answers,
      names(50).map((name) => [name, undefined]),
    );
    await subscriber.unsubscribe(channel);
  });

  it("those given from separate ticks of one turn (a poll phase's socket reads) leave in one write, in order", async () => {
    const channel = "batched/ticks";
    await subscriber.subscribe(channel);
    const { publish, answered } = batcherOn(publisher);
    const sent = names(10);
    const { got, writes } = await receiveCountingWrites(channel, 10, () => {
      const next = (): void => {
        publish(channel, sent.shift() as string);
        if (sent.length > 0) process.nextTick(next);
      };
      next();
    });
    assert.equal(writes, 1);
    assert.deepEqual(got, names(10));
    await answered(10);
    await subscriber.unsubscribe(channel);
  });

  it("a batch larger than the buffers it is built in arrives whole and in order", async () => {
    const channel = "batched/large";
    await subscriber.subscribe(channel);
    const batcher = new PublishBatcher(publisher);
    const padding = "x".repeat(1_000);
    const sent = names(300).map((name) => `${name}${padding}`);
    const answers: Array<Error | undefined> = [];
    const got = await receive(channel, sent.length, () => {
      for (const message of sent)
        batcher.publish(channel, Buffer.from(message), (error) => answers.push(error));
    });
    assert.deepEqual(got, sent);
    await publisher.ping();
    assert.deepEqual(answers, new Array(sent.length).fill(undefined));
    await subscriber.unsubscribe(channel);
  });

  it("a PUBLISH Redis refuses amid a batch gets Redis' error; the others, and later commands, their own answers", async () => {
    const user = `batched${process.pid}`;
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
      await limited.ping();
      const { publish, answers, answered } = batcherOn(limited);
      publish("allowed", "a");
      publish("denied", "b");
      publish("allowed", "c");
      await answered(3);
      assert.deepEqual(
        answers.map(([name, error]) => [name, error?.message.match(/NOPERM/)?.[0]]),
        [
          ["a", undefined],
          ["b", "NOPERM"],
          ["c", undefined],
        ],
      );
      assert.equal(await limited.ping(), "PONG");
    } finally {
      limited.disconnect();
      await publisher.call("ACL", "DELUSER", user);
    }
  });

  it("a command given between PUBLISHes goes after those given before it", async () => {
    const channel = "batched/between";
    await subscriber.subscribe(channel);
    const { publish, answered } = batcherOn(publisher);
    const got = await receive(channel, 3, () => {
      publish(channel, "first");
      publisher.publish(channel, "second").catch(() => {});
      publish(channel, "third");
    });
    assert.deepEqual(got, ["first", "second", "third"]);
    await answered(2);
    await subscriber.unsubscribe(channel);
  });

  it("after a connection lost mid-batch, only the PUBLISHes not yet answered are sent again", async () => {
    const channel = "batched/resend";
    await subscriber.subscribe(channel);
    const relay = await CuttingRelay.start(redis.port);
    const client = new Redis(relay.port, "127.0.0.1", { retryStrategy: () => 50 });
    try {
      await client.ping();
      const { publish, answers, answered } = batcherOn(client);
      // Redis takes all five; two of its answers (":1\r\n" each) reach the client.
      relay.cutAfter(8);
      const got = await receive(channel, 8, () => {
        for (const name of names(5)) publish(channel, name);
      });
      await answered(5);
      assert.deepEqual(got, [...names(5), ...names(3, 2)]);
      assert.deepEqual(
        answers,
        names(5).map((name) => [name, undefined]),
      );
      assert.equal(relay.connections, 2);
    } finally {
      client.disconnect();
      relay.close();
      await subscriber.unsubscribe(channel);
    }
  });

  it("on a connection whose writes are held to a turn's end, afterTurnFlush lets a batch go in the check phase it is sent in, not a turn later", async () => {
    const corkedAfterBatch: Record<string, number> = {};
    for (const [name, afterTurnFlush] of [
      ["without", undefined],
      ["releaseHeldWrites", releaseHeldWrites],
    ] as const) {
      const held = new Redis(redis.url);
      try {
        await held.ping();
        coalesceEveryWrite(held.stream);
        const batcher = new PublishBatcher(held, afterTurnFlush);
        const answered = new Promise<Error | undefined>((resolve) => {
          // In the timers phase, as a poll phase's read would: a command written first queues
          // the turn's release, then the batch's flush is queued behind it.
          setTimeout(() => {
            void held.ping();
            batcher.publish("batched/held", Buffer.from("m"), resolve);
            setImmediate(() => {
              corkedAfterBatch[name] = held.stream.writableCorked;
            });
          }, 0);
        });
        assert.equal(await withDeadline(answered, 5_000, "the PUBLISH's answer"), undefined);
      } finally {
        held.disconnect();
      }
    }
    assert.deepEqual(corkedAfterBatch, { without: 1, releaseHeldWrites: 0 });
  });

  it("on a connection that has ended every PUBLISH is answered once with an error", async () => {
    const ended = new Redis(redis.url);
    await ended.ping();
    await ended.quit();
    const { publish, answers, answered } = batcherOn(ended);
    for (const name of names(3)) publish("batched/ended", name);
    await answered(3);
    assert.deepEqual(
      answers.map(([name, error]) => [name, error instanceof Error]),
      names(3).map((name) => [name, true]),
    );
  });
});

/**
 * A relay to Redis that, once told, passes on only so many more bytes of Redis' answers and then
 * drops the connection; later connections flow untouched.
 */
class CuttingRelay {
  connections = 0;
  private budget: number | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  static async start(redisPort: number): Promise<CuttingRelay> {
    const server = createServer();
    const relay = new CuttingRelay(server);
    server.on("connection", (client) => {
      relay.connections++;
      const upstream = connect(redisPort, "127.0.0.1");
      for (const socket of [client, upstream]) {
        relay.sockets.add(socket);
        socket.on("error", () => {});
        socket.on("close", () => {
          relay.sockets.delete(socket);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.on("data", (chunk: Buffer) => {
        const budget = relay.budget;
        if (budget === undefined) {
          client.write(chunk);
          return;
        }
        relay.budget = undefined;
        client.write(chunk.subarray(0, budget), () => {
          client.destroy();
          upstream.destroy();
        });
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return relay;
  }

  /** The next answer bytes: `bytes` of them reach the client, then the connection drops. */
  cutAfter(bytes: number): void {
    this.budget = bytes;
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}
