import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import mqtt from "mqtt-packet";
import { encodePublishesFor } from "../../src/engine/publish-encoder.js";
import { isBackedUp } from "../../src/engine/socket-backlog.js";
import { coalesceEveryWrite, coalesceWrites } from "../../src/transport/write-coalescing.js";

/**
 * Packets written the way aedes writes them (mqtt-packet: cork, write, uncork on the next
 * tick), from separate callbacks of one event-loop turn, on real loopback sockets.
 */
/** limits.queue.maxBufferedBytes' default. */
const LIMIT = 262_144;
let server: Server;

before(async () => {
  server = createServer({ noDelay: true });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
});
after(() => server.close());

/** A connected pair: the node's side (coalescing unless told otherwise) and the client's. */
async function socketPair(coalesce = true): Promise<[Socket, Socket]> {
  const accepted = once(server, "connection").then(([socket]) => socket as Socket);
  const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
  const [socket] = await Promise.all([accepted, once(client, "connect")]);
  if (coalesce) coalesceWrites(socket);
  return [socket, client];
}

function writePacket(socket: Socket, packet: Buffer): void {
  socket.cork();
  socket.write(packet);
  process.nextTick(() => socket.uncork());
}

/** As ioredis writes a command: no cork. */
function writePlain(socket: Socket, packet: Buffer): void {
  socket.write(packet);
}

/** Writes `count` packets, each from its own tick, and counts the socket's writes to the OS. */
async function writeInOneTurn(
  socket: Socket,
  peer: Socket,
  count: number,
  write: (socket: Socket, packet: Buffer) => void = writePacket,
): Promise<{ systemWrites: number; received: Buffer }> {
  let systemWrites = 0;
  const instrumented = socket as Socket & { _writev: unknown; _write: unknown };
  for (const method of ["_writev", "_write"] as const) {
    const original = instrumented[method] as (...args: unknown[]) => unknown;
    instrumented[method] = function (this: Socket, ...args: unknown[]) {
      systemWrites++;
      return original.apply(this, args);
    };
  }
  const expected = count * 4;
  const chunks: Buffer[] = [];
  let length = 0;
  const allArrived = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      if (length < expected) return;
      peer.off("data", onData);
      resolve();
    };
    peer.on("data", onData);
  });
  let next = 0;
  const writeNext = (): void => {
    write(socket, Buffer.from([0x40, 0x02, 0x00, next + 1]));
    if (++next < count) process.nextTick(writeNext);
  };
  writeNext();
  await allArrived;
  for (const method of ["_writev", "_write"] as const) delete instrumented[method];
  return { systemWrites, received: Buffer.concat(chunks) };
}

describe("write coalescing", () => {
  it("sends a turn's packets for one socket in one write, in order", async () => {
    const [socket, client] = await socketPair();
    try {
      const { systemWrites, received } = await writeInOneTurn(socket, client, 10);
      assert.equal(systemWrites, 1);
      assert.deepEqual(
        [...received].filter((_, i) => i % 4 === 3),
        Array.from({ length: 10 }, (_, i) => i + 1),
      );
      assert.equal(socket.writableCorked, 0, "released at the end of the turn");
    } finally {
      client.destroy();
      socket.destroy();
    }
  });

  it("without it, the same packets take a write each", async () => {
    const [socket, client] = await socketPair(false);
    try {
      const { systemWrites } = await writeInOneTurn(socket, client, 10);
      assert.equal(systemWrites, 10);
    } finally {
      client.destroy();
      socket.destroy();
    }
  });

  it("coalesceEveryWrite: writes that never cork (a Redis client's commands) leave in one write per turn, in order", async () => {
    const [socket, client] = await socketPair(false);
    coalesceEveryWrite(socket);
    try {
      const { systemWrites, received } = await writeInOneTurn(socket, client, 10, writePlain);
      assert.equal(systemWrites, 1);
      assert.deepEqual(
        [...received].filter((_, i) => i % 4 === 3),
        Array.from({ length: 10 }, (_, i) => i + 1),
      );
      assert.equal(socket.writableCorked, 0, "released at the end of the turn");
    } finally {
      client.destroy();
      socket.destroy();
    }
  });

  it("without it, the same uncorked writes take a write each", async () => {
    const [socket, client] = await socketPair(false);
    try {
      const { systemWrites } = await writeInOneTurn(socket, client, 10, writePlain);
      assert.equal(systemWrites, 10);
    } finally {
      client.destroy();
      socket.destroy();
    }
  });

  it("a turn's packets to clients leave before its Redis commands, though the commands were written first", async () => {
    const [redis, redisPeer] = await socketPair(false);
    coalesceEveryWrite(redis);
    const [client, clientPeer] = await socketPair();
    const order: string[] = [];
    for (const [name, socket] of [
      ["redis", redis],
      ["client", client],
    ] as const) {
      const instrumented = socket as Socket & { _writev: unknown; _write: unknown };
      for (const method of ["_writev", "_write"] as const) {
        const original = instrumented[method] as (...args: unknown[]) => unknown;
        instrumented[method] = function (this: Socket, ...args: unknown[]) {
          order.push(name);
          return original.apply(this, args);
        };
      }
    }
    try {
      const arrived = Promise.all([once(redisPeer, "data"), once(clientPeer, "data")]);
      // As a PUBLISH read from a publisher goes: aedes queues the delivery to a local
      // subscriber (setImmediate), then the PUBLISH to Redis is written on the next tick.
      setImmediate(() => writePacket(client, Buffer.from([0x30, 0x03, 0x00, 0x01, 0x74])));
      process.nextTick(() => writePlain(redis, Buffer.from("*1\r\n$4\r\nPING\r\n")));
      await arrived;
      assert.deepEqual(order, ["client", "redis"]);
      assert.equal(client.writableCorked, 0);
      assert.equal(redis.writableCorked, 0);
    } finally {
      for (const socket of [redis, redisPeer, client, clientPeer]) socket.destroy();
    }
  });

  it("the publish encoder's packets on a coalescing socket are held to the turn's end, with no cork of their own", async () => {
    const [socket, client] = await socketPair();
    encodePublishesFor(socket);
    try {
      const corked: number[] = [];
      const { systemWrites, received } = await writeInOneTurn(socket, client, 10, (s, packet) => {
        // the same four bytes, as a PUBACK of that id
        mqtt.writeToStream({ cmd: "puback", messageId: packet[3] as number }, s);
        corked.push(s.writableCorked);
      });
      assert.equal(systemWrites, 1);
      assert.deepEqual(corked, new Array(10).fill(1), "one hold for the turn, no cork per packet");
      assert.deepEqual(
        [...received].filter((_, i) => i % 4 === 3),
        Array.from({ length: 10 }, (_, i) => i + 1),
      );
      assert.equal(socket.writableCorked, 0, "released at the end of the turn");
    } finally {
      client.destroy();
      socket.destroy();
    }
  });

  it("still releases the others when one held socket is destroyed in the turn", async () => {
    const [doomed, doomedPeer] = await socketPair();
    const [kept, keptPeer] = await socketPair();
    try {
      const arrived = once(keptPeer, "data");
      writePacket(doomed, Buffer.from([0xd0, 0x00]));
      writePacket(kept, Buffer.from([0xd0, 0x00]));
      doomed.destroy();
      const [chunk] = (await arrived) as [Buffer];
      assert.deepEqual([...chunk], [0xd0, 0x00]);
      assert.equal(kept.writableCorked, 0);
    } finally {
      for (const socket of [doomed, doomedPeer, kept, keptPeer]) socket.destroy();
    }
  });

  it("a turn's burst over the limit to a reading client is not backed up; a client that takes nothing is", async () => {
    const [reading, reader] = await socketPair();
    const [frozen, frozenPeer] = await socketPair();
    frozenPeer.pause();
    try {
      const chunk = Buffer.alloc(1024);
      // 512 KiB in one turn: over the limit, held until the turn ends, and taken by the kernel.
      for (let i = 0; i < 512; i++) writePacket(reading, chunk);
      assert.ok(reading.writableLength >= LIMIT);
      assert.equal(isBackedUp(reading, LIMIT), false);
      const arrived = new Promise<void>((resolve) => {
        let length = 0;
        reader.on("data", (data: Buffer) => {
          length += data.length;
          if (length === 512 * 1024) resolve();
        });
      });
      await arrived;
      // Turns of 1 MiB until the kernel's buffers for the frozen peer are full.
      for (let turn = 0; turn < 64 && !isBackedUp(frozen, LIMIT); turn++) {
        for (let i = 0; i < 1024; i++) writePacket(frozen, chunk);
        await new Promise((resolve) => setImmediate(resolve));
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.equal(isBackedUp(frozen, LIMIT), true);
      assert.equal(isBackedUp(reading, LIMIT), false);
    } finally {
      for (const socket of [reading, reader, frozen, frozenPeer]) socket.destroy();
    }
  });
});
