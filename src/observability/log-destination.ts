import { type DestinationStream, pino } from "pino";

/** How long a log line may wait to share its write with the lines after it. */
export const LOG_BATCH_MS = 25;
/** Buffered bytes that go out at once, without waiting (below sonic-boom's 16 KiB write cap). */
const LOG_BATCH_BYTES = 8_192;

/**
 * stdout for JSON log lines, written in batches: a line waits at most LOG_BATCH_MS, or until
 * LOG_BATCH_BYTES are buffered, for the lines after it. Each write of pino's default stdout
 * is one trip through libuv's thread pool (a wake-up of a worker thread, its write, and an
 * event back to the loop), which for a line per CONNECT cost a connection storm more kernel
 * time than the CONNECT itself. On exit the buffer is written synchronously (pino's own exit
 * hook on the stream), so a crash's last lines are kept; a SIGKILL loses at most the wait.
 */
export function batchedStdout(): DestinationStream & { flush(cb?: (error?: Error) => void): void } {
  const sink = pino.destination({
    dest: process.stdout.fd ?? 1,
    sync: false,
    minLength: LOG_BATCH_BYTES,
  });
  let timer: NodeJS.Timeout | undefined;
  const flushNow = (): void => {
    timer = undefined;
    sink.flush();
  };
  return {
    write(line: string): void {
      sink.write(line);
      if (timer === undefined) {
        timer = setTimeout(flushNow, LOG_BATCH_MS);
        // a waiting line never keeps the process alive: the exit hook writes it
        timer.unref();
      }
    },
    flush(cb?: (error?: Error) => void): void {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      sink.flush(cb);
    },
  };
}
