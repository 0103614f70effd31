import { Duplex } from "node:stream";

/**
 * One end of an in-process connection: what is written to it arrives at its peer, in order and
 * in the chunks written (one write is one read on the other side, as a small TCP segment is).
 */
class PairEnd extends Duplex {
  peer: PairEnd | undefined;
  /** The peer was told that nothing more comes. */
  private peerEnded = false;

  override _read(): void {}

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error) => void) {
    if (this.peer !== undefined && !this.peer.destroyed) this.peer.push(chunk);
    callback();
  }

  override _final(callback: (error?: Error) => void): void {
    this.endPeer();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // As a closed TCP connection: the peer reads what was sent before, then its end.
    this.endPeer();
    callback(error);
  }

  private endPeer(): void {
    if (this.peerEnded || this.peer === undefined || this.peer.destroyed) return;
    this.peerEnded = true;
    this.peer.push(null);
  }
}

/** Two connected streams, with no network in between (Node 20 has no stream.duplexPair). */
export function duplexPair(): { server: Duplex; client: Duplex } {
  const server = new PairEnd();
  const client = new PairEnd();
  server.peer = client;
  client.peer = server;
  return { server, client };
}
