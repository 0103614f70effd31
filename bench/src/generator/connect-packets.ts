import type { Socket } from "node:net";

/**
 * The two MQTT 3.1.1 packets the connection scenarios need, by hand: mqtt.js costs a few
 * hundred kB and a timer per client, which would make the generator, not the broker, the
 * limit at 10,000 idle connections.
 */

/**
 * CONNECT with a clean session and no will; keep-alive 0 by default (idle connections then need
 * no PINGREQ), or the given seconds for a node that refuses keep-alive 0.
 */
export function connectPacket(clientId: string, keepaliveSeconds = 0): Buffer {
  const id = Buffer.from(clientId, "utf8");
  const variable = Buffer.from([
    0x00,
    0x04,
    0x4d,
    0x51,
    0x54,
    0x54,
    0x04,
    0x02,
    keepaliveSeconds >> 8,
    keepaliveSeconds & 0xff,
  ]);
  const remaining = variable.length + 2 + id.length;
  if (remaining > 127) throw new Error("client id too long for a one-byte remaining length");
  return Buffer.concat([
    Buffer.from([0x10, remaining]),
    variable,
    Buffer.from([id.length >> 8, id.length & 0xff]),
    id,
  ]);
}

/**
 * The return code of a CONNACK at the start of `data` (0 accepted, 3 server unavailable, ...),
 * undefined while fewer than its 4 bytes have arrived, or "not-connack" for anything else.
 */
export function connackCode(data: Buffer): number | undefined | "not-connack" {
  if (data.length < 4) return undefined;
  if (data[0] !== 0x20 || data[1] !== 0x02) return "not-connack";
  return data[3];
}

/**
 * Calls `onCode` once, with the CONNACK's return code (or "not-connack"), as soon as the first
 * 4 bytes `socket` receives are in; it stops listening to the socket's data then.
 */
export function whenConnack(socket: Socket, onCode: (code: number | "not-connack") => void): void {
  let buffered = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buffered = Buffer.concat([buffered, chunk]);
    const code = connackCode(buffered);
    if (code === undefined) return;
    socket.off("data", onData);
    onCode(code);
  };
  socket.on("data", onData);
}
