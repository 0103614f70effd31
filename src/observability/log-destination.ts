import { type DestinationStream, pino } from "pino";

/** How long a log line may wait to share its write with the lines after it. */
export const LOG_BATCH_MS = 25;
/** Batched bytes that go out at once, without waiting (below sonic-boom's 16 KiB write cap). */
const LOG_BATCH_BYTES = 8_192;

/** Every batch not yet handed to its stream, written out on exit. */
const unwritten = new Set<() => void>();
process.on("exit", () => {
  for (const writeOut of unwritten) writeOut();
});

/**
 * stdout for JSON log lines, written in batches: a line waits at most LOG_BATCH_MS, or until
 * LOG_BATCH_BYTES are batched, for the lines after it. Each write of pino's default stdout
 * is one trip through libuv's thread pool (a wake-up of a worker thread, its write, and an
 * event back to the loop), which for a line per CONNECT cost a connection storm more kernel
 * time than the CONNECT itself.
 *
 * The batch is kept here and handed to sonic-boom whole, with no minimum length of its own:
 * a sonic-boom that buffers to a minimum length ignores a flush while a write is in flight and
 * keeps what came meanwhile until more lines fill it, so a quiet node's last lines (its
 * "node ready") could wait for ever. On exit the batch and sonic-boom's buffer are written
 * synchronously (process.exit()), so a crash's last lines are kept; a SIGKILL loses at most the
 * wait.
 */
export function batchedStdout(): DestinationStream & { flush(cb?: (error?: Error) => void): void } {
  const sink = pino.destination({ dest: process.stdout.fd ?? 1, sync: false });
  let batch: string[] = [];
  let batchLength = 0;
  let timer: NodeJS.Timeout | undefined;
  const handOver = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (batch.length === 0) return;
    const text = batch.length === 1 ? (batch[0] as string) : batch.join("");
    batch = [];
    batchLength = 0;
    sink.write(text);
  };
  const writeOut = (): void => {
    handOver();
    sink.flushSync();
  };
  unwritten.add(writeOut);
  sink.once("close", () => unwritten.delete(writeOut));
  return {
    write(line: string): void {
      batch.push(line);
      batchLength += line.length;
      if (batchLength >= LOG_BATCH_BYTES) handOver();
      // not unref'd: a process whose work is done lives on for the wait, so its last lines
      // reach sonic-boom before pino's beforeExit hook ends it
      else timer ??= setTimeout(handOver, LOG_BATCH_MS);
    },
    /** `cb` once the batch is handed over: sonic-boom, with no minimum length, writes at once. */
    flush(cb?: (error?: Error) => void): void {
      handOver();
      sink.flush(cb);
    },
  };
}
