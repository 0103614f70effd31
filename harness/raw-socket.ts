import { connect as netConnect, type Socket } from "node:net";

/** A raw TCP connection for feeding a broker bytes no well-behaved client would send. */
export async function rawConnect(port: number, host = "127.0.0.1"): Promise<Socket> {
  const socket = netConnect({ port, host });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.on("error", () => {});
  return socket;
}

/** Resolves once the peer has closed the connection; collects everything it sent before. */
export function closedByPeer(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => {
    if (socket.destroyed) resolve(Buffer.concat(chunks));
    socket.once("close", () => resolve(Buffer.concat(chunks)));
  });
}

/** Resolves with the first `length` bytes the peer sends. */
export function readBytes(socket: Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= length) {
        socket.off("data", onData);
        resolve(Buffer.concat(chunks).subarray(0, length));
      }
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error(`closed after ${total} of ${length} bytes`)));
  });
}

/** Encodes an MQTT variable-length "remaining length". */
export function remainingLength(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    bytes.push(byte);
  } while (rest > 0);
  return Buffer.from(bytes);
}

/** An MQTT string: two length bytes, then the raw bytes given (so tests can send invalid UTF-8). */
export function mqttString(value: string | Buffer): Buffer {
  const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : value;
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** A packet from its first byte and body. */
export function packet(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body]);
}

/** An MQTT 3.1.1 CONNECT with the given client id (raw bytes allowed) and clean-session flag. */
export function connectPacket(
  clientId: string | Buffer,
  options: {
    clean?: boolean;
    keepalive?: number;
    will?: { topic: string | Buffer; payload: Buffer; qos?: 0 | 1 | 2 };
    /** The protocol level byte; 4 is MQTT 3.1.1. */
    level?: number;
  } = {},
): Buffer {
  let flags = options.clean === false ? 0 : 0x02;
  if (options.will) flags |= 0x04 | ((options.will.qos ?? 0) << 3);
  const keepalive = Buffer.alloc(2);
  keepalive.writeUInt16BE(options.keepalive ?? 60);
  const parts = [
    mqttString("MQTT"),
    Buffer.from([options.level ?? 4, flags]),
    keepalive,
    mqttString(clientId),
  ];
  if (options.will) parts.push(mqttString(options.will.topic), mqttString(options.will.payload));
  return packet(0x10, Buffer.concat(parts));
}
