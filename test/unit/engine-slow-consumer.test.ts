import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { afterEach, describe, it } from "node:test";
import type { IPublishPacket } from "mqtt-packet";
import { Engine, type EngineConnection } from "../../harness/engine-harness.js";
import { publish, subscribe } from "../../harness/wire-client.js";

const KIB = 1024;

/** A payload that names its message, padded to `size` bytes. */
function numbered(index: number, size: number): Buffer {
  const payload = Buffer.alloc(size, 0x2e);
  payload.write(`${index}:`);
  return payload;
}

function indexOf(packet: IPublishPacket): number {
  return Number.parseInt(packet.payload.toString("latin1", 0, 12), 10);
}

/** The bytes a socket's current write still holds that the kernel has not taken. */
function refusedByKernel(socket: Socket): number {
  return (
    (socket as Socket & { _handle?: { writeQueueSize?: number } })._handle?.writeQueueSize ?? 0
  );
}

/**
 * QoS 0 to a slow consumer (broker-rules authorizeForward with engine/socket-backlog.ts): a
 * delivery is dropped only while the kernel refuses the subscriber's socket's writes and at
 * least `limits.queue.maxBufferedBytes` wait behind it. Only a kernel's socket buffer shows
 * that, so the subscribers here are on real loopback TCP sockets (127.0.0.1, in this
 * process), and so are the publishers whose reads must land between two turns' writes.
 */
describe("engine: QoS 0 to a slow consumer", () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });

  it("drops QoS 0 to a subscriber that stops reading, once the kernel refuses and enough waits", async () => {
    const maxBufferedBytes = 64 * KIB;
    engine = await Engine.start({ limits: { queue: { maxBufferedBytes } } });
    const subscriber = await engine.connectOverLoopback("slow-frozen");
    subscriber.wire.send(subscribe("slow/t", 0, 1));
    await subscriber.wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    subscriber.peer.pause();
    const socket = subscriber.stream as Socket;
    const publisher = await engine.connect("slow-publisher");
    // 16 KiB messages one at a time (each PUBACK awaited) until the first drop: the kernel's
    // loopback buffers take a few MiB first. Bounded: 2,048 messages (32 MiB).
    let published = 0;
    let dropped = 0;
    while (published < 2_048 && dropped === 0) {
      published++;
      publisher.wire.send(publish("slow/t", numbered(published, 16 * KIB), 1, published));
      await publisher.wire.waitForCount("puback", published, 10_000);
      dropped = await engine.droppedMessages("slow_consumer");
    }
    assert.equal(dropped, 1, `a drop within ${published} messages`);
    assert.ok(socket.writableLength >= maxBufferedBytes, "enough bytes wait behind the socket");
    assert.ok(refusedByKernel(socket) > 0, "the kernel refuses the socket's writes");
    // While it stays frozen, every further QoS 0 message to it is dropped.
    for (let i = 0; i < 10; i++) {
      published++;
      publisher.wire.send(publish("slow/t", numbered(published, 16 * KIB), 1, published));
    }
    await publisher.wire.waitForCount("puback", published, 10_000);
    assert.equal(await engine.droppedMessages("slow_consumer"), 11);
    // Once it reads again it gets everything that was not dropped, in order.
    subscriber.peer.resume();
    await subscriber.wire.roundTrip(30_000);
    const received = subscriber.wire.received("publish").map((p) => indexOf(p as IPublishPacket));
    assert.equal(received.length, published - 11);
    assert.deepEqual(
      received,
      Array.from({ length: published - 11 }, (_, i) => i + 1),
    );
  });

  it("drops nothing to a subscriber that reads, even when bursts over the limit wait a turn", async () => {
    const maxBufferedBytes = 16 * KIB;
    engine = await Engine.start({ limits: { queue: { maxBufferedBytes } } });
    const subscriber = await engine.connectOverLoopback("slow-reading");
    subscriber.wire.send(subscribe("slow/t", 0, 1));
    await subscriber.wire.waitFor("SUBACK", (p) => p.cmd === "suback");
    // Publishers on sockets too, taking turns, 64 KiB per event-loop turn: each turn's
    // deliveries are written in its check phase and held there (write coalescing) until the
    // next one, while the next turn's read (another publisher's: aedes reads a connection again
    // only once its last read is handled) is decided. Those decisions see 64 KiB waiting, far
    // over maxBufferedBytes, all of it taken by the kernel once released.
    const publishers: EngineConnection[] = [];
    for (let i = 0; i < 4; i++)
      publishers.push(await engine.connectOverLoopback(`slow-burst-${i}`));
    const turns = 16;
    const perTurn = 8;
    const count = turns * perTurn;
    await new Promise<void>((resolve) => {
      let turn = 0;
      const sendTurn = (): void => {
        publishers[turn % publishers.length]?.wire.send(
          ...Array.from({ length: perTurn }, (_, i) => {
            const index = turn * perTurn + i + 1;
            return publish("slow/t", numbered(index, 8 * KIB), 1, index);
          }),
        );
        turn++;
        if (turn < turns) setImmediate(sendTurn);
        else resolve();
      };
      sendTurn();
    });
    for (const publisher of publishers)
      await publisher.wire.waitForCount("puback", count / publishers.length, 10_000);
    await subscriber.wire.roundTrip(10_000);
    assert.equal(await engine.droppedMessages("slow_consumer"), 0);
    const received = subscriber.wire.received("publish").map((p) => indexOf(p as IPublishPacket));
    // Each publisher's messages in its order; the publishers' interleaved as they were read.
    assert.deepEqual(
      received.sort((a, b) => a - b),
      Array.from({ length: count }, (_, i) => i + 1),
    );
  });
});
