import type { Socket } from "node:net";

/**
 * Counts bytes on client sockets without touching the per-packet path: live sockets are read
 * at scrape time, closed ones add their final counts when they close.
 *
 * Nothing is kept per socket but its place in a Set: the bytes of every socket ever tracked are
 * the closed sockets' sum plus the live sockets' current counts, and what `take` reports is
 * how far that total moved since the previous call. (A `{ read, written }` record per socket
 * in a Map cost every idle connection about 50 bytes of heap.)
 */
export class SocketByteMeter {
  private readonly live = new Set<Socket>();
  private closedRead = 0;
  private closedWritten = 0;
  private reportedRead = 0;
  private reportedWritten = 0;

  track(socket: Socket): void {
    this.live.add(socket);
  }

  /** A tracked socket closed: its last bytes are settled. The owner calls it (one 'close'
   * listener per connection for every concern: each listener costs an idle connection). */
  closed(socket: Socket): void {
    if (!this.live.delete(socket)) return;
    this.closedRead += socket.bytesRead;
    this.closedWritten += socket.bytesWritten;
  }

  /** Bytes moved since the previous call. */
  take(): { received: number; sent: number } {
    let read = this.closedRead;
    let written = this.closedWritten;
    for (const socket of this.live) {
      read += socket.bytesRead;
      written += socket.bytesWritten;
    }
    const result = { received: read - this.reportedRead, sent: written - this.reportedWritten };
    this.reportedRead = read;
    this.reportedWritten = written;
    return result;
  }
}
