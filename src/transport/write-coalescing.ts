import type { Socket } from "node:net";
import { type Duplex, Writable } from "node:stream";

/**
 * Coalesces the packets a socket is sent during one turn of the event loop into one write.
 *
 * aedes writes each packet through mqtt-packet, which corks the socket and uncorks it on the
 * next tick: the pieces of one packet go out together, but each packet is its own `writev`,
 * since aedes writes them from separate callbacks. With TCP_NODELAY on (Sluice's default, so a
 * command reaches its PLC without Nagle's delay) that made the socket writes the largest cost at
 * QoS 1, where every message means a PUBACK to its publisher and a PUBLISH to each subscriber.
 * Here the first cork of a turn adds one more cork, released for every such socket at once by a
 * single `setImmediate`: packets wait at most until the loop's check phase, not for Nagle's
 * timer, and a busy turn's packets for one client leave in one system call.
 */
export function coalesceWrites(socket: Socket): void {
  // One shared function, no closure per socket: idle connections stay small.
  socket.cork = corkUntilTurnEnds;
}

// net.Socket and tls.TLSSocket inherit it unchanged.
const { cork } = Writable.prototype;

const heldThisTurn = new Set<Socket>();

function corkUntilTurnEnds(this: Socket): void {
  if (!heldThisTurn.has(this)) {
    if (heldThisTurn.size === 0) setImmediate(releaseTurn);
    heldThisTurn.add(this);
    cork.call(this);
  }
  cork.call(this);
}

function releaseTurn(): void {
  for (const socket of heldThisTurn) {
    // A socket destroyed meanwhile has dropped its buffer; uncorking it again is harmless.
    if (socket.writableCorked > 0) socket.uncork();
  }
  heldThisTurn.clear();
}

/** A socket's libuv handle: the bytes of its current write that the kernel has not taken. */
interface StreamHandle {
  writeQueueSize?: number;
}

/**
 * Whether a client's stream has more written to it than it takes. Writable's drain signal
 * (`writableNeedDrain`, 16 KiB buffered) no longer says so on a held socket, whose buffer holds
 * this turn's packets by design: a burst read from Redis in one go is far over it, and QoS 0
 * to subscribers that read was dropped as slow (3,686 to 17,360 messages in a bench run). On a
 * socket, slow means the kernel refused part of the last write (its send buffer is full, a
 * libuv write is pending) while at least the high-water mark waits; other streams (WebSocket)
 * keep the drain signal.
 */
export function isBackedUp(stream: Duplex): boolean {
  const handle = (stream as Duplex & { _handle?: StreamHandle | null })._handle;
  const refused = handle?.writeQueueSize;
  if (typeof refused !== "number") return stream.writableNeedDrain;
  return refused > 0 && stream.writableLength >= stream.writableHighWaterMark;
}
