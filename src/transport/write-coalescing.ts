import type { Socket } from "node:net";
import { Writable } from "node:stream";

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
 * timer, and a busy turn's packets for one client leave in one system call. Packets written in
 * the check phase itself (aedes writes each delivery from an immediate of its own) wait for the
 * next one, a poll phase later.
 */
export function coalesceWrites(socket: Socket): void {
  // One shared function, no closure per socket: idle connections stay small.
  socket.cork = corkUntilTurnEnds;
}

/**
 * The same for a stream whose writer never corks (ioredis writes each command on its own): the
 * first write of a turn corks it until the loop's check phase, so the commands of one turn
 * (a SUBSCRIBE storm's PUBLISHes and retained lookups) leave in one system call.
 */
export function coalesceEveryWrite(stream: Writable): void {
  stream.write = writeInTurn;
}

/**
 * For a writer that corks a stream for each packet and uncorks it on the next tick (as
 * mqtt-packet does): true, having held the stream to the turn's end, when its writes are
 * coalesced, so the writer needs no cork of its own (nor a tick per packet to undo it); false
 * for any other stream.
 */
export function holdsTurn(stream: Writable): boolean {
  if (stream.cork !== corkUntilTurnEnds) return false;
  holdUntilTurnEnds(stream);
  return true;
}

/**
 * Lets every write held so far go now, clients' sockets first, rather than at the turn's end.
 * For a writer in the loop's check phase that must not wait for the next one: a release queued
 * from there (by the first write it holds) runs only after the next poll phase: a loop turn,
 * and every socket read in it, later.
 */
export function releaseHeldWrites(): void {
  releaseTurn();
}

// net.Socket and tls.TLSSocket inherit them unchanged.
const { cork, write } = Writable.prototype;

const heldThisTurn = new Set<Writable>();

function holdUntilTurnEnds(stream: Writable): void {
  if (heldThisTurn.has(stream)) return;
  if (heldThisTurn.size === 0) setImmediate(releaseTurn);
  heldThisTurn.add(stream);
  cork.call(stream);
}

function corkUntilTurnEnds(this: Socket): void {
  holdUntilTurnEnds(this);
  cork.call(this);
}

const writeInTurn = function (this: Writable, ...args: unknown[]): boolean {
  holdUntilTurnEnds(this);
  return (write as (...a: unknown[]) => boolean).apply(this, args);
} as Writable["write"];

/**
 * Clients' sockets first, Redis connections last: the local copies of a message (local-first
 * delivery) leave before the PUBLISH that takes it to the other nodes. That write wakes
 * redis-server, which on a machine of few cores can take the core the subscriber's own process
 * was about to get; Redis' answer (and so the publisher's PUBACK) waits for Redis anyway.
 */
function releaseTurn(): void {
  for (const stream of heldThisTurn) {
    if (stream.write === writeInTurn) continue;
    // Out of the set once released: the second loop releases what is left, the Redis
    // connections and anything held meanwhile (a Set's loop visits what is added during it).
    heldThisTurn.delete(stream);
    release(stream);
  }
  for (const stream of heldThisTurn) release(stream);
  heldThisTurn.clear();
}

function release(stream: Writable): void {
  // A stream destroyed meanwhile has dropped its buffer; uncorking it again is harmless.
  if (stream.writableCorked > 0) stream.uncork();
}
