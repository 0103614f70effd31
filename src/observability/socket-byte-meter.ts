import type { Socket } from "node:net";

/**
 * Counts bytes on client sockets without touching the per-packet path: live sockets are read
 * at scrape time, closed ones settle their last delta when they close.
 */
export class SocketByteMeter {
  private readonly live = new Map<Socket, { read: number; written: number }>();
  private pendingRead = 0;
  private pendingWritten = 0;

  track(socket: Socket): void {
    this.live.set(socket, { read: 0, written: 0 });
  }

  /** A tracked socket closed: its last bytes are settled. The owner calls it (one 'close'
   * listener per connection for every concern: each listener costs an idle connection). */
  closed(socket: Socket): void {
    const seen = this.live.get(socket);
    if (seen === undefined) return;
    this.settle(socket, seen);
    this.live.delete(socket);
  }

  /** Bytes moved since the previous call. */
  take(): { received: number; sent: number } {
    for (const [socket, seen] of this.live) this.settle(socket, seen);
    const result = { received: this.pendingRead, sent: this.pendingWritten };
    this.pendingRead = 0;
    this.pendingWritten = 0;
    return result;
  }

  private settle(socket: Socket, seen: { read: number; written: number }): void {
    const read = socket.bytesRead;
    const written = socket.bytesWritten;
    this.pendingRead += read - seen.read;
    this.pendingWritten += written - seen.written;
    seen.read = read;
    seen.written = written;
  }
}
